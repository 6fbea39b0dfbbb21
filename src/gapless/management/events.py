"""The event log: what happened to the system, in words an operator reads, kept by the management
server and served as `GET /api/v1/events` and live as Server-Sent Events (`/api/v1/events/stream`).

Where events come from:
- the coordinator (followed by `EventWatcher`): token changes (a holder, a release), members
  joining and leaving a cluster or turning ready, each recorder's feeds (recording, lagging, down;
  gone with its lease) and their open backfill jobs (started, done);
- the embedded gateway: a paired camera re-routed (`PairRouting`'s decisions);
- the configuration store: every version stored.

Kept in `events.sqlite3` in the management server's data directory, the newest KEEP events.
Recorded from any thread; live subscribers (an event loop each) are woken thread-safely.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from gapless.cluster.coordinator import Compacted, CoordinatorError, KeyValue
from gapless.cluster.keys import ROOT, KeyKind, parse_key
from gapless.contracts.management import Event, EventKind, EventsQuery

log = logging.getLogger("gapless.events")

KEEP = 100_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY AUTOINCREMENT, at_us INTEGER NOT NULL, kind TEXT NOT NULL, message TEXT NOT NULL,
  cluster TEXT, recorder TEXT, camera TEXT);
CREATE INDEX IF NOT EXISTS events_by_camera ON events(camera, id);
"""


class EventLog:
    def __init__(self, path: Path, keep: int = KEEP) -> None:
        self.keep = keep
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.executescript(_SCHEMA)
        self.lock = threading.Lock()
        self.subscribers: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[Event]]] = []

    def record(
        self,
        kind: EventKind,
        message: str,
        *,
        cluster: str | None = None,
        recorder: str | None = None,
        camera: str | None = None,
    ) -> Event:
        at_us = time.time_ns() // 1000
        with self.lock:
            cursor = self.db.execute(
                "INSERT INTO events (at_us, kind, message, cluster, recorder, camera) VALUES (?,?,?,?,?,?)",
                (at_us, kind, message, cluster, recorder, camera),
            )
            assert cursor.lastrowid is not None
            event = Event.of(cursor.lastrowid, at_us, kind, message, cluster, recorder, camera)
            if event.id % 1000 == 0:
                self.db.execute("DELETE FROM events WHERE id <= ?", (event.id - self.keep,))
            subscribers = list(self.subscribers)
        for loop, queue in subscribers:
            loop.call_soon_threadsafe(queue.put_nowait, event)
        return event

    def query(self, query: EventsQuery) -> list[Event]:
        """Events after `query.after` (an event id), oldest first, filtered; at most `query.limit`."""
        clauses, values = ["id > ?"], [query.after]
        for column in ("kind", "cluster", "recorder", "camera"):
            if (value := getattr(query, column)) is not None:
                clauses.append(f"{column} = ?")
                values.append(value)
        if query.since is not None:
            clauses.append("at_us >= ?")
            values.append(query.since)
        sql = f"SELECT id, at_us, kind, message, cluster, recorder, camera FROM events WHERE {' AND '.join(clauses)}"
        with self.lock:
            rows = self.db.execute(f"{sql} ORDER BY id LIMIT ?", (*values, query.limit)).fetchall()
        return [Event.of(*row) for row in rows]

    def subscribe(self) -> asyncio.Queue[Event]:
        queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=10_000)
        with self.lock:
            self.subscribers.append((asyncio.get_running_loop(), queue))
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event]) -> None:
        with self.lock:
            self.subscribers = [(loop, q) for loop, q in self.subscribers if q is not queue]

    def close(self) -> None:
        with self.lock:
            self.db.close()


