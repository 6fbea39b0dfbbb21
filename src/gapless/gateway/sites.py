"""The management servers a gateway routes for (one by default, several with `--management URL`
repeated), and the one directory of cameras made from all of them.

Each site is one management server: its view (configuration, viewers' token hashes, URL signing
key), re-read every `refresh_s` and kept while the server cannot be reached, and its coordinator's
keys (holders, members, feeds), followed by a thread and kept while the coordinator cannot be
reached. So a management server that is down leaves its cameras listed and playable from what the
gateway last knew: the recorders still record and still answer.

The directory names every camera once: a cluster camera by its id, a pair by its primary's id, an
independent recorder's camera in no pair by its id there. A
pair accepted on two servers (its recorders are managed by different ones) is one camera, the
first server's. A camera id that two servers use for different cameras is served from the first
server given, and the clash is logged for the operator to rename one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gapless.cluster.backends import connect
from gapless.cluster.coordinator import Compacted, CoordinatorError, KeyValue
from gapless.cluster.keys import ROOT, feed_key, holder_key, member_key
from gapless.config.cluster import CameraPair, CameraRef, ClusterConfig, RecorderEntry
from gapless.gateway.routing import Feed
from gapless.management.access import GatewayConfig

log = logging.getLogger("gapless.gateway")

DOCUMENT_REFRESH_S = 10.0


class ClusterState:
    """Holders, members and feeds of one coordinator, kept current by one thread."""

    def __init__(self) -> None:
        self.keys: dict[str, KeyValue] = {}
        self.lock = threading.Lock()
        self.reachable = False

    def holder(self, cluster: str) -> tuple[str, int] | None:
        with self.lock:
            kv = self.keys.get(holder_key(cluster))
        member = kv.value.get("member") if kv else None
        return (member, kv.create_revision) if kv and isinstance(member, str) else None

    def member(self, cluster: str, member: str) -> dict | None:
        with self.lock:
            kv = self.keys.get(member_key(cluster, member))
        return kv.value if kv else None

    def feed(self, recorder: str, camera: str) -> Feed | None:
        """A recorder's published feed health of one camera (cluster/feeds.py), None if none."""
        with self.lock:
            kv = self.keys.get(feed_key(recorder, camera))
        state = kv.value.get("state") if kv else None
        if kv is None or not isinstance(state, str):
            return None
        backlog = kv.value.get("backfill_open", 0)
        return Feed(state, backlog if isinstance(backlog, int) else 0)

    def follow(self, coordinator_factory, stop: threading.Event) -> None:
        coordinator = None
        while not stop.is_set():
            try:
                if coordinator is None:
                    coordinator = coordinator_factory()
                kvs, revision = coordinator.get_prefix(ROOT)
                with self.lock:
                    self.keys = {kv.key: kv for kv in kvs}
                    self.reachable = True
                while not stop.is_set():
                    for event in coordinator.watch(ROOT, revision, timeout=2.0):
                        with self.lock:
                            if event.kind == "put":
                                self.keys[event.key] = event.kv
                            else:
                                self.keys.pop(event.key, None)
                        revision = max(revision, event.revision)
            except Compacted:
                continue
            except CoordinatorError as exc:
                if self.reachable:
                    log.warning("coordinator unreachable, routing on the last known state: %s", exc)
                self.reachable = False
                stop.wait(0.5)
        if coordinator is not None:
            coordinator.close()


class Site:
    """One management server: its view and its coordinator's state (see the module's docstring)."""

    def __init__(
        self,
        source: Callable[[], Awaitable[GatewayConfig]],
        management_url: str,
        credential: str,
        refresh_s: float = DOCUMENT_REFRESH_S,
    ) -> None:
        self.source, self.refresh_s = source, refresh_s
        self.management_url, self.credential = management_url, credential
        self.view: GatewayConfig | None = None
        self.error = ""  # why the last refresh failed ("" when it did not)
        self.read_at = 0.0
        self.state = ClusterState()
        self.follower: threading.Thread | None = None

    async def refresh(self, stop: threading.Event, force: bool = False) -> None:
        if not (force or self.view is None or time.monotonic() - self.read_at >= self.refresh_s):
            return
        try:
            self.view, self.error = await self.source(), ""
        except Exception as exc:  # keep routing on the last known configuration
            if self.view is not None and not self.error:
                log.warning("%s: configuration refresh failed, using the last one: %s", self.management_url, exc)
            self.error = str(exc) or type(exc).__name__
        self.read_at = time.monotonic()
        if self.view is not None and self.follower is None:
            coordinator = self.view.config.coordinator
            self.follower = threading.Thread(
                target=self.state.follow,
                args=(
                    lambda: connect(
                        coordinator.backend, coordinator.endpoints, self.management_url, self.credential, 2.0
                    ),
                    stop,
                ),
                name=f"gateway-follow {self.management_url}",
                daemon=True,
            )
            self.follower.start()

    async def close(self) -> None:
        if self.follower is not None:
            await asyncio.to_thread(self.follower.join, 5)


@dataclass(frozen=True)
class Place:
    """Where a camera the gateway names is defined: its site, and its cluster, its pair, or the one
    independent recorder that records it (`alone`)."""

    site: Site
    cluster: ClusterConfig | None = None
    pair: CameraPair | None = None
    alone: CameraRef | None = None


@dataclass(frozen=True)
class Directory:
    """Every camera once, and every recorder the sites name (the entry of the server that
    manages it preferred: its URL and token are current there)."""

    cameras: dict[str, Place]
    recorders: dict[str, RecorderEntry]

    @classmethod
    def of(cls, sites: list[Site]) -> Directory:
        cameras: dict[str, Place] = {}
        recorders: dict[str, RecorderEntry] = {}
        pairs_seen: set[frozenset] = set()
        for site in sites:
            if site.view is None:
                continue
            document = site.view.config
            for entry in document.recorders:
                known = recorders.get(entry.id)
                if known is None or (known.managed_by is not None and entry.managed_by is None):
                    recorders[entry.id] = entry
            places = [(pair.a.camera, Place(site, pair=pair)) for pair in document.pairs]
            places += [(camera.id, Place(site, cluster=c)) for c in document.clusters for camera in c.cameras]
            places += [
                (camera.id, Place(site, alone=CameraRef(recorder=entry.id, camera=camera.id)))
                for entry in document.recorders
                if entry.managed_by is None
                for camera in entry.cameras or []
                if document.pair_of(entry.id, camera.id) is None
            ]
            for camera_id, place in places:
                if place.pair is not None:
                    sides = frozenset(place.pair.cameras())
                    if sides in pairs_seen:
                        continue  # the same pair, accepted on both servers of its recorders
                    pairs_seen.add(sides)
                if camera_id in cameras:
                    log.error(
                        "camera id %r is used by %s and by %s: served from the first; rename one",
                        camera_id,
                        cameras[camera_id].site.management_url,
                        site.management_url,
                    )
                    continue
                cameras[camera_id] = place
        return cls(cameras, recorders)
