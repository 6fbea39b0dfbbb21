"""The coordinator: where clustered recorders keep leases and the representation token.

One interface, two backends (`embedded`, served by the management server; `etcd`). Every backend
keeps the same contract, which the HA agent relies on and tests/test_coordinator.py checks for both:

1. One revision counter for the whole store. Every change (put, create, replace, delete, a lease
   expiring and taking its keys with it) gets the next revision; revisions never go back.
2. `create` is atomic: of two callers creating the same absent key, exactly one succeeds. The
   winning key's `create_revision` is the *fencing revision* of whatever the key stands for.
3. `replace` and `delete` with an expected `mod_revision` succeed only if the key is unchanged
   since that revision (compare-and-set).
4. A key attached to a lease disappears when the lease expires: no earlier than `ttl` after the
   last successful `keepalive` was *sent*, so a holder that counts from its send time never
   believes in a lease the coordinator already dropped.
5. `watch` returns the changes after a revision, in order, or an empty list when nothing changed
   within its timeout. `Compacted` means history that old is gone: read again, then watch on.
6. Every call either finishes within the client's request timeout or raises `CoordinatorError`
   (unreachable, timed out, refused). A caller that gets an error must assume nothing happened
   and nothing is known; it never blocks longer than the timeout.
"""

from __future__ import annotations

import contextlib
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass


class CoordinatorError(Exception):
    """The coordinator could not be reached, or did not answer in time, or refused the call."""


class Compacted(CoordinatorError):
    """A watch asked for history the coordinator no longer keeps: read again, then watch on."""


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: dict
    create_revision: int
    mod_revision: int
    lease: int  # 0: not attached to a lease


@dataclass(frozen=True, slots=True)
class Lease:
    id: int
    ttl: float


@dataclass(frozen=True, slots=True)
class Event:
    kind: str  # "put" | "delete"
    key: str
    revision: int
    kv: KeyValue | None  # the new value for a put


def encode(value: dict) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def decode(raw: bytes | str) -> dict:
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class Coordinator(ABC):
    """See the module docstring for the contract every method keeps."""

    #: The client's bound on one request (backends set it in their constructor).
    timeout: float = 1.0
    #: When set (monotonic seconds), every request ends by then or raises: see `deadline`.
    _deadline: float | None = None

    @contextlib.contextmanager
    def deadline(self, at: float) -> Iterator[None]:
        """Every call made inside ends by `at` (monotonic) or raises CoordinatorError: the HA agent
        bounds a whole step by one deadline, so several slow calls in a row cannot push its next
        renewal past the lease (docs/design/ha.md, timing)."""
        self._deadline = at
        try:
            yield
        finally:
            self._deadline = None

    def request_timeout(self, wanted: float | None = None) -> float:
        """The timeout for the next request: the client's (or `wanted`), cut to the deadline."""
        timeout = self.timeout if wanted is None else wanted
        if self._deadline is None:
            return timeout
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise CoordinatorError("the step's deadline passed before the call")
        return min(timeout, remaining)

    @abstractmethod
    def grant(self, ttl: float) -> Lease:
        """A new lease of about `ttl` seconds; the backend may grant more (etcd: whole seconds, and
        a minimum set by its election timeout). Callers time their safety margins on `Lease.ttl`."""

    @abstractmethod
    def keepalive(self, lease: int) -> bool:
        """Renew; False when the lease no longer exists (expired or revoked)."""

    @abstractmethod
    def revoke(self, lease: int) -> None:
        """End the lease now; its keys go with it. Revoking an unknown lease is not an error."""

    @abstractmethod
    def get(self, key: str) -> KeyValue | None: ...

    @abstractmethod
    def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        """All keys under prefix, sorted, and the store revision they were read at."""

    @abstractmethod
    def put(self, key: str, value: dict, lease: int = 0) -> int:
        """Unconditional write; returns its revision."""

    @abstractmethod
    def create(self, key: str, value: dict, lease: int = 0) -> int | None:
        """Write only if the key is absent; its revision (the fencing revision), or None."""

    @abstractmethod
    def replace(self, key: str, value: dict, mod_revision: int, lease: int = 0) -> int | None:
        """Write only if the key's mod_revision is still this one; the new revision, or None."""

    @abstractmethod
    def delete(self, key: str, mod_revision: int | None = None) -> bool:
        """Delete (only if unchanged since mod_revision, when given); False if nothing was deleted."""

    @abstractmethod
    def watch(self, prefix: str, after_revision: int, timeout: float) -> list[Event]:
        """Changes under prefix with revision > after_revision; [] if none came within timeout."""

    def close(self) -> None:  # noqa: B027 - optional for backends without resources
        """Release connections."""
