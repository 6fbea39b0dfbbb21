"""The embedded coordinator: leases and keys in SQLite, served over HTTP by the management server.

It keeps the contract of gapless.cluster.coordinator for a single site without running etcd.
Keys, leases and the revision counter are durable (SQLite, WAL). Lease *deadlines* are not: after
a restart every lease gets a full TTL again (etcd does the same when its leader changes), so a
management server that was down for a minute does not take every token with it when it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, cast

from aiohttp import web
from pydantic import BaseModel

from gapless.cluster.coordinator import Event, KeyValue, decode, encode
from gapless.common.http import error
from gapless.common.openapi import documented
from gapless.contracts.coordinator import (
    MAX_WATCH_S,
    EventBody,
    KeyAnswer,
    KeyDelete,
    KeyRead,
    KeyValueBody,
    KeyWrite,
    LeaseAnswer,
    LeaseGrant,
    LeaseRef,
    WatchAnswer,
    WatchRequest,
    WriteAnswer,
)

log = logging.getLogger("gapless.coordinator")

HISTORY = 10_000  # events kept for watchers; older revisions answer "compacted"
SWEEP_INTERVAL_S = 0.05
MIN_TTL_S = 0.5


class LeaseNotFound(Exception):
    pass


class EmbeddedStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(
            """
            CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS leases (id INTEGER PRIMARY KEY, ttl REAL NOT NULL,
                owner TEXT NOT NULL DEFAULT '');
            CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL,
                create_rev INTEGER NOT NULL, mod_rev INTEGER NOT NULL, lease INTEGER NOT NULL);
            INSERT OR IGNORE INTO meta VALUES ('revision', 0), ('lease', 0);
            """
        )
        if "owner" not in [row[1] for row in self.db.execute("PRAGMA table_info(leases)")]:  # a store from before
            self.db.execute("ALTER TABLE leases ADD COLUMN owner TEXT NOT NULL DEFAULT ''")
        now = time.monotonic()
        self.deadlines = {lease: now + ttl for lease, ttl in self.db.execute("SELECT id, ttl FROM leases")}
        self.revision = self._meta("revision")
        self.history: deque[Event] = deque(maxlen=HISTORY)
        self.changed = asyncio.Event()

    def _meta(self, name: str) -> int:
        return self.db.execute("SELECT value FROM meta WHERE name=?", (name,)).fetchone()[0]

    def _bump(self) -> int:
        self.revision += 1
        self.db.execute("UPDATE meta SET value=? WHERE name='revision'", (self.revision,))
        return self.revision

    def _record(self, event: Event) -> None:
        self.history.append(event)
        self.changed.set()

    # ---- leases -----------------------------------------------------------------------------
    def grant(self, ttl: float, owner: str = "") -> tuple[int, float]:
        ttl = max(MIN_TTL_S, ttl)
        with self.db:
            lease = self._meta("lease") + 1
            self.db.execute("UPDATE meta SET value=? WHERE name='lease'", (lease,))
            self.db.execute("INSERT INTO leases VALUES (?, ?, ?)", (lease, ttl, owner))
        self.deadlines[lease] = time.monotonic() + ttl
        return lease, ttl

    def keepalive(self, lease: int) -> float:
        """Remaining TTL after renewing; 0 if the lease is gone."""
        if lease not in self.deadlines:
            return 0.0
        (ttl,) = self.db.execute("SELECT ttl FROM leases WHERE id=?", (lease,)).fetchone()
        self.deadlines[lease] = time.monotonic() + ttl
        return ttl

    def lease_owner(self, lease: int) -> str | None:
        """Who was granted a live lease (None: no such lease)."""
        if lease not in self.deadlines:
            return None
        row = self.db.execute("SELECT owner FROM leases WHERE id=?", (lease,)).fetchone()
        return None if row is None else row[0]

    def revoke(self, lease: int) -> None:
        if self.deadlines.pop(lease, None) is None:
            return
        with self.db:
            for (key,) in self.db.execute("SELECT key FROM kv WHERE lease=? ORDER BY key", (lease,)).fetchall():
                self._delete_row(key)
            self.db.execute("DELETE FROM leases WHERE id=?", (lease,))

    def expire(self) -> list[int]:
        now = time.monotonic()
        gone = [lease for lease, deadline in self.deadlines.items() if deadline <= now]
        for lease in gone:
            log.info("lease %d expired", lease)
            self.revoke(lease)
        return gone

    # ---- keys ---------------------------------------------------------------------------------
    def _row(self, key: str) -> KeyValue | None:
        row = self.db.execute("SELECT key, value, create_rev, mod_rev, lease FROM kv WHERE key=?", (key,)).fetchone()
        return None if row is None else KeyValue(row[0], decode(row[1]), row[2], row[3], row[4])

    def get(self, key: str) -> KeyValue | None:
        return self._row(key)

    def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        rows = self.db.execute(
            "SELECT key, value, create_rev, mod_rev, lease FROM kv WHERE substr(key, 1, ?) = ? ORDER BY key",
            (len(prefix), prefix),
        ).fetchall()
        return [KeyValue(r[0], decode(r[1]), r[2], r[3], r[4]) for r in rows], self.revision

    def _check_lease(self, lease: int) -> None:
        if lease and lease not in self.deadlines:
            raise LeaseNotFound(f"lease {lease} not found")

    def _write(self, key: str, value: dict, lease: int, create_rev: int | None) -> int:
        revision = self._bump()
        create_rev = revision if create_rev is None else create_rev
        self.db.execute(
            "INSERT OR REPLACE INTO kv VALUES (?, ?, ?, ?, ?)", (key, encode(value), create_rev, revision, lease)
        )
        self._record(Event("put", key, revision, KeyValue(key, value, create_rev, revision, lease)))
        return revision

    def put(self, key: str, value: dict, lease: int = 0) -> int:
        self._check_lease(lease)
        with self.db:
            current = self._row(key)
            return self._write(key, value, lease, current.create_revision if current else None)

    def create(self, key: str, value: dict, lease: int = 0) -> int | None:
        self._check_lease(lease)
        with self.db:
            if self._row(key) is not None:
                return None
            return self._write(key, value, lease, None)

    def replace(self, key: str, value: dict, mod_revision: int, lease: int = 0) -> int | None:
        self._check_lease(lease)
        with self.db:
            current = self._row(key)
            if current is None or current.mod_revision != mod_revision:
                return None
            return self._write(key, value, lease, current.create_revision)

    def _delete_row(self, key: str) -> None:
        self.db.execute("DELETE FROM kv WHERE key=?", (key,))
        self._record(Event("delete", key, self._bump(), None))

    def delete(self, key: str, mod_revision: int | None = None) -> bool:
        with self.db:
            current = self._row(key)
            if current is None or (mod_revision is not None and current.mod_revision != mod_revision):
                return False
            self._delete_row(key)
            return True

    async def watch(self, prefix: str, after: int, timeout: float) -> list[Event] | None:
        """Events after `after`; None if that history is no longer kept (compacted)."""
        deadline = time.monotonic() + min(timeout, MAX_WATCH_S)
        while True:
            oldest = self.history[0].revision if self.history else self.revision + 1
            if after < self.revision and after + 1 < oldest:  # every revision has one event
                return None
            events = [e for e in self.history if e.revision > after and e.key.startswith(prefix)]
            remaining = deadline - time.monotonic()
            if events or remaining <= 0:
                return events
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)

    def close(self) -> None:
        self.db.close()


def _kv_body(kv: KeyValue) -> KeyValueBody:
    return KeyValueBody(
        key=kv.key, value=kv.value, create_revision=kv.create_revision, mod_revision=kv.mod_revision, lease=kv.lease
    )


def _event_body(event: Event) -> EventBody:
    kind: Literal["put", "delete"] = "put" if event.kind == "put" else "delete"
    return EventBody(
        kind=kind, key=event.key, revision=event.revision, kv=None if event.kv is None else _kv_body(event.kv)
    )


Op = Literal["grant", "keepalive", "revoke", "get", "watch", "put", "create", "replace", "delete"]


@dataclass(frozen=True)
class Access:
    """What one coordinator request would do, for the server's policy to allow or refuse."""

    op: Op
    key: str = ""  # the key, or the prefix of a range read or watch
    value: dict | None = None
    lease: int = 0


