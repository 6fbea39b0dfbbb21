"""Exponential backoff, the one way Gapless waits before trying again (a camera that refused, a
backfill job whose partner failed)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Backoff:
    """Waits of `first`, then doubling, capped at `maximum`; `reset` after a success."""

    first: float
    maximum: float
    failures: int = 0

    def delay(self, failures: int) -> float:
        """The wait after this many failures in a row (≥ 1)."""
        return min(self.maximum, self.first * 2.0 ** min(max(failures, 1) - 1, 32))

    @property
    def upcoming(self) -> float:
        """The wait the next failure will bring."""
        return self.delay(self.failures + 1)

    def next(self) -> float:
        """Count one more failure; its wait."""
        self.failures += 1
        return self.delay(self.failures)

    def reset(self) -> None:
        self.failures = 0
