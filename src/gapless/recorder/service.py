"""The recorder process: ingest threads -> one storage writer thread -> index; API; retention."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry

from gapless.backfill.client import PartnerError
from gapless.backfill.jobs import Job, JobStore
from gapless.backfill.scanner import GapScanner
from gapless.backfill.worker import BackfillWorker, Source
from gapless.cluster.agent import HaAgent, MemberStatus, Peer
from gapless.cluster.backends import connect
from gapless.cluster.coordinator import Coordinator
from gapless.cluster.feeds import FeedPublisher
from gapless.cluster.standby import StandbyWatcher
from gapless.common.http import serving
from gapless.config.cluster import StandbyCamera
from gapless.config.recorder import CameraConfig, RecorderConfig
from gapless.ingest.camera import CameraIngest
from gapless.ingest.reader import StreamReader
from gapless.ingest.registry import CameraRegistry
from gapless.recorder import managed
from gapless.recorder.api import build_api
from gapless.recorder.managed import ManagedSettings
from gapless.recorder.metrics import RecorderMetrics
from gapless.recorder.writer import StorageWriter
from gapless.storage.retention import apply_retention
from gapless.storage.store import FragmentStore

log = logging.getLogger("gapless.recorder")

RETENTION_INTERVAL_S = 10.0


#: A member whose storage writes have failed this long gives the token away (see MemberStatus).
STORAGE_FAILING_S = 5.0
#: A recording feed whose last fragment ended longer ago than this is `lagging` (a GOP is at most a
#: few seconds; camera time is within 2 s of arrival).
FEED_LAG_S = 8.0


class Recorder:
    def __init__(self, config: RecorderConfig) -> None:
        self.config = config
        section = config.recorder
        self.store = FragmentStore(
            section.storage, section.id, section.chunk.max_bytes, int(section.chunk.max_duration * 1_000_000)
        )
        self.writer = StorageWriter(self.store, lambda: self.jobs)
        self.reader = StreamReader()
        self.cameras = CameraRegistry()
        for camera in config.cameras:
            if camera.enabled:
                self._add_camera(camera)
        self.jobs = JobStore(self.store.db)
        self.backfill = BackfillWorker(
            self.store,
            self.jobs,
            self.writer.submit,
            self.cameras.live_guard,
            self.source_of,
            config.backfill.concurrency,
            config.backfill.max_rate,
            config.backfill.order == "newest",
        )
        self.gap_scanner = GapScanner(config, self.store, self.jobs, self.cameras.feed, self.backfill.wake)
        self.cameras.subscribe(self.gap_scanner.camera_changed)
        self.metrics_registry = CollectorRegistry()
        self.metrics_registry.register(RecorderMetrics(self))
        self.agent: HaAgent | None = None  # set when the recorder is a cluster member
        self.feed_publisher: FeedPublisher | None = None  # set when it is an independent managed recorder
        self.standby: list[StandbyCamera] = []  # the cameras it stands by for (a pair's standby)
        self.standby_taken: set[str] = set()  # of those, the ones it records now (cluster/standby.py)
        self.standby_watcher: StandbyWatcher | None = None
        self.reconfiguring = threading.Lock()  # the configuration poll and the standby watcher both apply

    def _add_camera(self, camera: CameraConfig) -> CameraIngest:
        camera_id = camera.id
        recent = self.store.recent_fragments(camera_id, 1)
        ingest = CameraIngest(
            self.config.recorder.id,
            camera_id,
            camera.url,
            self.writer,
            self.reader,
            recorded_until_us=recent[-1].end_us if recent else None,
            username=camera.username,
            password=camera.password,
            partners=self.config.partners_of(camera),
        )
        self.cameras.add(ingest)
        return ingest

    def reconfigure(self, config: RecorderConfig) -> list[str]:
        """Apply a new configuration at run time: cameras added, removed or moved to another URL
        start or stop; retention applies at its next pass. Returns what changed, for the log."""
        with self.reconfiguring:
            return self._reconfigure(config)

    def take_standby(self, cameras: set[str]) -> None:
        """The standby watcher's choice: record these standby cameras (and no other)."""
        with self.reconfiguring:
            self.standby_taken = set(cameras)
            changes = self._reconfigure(self.config)
        log.info("standby cameras now %s: %s", sorted(cameras) or "none", ", ".join(changes) or "no change")

    def _reconfigure(self, config: RecorderConfig) -> list[str]:
        wanted = {c.id: c for c in config.cameras if c.enabled or c.id in self.standby_taken}
        current = {cam: ingest.source for cam, ingest in self.cameras.items()}
        changes = []
        for cam in [c for c in current if c not in wanted or wanted[c].source != current[c]]:
            ingest = self.cameras.remove(cam)
            assert ingest is not None  # only this method changes the registry
            ingest.stop()
            ingest.join(timeout=15)
            changes.append(f"stopped {cam}")
        self.config = config
        self.gap_scanner.reload(config)
        for cam in [c for c in wanted if c not in self.cameras]:
            self._add_camera(wanted[cam]).start()
            changes.append(f"started {cam}")
        return changes

    def feed_states(self) -> dict[str, dict]:
        """Per camera, for the gateway's per-camera routing (cluster/feeds.py): `state` is `down`
        while its session is not recording, `lagging` when no fragment has ended for FEED_LAG_S,
        else `recording`; `backfill_open` its open backfill jobs (a pair may wait for none)."""
        now_us = time.time_ns() // 1000
        open_jobs = self.jobs.open_by_camera()
        states = {}
        for cam, ingest in self.cameras.items():
            feed = ingest.feed
            if feed.state != "recording":
                state = "down"
            elif feed.last_fragment_end_us is None or now_us - feed.last_fragment_end_us > FEED_LAG_S * 1e6:
                state = "lagging"
            else:
                state = "recording"
            owed = 1 if self.gap_scanner.owes(cam) else 0  # a hole not compared yet counts as open
            states[cam] = {"state": state, "backfill_open": open_jobs.get(cam, 0) + owed}
        return states

    def member_status(self) -> MemberStatus:
        """For the HA agent: ready means every camera records and backfill has closed every gap."""
        counts = self.jobs.counts()
        open_jobs = counts.get("waiting", 0) + counts.get("running", 0)
        recording = all(ingest.feed.state == "recording" for _cam, ingest in self.cameras.items())
        failing = self.writer.failing_since
        storage_ok = failing is None or time.monotonic() - failing < STORAGE_FAILING_S
        ready = self.gap_scanner.caught_up() and recording and open_jobs == 0 and storage_ok
        return MemberStatus(ready, open_jobs, None if storage_ok else f"storage failing: {self.writer.error}")

    def source_of(self, job: Job) -> Source:
        """Where a job's source is now: configured partners first (their url and token may have
        changed since the job was queued), else what the job was created with."""
        for camera in self.config.cameras:
            for partner in self.config.partners_of(camera):
                if partner.id == job.source:
                    return Source(partner.id, partner.url, partner.token)
        if not job.source_token:
            raise PartnerError(f"source {job.source!r} is no longer a configured partner")
        return Source(job.source, job.source_url, job.source_token)

    def resolve_source(
        self, camera_id: str, source: str, token: str | None, their_camera: str | None
    ) -> tuple[str, str, str, str] | None:
        """(source id, url, token to keep with the job, camera id there) for an API backfill request:
        a configured partner (by id or URL; its token stays in the config) or a URL with a token."""
        camera = next(c for c in self.config.cameras if c.id == camera_id)
        known = self.config.partners_of(camera) + self.config.partners
        for partner in known:
            url = partner.url or ""
            if source in (partner.id, url, url.rstrip("/")):
                return partner.id, url, "", their_camera or partner.camera or camera_id
        if source.startswith(("http://", "https://")) and token:
            return urlsplit(source).netloc, source, token, their_camera or camera_id
        return None

    def start(self) -> None:
        if self.store.rebuilt is not None:
            log.warning("storage %s: index rebuilt from the chunk files: %s", self.store.root, self.store.rebuilt)
        try:
            report = self.store.recover()
        except sqlite3.DatabaseError as exc:  # an index that opened but is damaged inside
            self.writer.reindex(f"damaged ({exc})")
            report = self.store.recover()
        log.info("storage %s recovered: %s", self.store.root, report)
        self.writer.start()
        self.reader.start()
        for _cam, ingest in self.cameras.items():
            ingest.start()

    def apply_retention(self) -> int:
        """Retention over this recorder's cameras (storage/retention.py)."""
        cameras = {camera.id: camera.retention for camera in self.config.cameras}
        return apply_retention(self.store, cameras, self.config.recorder.retention)

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.stop()  # hands the token over before recording stops
        if self.standby_watcher is not None:
            self.standby_watcher.stop()
        if self.feed_publisher is not None:
            self.feed_publisher.stop()  # viewers are routed to the pair's other side at once
        ingests = [ingest for _cam, ingest in self.cameras.items()]
        for ingest in ingests:
            ingest.stop()
        for ingest in ingests:
            ingest.join(timeout=15)
        self.reader.stop()
        self.writer.stop()