class Policy(Protocol):
    def owner(self, request: web.Request) -> str:
        """Whose leases a request grants."""

    def check(self, request: web.Request, access: Access) -> None:
        """Raise an HTTP error to refuse."""


def coordinator_routes(store: EmbeddedStore, policy: Policy, prefix: str = "/coordinator/v1") -> web.RouteTableDef:
    """HTTP surface of the embedded coordinator (authentication is the management server's
    middleware; what each caller may touch is `policy`'s)."""
    routes = web.RouteTableDef()

    def answer(reply: BaseModel) -> web.Response:
        return web.json_response(text=reply.model_dump_json())

    def guarded(call: Callable[[], int | None]) -> int | None:
        try:
            return call()
        except LeaseNotFound as exc:
            raise error(web.HTTPNotFound, str(exc)) from None

    @routes.post(f"{prefix}/lease/grant")
    @documented("Grant a lease", LeaseAnswer, body=LeaseGrant)
    async def grant(request: web.Request, body: LeaseGrant) -> web.Response:
        policy.check(request, Access("grant"))
        lease, granted = store.grant(body.ttl, policy.owner(request))
        return answer(LeaseAnswer(revision=store.revision, id=lease, ttl=granted))

    @routes.post(f"{prefix}/lease/{{op:keepalive|revoke}}")
    @documented("Renew or revoke a lease", LeaseAnswer, body=LeaseRef)
    async def lease(request: web.Request, body: LeaseRef) -> web.Response:
        op = request.match_info["op"]
        policy.check(request, Access(cast(Op, op), lease=body.id))
        if op == "keepalive":
            return answer(LeaseAnswer(revision=store.revision, ttl=store.keepalive(body.id)))
        store.revoke(body.id)
        return answer(LeaseAnswer(revision=store.revision))

    @routes.post(f"{prefix}/kv/get")
    @documented("Read a key, or every key under a prefix", KeyAnswer, body=KeyRead)
    async def get(request: web.Request, body: KeyRead) -> web.Response:
        if body.prefix is not None:
            policy.check(request, Access("get", body.prefix))
            kvs, revision = store.get_prefix(body.prefix)
            return answer(KeyAnswer(revision=revision, kvs=[_kv_body(kv) for kv in kvs]))
        assert body.key is not None  # KeyRead holds one of the two
        policy.check(request, Access("get", body.key))
        found = store.get(body.key)
        return answer(KeyAnswer(revision=store.revision, kv=None if found is None else _kv_body(found)))

    @routes.post(f"{prefix}/kv/{{op:put|create|replace}}")
    @documented(
        "Write a key: put, create if absent, replace if unchanged since mod_revision", WriteAnswer, body=KeyWrite
    )
    async def write(request: web.Request, body: KeyWrite) -> web.Response:
        op = request.match_info["op"]
        key, value, lease = body.key, body.value, body.lease
        policy.check(request, Access(cast(Op, op), key, value, lease))
        if op == "put":
            revision = guarded(lambda: store.put(key, value, lease))
        elif op == "create":
            revision = guarded(lambda: store.create(key, value, lease))
        else:
            revision = guarded(lambda: store.replace(key, value, body.mod_revision, lease))
        return answer(WriteAnswer(revision=store.revision, succeeded=revision is not None, written=revision))

    @routes.post(f"{prefix}/kv/delete")
    @documented("Delete a key (if unchanged since mod_revision)", WriteAnswer, body=KeyDelete)
    async def delete(request: web.Request, body: KeyDelete) -> web.Response:
        policy.check(request, Access("delete", body.key))
        return answer(WriteAnswer(revision=store.revision, succeeded=store.delete(body.key, body.mod_revision)))

    @routes.post(f"{prefix}/watch")
    @documented(
        "Changes under a prefix after a revision, waiting up to timeout seconds", WatchAnswer, body=WatchRequest
    )
    async def watch(request: web.Request, body: WatchRequest) -> web.Response:
        policy.check(request, Access("watch", body.prefix))
        events = await store.watch(body.prefix, body.after_revision, body.timeout)
        if events is None:
            raise error(web.HTTPGone, "compacted") from None
        return answer(WatchAnswer(revision=store.revision, events=[_event_body(e) for e in events]))

    return routes


async def sweep_leases(store: EmbeddedStore) -> None:
    """Expire leases (and their keys) as their deadlines pass; runs for the server's lifetime."""
    while True:
        store.expire()
        await asyncio.sleep(SWEEP_INTERVAL_S)
