"""The embedded coordinator's HTTP bodies (what recorders, the gateway and the management server's
policy exchange with it): etcd's operations, reduced to what Gapless uses."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from gapless.common.openapi import Body, Reply

#: SQLite's integers (revisions, lease ids).
Int64 = Annotated[int, Field(ge=-(2**63), lt=2**63)]
MAX_LEASE_TTL_S = 3600.0
MAX_WATCH_S = 30.0


class LeaseGrant(Body):
    ttl: float = Field(gt=0, le=MAX_LEASE_TTL_S)
    """Seconds the lease lives without a keepalive."""


class LeaseRef(Body):
    id: Int64
    """The lease to renew or revoke."""


class KeyRead(Body):
    """One key, or every key under a prefix: exactly one of the two."""

    key: str | None = None
    prefix: str | None = None

    @model_validator(mode="after")
    def _one(self) -> KeyRead:
        if (self.key is None) == (self.prefix is None):
            raise ValueError("give key or prefix")
        return self


class KeyWrite(Body):
    key: str
    value: dict
    lease: Int64 = 0
    """The lease the key lives with (0: none)."""
    mod_revision: Int64 = 0
    """replace only: the revision the key must still have."""


class KeyDelete(Body):
    key: str
    mod_revision: Int64 | None = None
    """Delete only if the key still has this revision."""


class WatchRequest(Body):
    prefix: str
    after_revision: Int64
    timeout: float = Field(ge=0, le=MAX_WATCH_S)
    """Seconds to wait for a change when there is none yet."""


class KeyValueBody(Reply):
    key: str
    value: dict
    create_revision: int
    mod_revision: int
    lease: int


class EventBody(Reply):
    kind: Literal["put", "delete"]
    key: str
    revision: int
    kv: KeyValueBody | None


class Answer(Reply):
    revision: int
    """The store's revision when it answered."""


class LeaseAnswer(Answer):
    id: int = 0
    """A grant: the new lease."""
    ttl: float = 0.0
    """A grant or keepalive: its TTL (0: the lease is gone)"""


class KeyAnswer(Answer):
    kv: KeyValueBody | None = None
    """A single key."""
    kvs: list[KeyValueBody] = []
    """A prefix."""


class WriteAnswer(Answer):
    succeeded: bool
    written: int | None = None
    """The revision of the write."""


class WatchAnswer(Answer):
    events: list[EventBody]