def _start_agent(recorder: Recorder, config: RecorderConfig, settings: ManagedSettings) -> None:
    cluster, link = settings.cluster, config.management
    assert cluster is not None and link is not None  # only a cluster member has an agent
    coordinator = connect(
        settings.coordinator.backend,
        settings.coordinator.endpoints,
        link.url,
        link.current_token,
        timeout=cluster.lease_ttl / 4,
    )
    identity = None
    if cluster.address:
        from gapless.cluster.vip import VirtualIP  # pyroute2 costs ~0.1 s of every start-up; only a VIP needs it

        identity = VirtualIP(cluster.address.vip, cluster.address.interface)
    recorder.agent = HaAgent(
        cluster.id,
        config.recorder.id,
        cluster.members,
        coordinator,
        cluster.lease_ttl,
        cluster.failback,
        [Peer(p.id, p.url, p.token) for p in settings.peers],
        recorder.member_status,
        identity,
    )
    recorder.agent.start()


def _start_feed_publisher(recorder: Recorder, config: RecorderConfig, settings: ManagedSettings) -> None:
    """An independent recorder publishes its feeds; a standby also reads the others' (its pairs')."""
    link = config.management
    assert link is not None  # managed

    def coordinator() -> Coordinator:
        return connect(
            settings.coordinator.backend, settings.coordinator.endpoints, link.url, link.current_token, timeout=1.0
        )

    recorder.feed_publisher = FeedPublisher(config.recorder.id, coordinator(), recorder.feed_states)
    recorder.feed_publisher.start()
    recorder.standby = settings.standby
    if settings.standby:
        recorder.standby_watcher = StandbyWatcher(coordinator(), lambda: recorder.standby, recorder.take_standby)
        recorder.standby_watcher.start()