class EventWatcher(threading.Thread):
    """Follows the coordinator's keys and records what changed (see the module's docstring)."""

    def __init__(self, events: EventLog, coordinator_factory: Callable) -> None:
        super().__init__(name="event-watcher", daemon=True)
        self.events, self.coordinator_factory = events, coordinator_factory
        self.keys: dict[str, KeyValue] = {}
        self.stop_event = threading.Event()

    def run(self) -> None:
        coordinator = None
        unreachable = False
        while not self.stop_event.is_set():
            try:
                if coordinator is None:
                    coordinator = self.coordinator_factory()
                kvs, revision = coordinator.get_prefix(ROOT)
                current = {kv.key: kv for kv in kvs}
                for key in set(self.keys) | set(current):  # what changed while it was not watched
                    self.changed(key, self.keys.get(key), current.get(key))
                self.keys, unreachable = current, False
                while not self.stop_event.is_set():
                    for event in coordinator.watch(ROOT, revision, timeout=2.0):
                        after = event.kv if event.kind == "put" else None
                        self.changed(event.key, self.keys.get(event.key), after)
                        if after is None:
                            self.keys.pop(event.key, None)
                        else:
                            self.keys[event.key] = after
                        revision = max(revision, event.revision)
            except Compacted:
                continue
            except CoordinatorError as exc:
                if not unreachable:
                    log.warning("events: coordinator unreachable: %s", exc)
                unreachable = True
                self.stop_event.wait(1.0)
        if coordinator is not None:
            coordinator.close()

    def record(self, kind: EventKind, message: str, **where: str) -> None:
        """Recorded and logged (the re-routes and configuration versions the log records otherwise are
        logged where they happen; what is read from the coordinator is logged only here)."""
        log.info("%s: %s", kind, message)
        self.events.record(kind, message, **where)

    def changed(self, key: str, before: KeyValue | None, after: KeyValue | None) -> None:
        parsed = parse_key(key)
        if parsed is None:
            return
        old, new = (before.value if before else None), (after.value if after else None)
        if old == new:
            return
        kind, scope, name = parsed
        if kind is KeyKind.HOLDER:
            self._holder(scope, old, new, after)
        elif kind is KeyKind.MEMBER:
            self._member(scope, name, old, new)
        elif kind is KeyKind.FEED:
            self._feed(scope, name, old, new)

    def _holder(self, cluster: str, old: dict | None, new: dict | None, kv: KeyValue | None) -> None:
        if new is None:
            holder = (old or {}).get("member", "?")
            self.record("token", f"cluster {cluster}: {holder} no longer holds the token", cluster=cluster)
        elif (old or {}).get("member") != new.get("member"):
            fence = kv.create_revision if kv else "?"
            member = str(new.get("member"))
            self.record(
                "token",
                f"cluster {cluster}: {member} holds the token (fence {fence})",
                cluster=cluster,
                recorder=member,
            )

    def _member(self, cluster: str, member: str, old: dict | None, new: dict | None) -> None:
        if new is None:
            self.record(
                "member",
                f"{member} left cluster {cluster} (stopped, or its lease ran out)",
                cluster=cluster,
                recorder=member,
            )
        elif old is None:
            self.record("member", f"{member} joined cluster {cluster}", cluster=cluster, recorder=member)
        elif bool(old.get("ready")) != bool(new.get("ready")):
            if new.get("ready"):
                self.record("member", f"{member} is ready (caught up)", cluster=cluster, recorder=member)
            else:
                why = f"{new.get('backfill_open') or 0} backfill jobs open"
                self.record("member", f"{member} is not ready ({why})", cluster=cluster, recorder=member)

    def _feed(self, recorder: str, camera: str, old: dict | None, new: dict | None) -> None:
        where = {"recorder": recorder, "camera": camera}
        if new is None:
            self.record("feed", f"{recorder}:{camera}: no longer published (recorder stopped or dead)", **where)
            return
        before_state = (old or {}).get("state")
        if before_state != new.get("state"):
            said = f"{before_state} → {new.get('state')}" if before_state else str(new.get("state"))
            self.record("feed", f"{recorder}:{camera}: {said}", **where)
        before_jobs, jobs = int((old or {}).get("backfill_open") or 0), int(new.get("backfill_open") or 0)
        if before_jobs == 0 and jobs > 0:
            self.record("backfill", f"{recorder}:{camera}: {jobs} backfill jobs or comparisons open", **where)
        elif before_jobs > 0 and jobs == 0:
            self.record("backfill", f"{recorder}:{camera}: whole again (no backfill open)", **where)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=5)
