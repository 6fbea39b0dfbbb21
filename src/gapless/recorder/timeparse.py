"""Times in API requests: ISO 8601 with a zone, or epoch seconds."""

from __future__ import annotations

from datetime import UTC, datetime


def parse_time_us(value: str) -> int:
    try:
        return round(float(value) * 1_000_000)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"invalid time {value!r}: use ISO 8601 with a zone or epoch seconds") from None
    if parsed.tzinfo is None:
        raise ValueError(f"time {value!r} has no zone: add Z or +hh:mm")
    return int(parsed.timestamp() * 1_000_000)


def iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1_000_000, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