async def _scrub(recorder: Recorder, stop: asyncio.Event) -> None:
    """Re-verify the archive forever, a budget every RETENTION_INTERVAL_S (storage.md, invariant 8),
    and the index file itself (invariant 9), so damage on disk is found and backfilled from a
    partner before anyone needs the footage. At the default 8 MiB/s a 500 GB archive is read in
    about 17 hours, for well under 1 % of one core."""
    cursor = 0
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RETENTION_INTERVAL_S)
        if problem := await asyncio.to_thread(recorder.store.index_problem):
            await asyncio.wrap_future(
                recorder.writer.submit(lambda _store, why=problem: recorder.writer.rebuild_index(why))
            )
            cursor = 0
        try:
            cursor, damaged = await asyncio.to_thread(
                recorder.store.scrub, cursor, int(recorder.config.recorder.scrub_rate * RETENTION_INTERVAL_S)
            )
        except (sqlite3.Error, OSError) as exc:
            log.error("scrub failed (it tries again): %s", exc)
            continue
        if damaged:
            log.error("scrub: %d damaged fragments quarantined; the gap scanner has partners fill them", damaged)


async def run_recorder(config: RecorderConfig) -> None:
    settings = None
    if config.management is not None:
        config, settings = await asyncio.to_thread(managed.load, config)
    recorder = Recorder(config)
    recorder.start()
    if settings is not None and settings.cluster is not None:
        _start_agent(recorder, config, settings)
    elif settings is not None:  # an independent recorder: its feeds, for per-camera routing of pairs
        _start_feed_publisher(recorder, config, settings)
    try:
        async with serving(build_api(recorder), config.recorder.host, config.recorder.port) as stop:
            log.info(
                "recorder %s: %d cameras, API on http://%s",
                config.recorder.id,
                len(recorder.cameras),
                config.recorder.listen,
            )
            await _record(recorder, config, settings, stop)
    finally:
        await asyncio.to_thread(recorder.stop)


async def _record(recorder: Recorder, config: RecorderConfig, settings, stop: asyncio.Event) -> None:
    """Retention every RETENTION_INTERVAL_S, and the background tasks, until `stop`."""
    background = [
        asyncio.create_task(_scrub(recorder, stop), name="scrub"),
        asyncio.create_task(recorder.backfill.run(stop), name="backfill"),
        asyncio.create_task(recorder.gap_scanner.run(stop), name="gap-scanner"),
    ]
    if settings is not None:
        background.append(asyncio.create_task(managed.follow(recorder, config, settings, stop), name="config"))
    try:
        while not stop.is_set():
            try:
                await asyncio.to_thread(recorder.apply_retention)
            except (sqlite3.Error, OSError) as exc:  # a damaged index must not end the recording
                recorder.writer.error = recorder.writer.error or f"retention: {exc}"
                log.error("retention failed (recording goes on; it tries again, a damaged index is rebuilt): %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RETENTION_INTERVAL_S)
    finally:
        stop.set()
        await asyncio.gather(*background, return_exceptions=True)
