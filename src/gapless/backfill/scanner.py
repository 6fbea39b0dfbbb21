"""Gap detection: find time our archive lacks and a partner holds, and queue backfill jobs for it.

Runs at startup (from just before our last fragment, so the whole downtime is covered), when a feed
starts a new run after an interruption (from the end of the previous run), and periodically over
`backfill.lookback`. Never earlier than our own retention would keep, and never at or past the
start of our current live run (that time is ours to record).

A startup or new-run scan is *owed* until every partner has answered it (retried every RESCAN_S):
until then the member is not caught up, so it is not ready to take the token back (failback), and
a hole it has not even looked for yet cannot reach viewers from its playlists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import httpx

from gapless.backfill.client import PartnerClient, PartnerError
from gapless.backfill.jobs import JobStore, now_us
from gapless.common.timeparse import iso
from gapless.config.recorder import RecorderConfig
from gapless.ingest.camera import FeedState
from gapless.storage.coverage import FRAME_GAP_FRAMES, holes, intersect, merged
from gapless.storage.store import FragmentStore

log = logging.getLogger("gapless.backfill")

MARGIN_US = 60_000_000
STARTUP_WAIT_S = 20.0
RESCAN_S = 5.0
#: Pieces shorter than this come from rounding at interval edges, not from missing frames.
MIN_GAP_US = 10_000
FAR_FUTURE_US = 1 << 62


class GapScanner:
    def __init__(
        self,
        config: RecorderConfig,
        store: FragmentStore,
        jobs: JobStore,
        feed_of: Callable[[str], FeedState | None],
        wake: asyncio.Event,
    ) -> None:
        self.store = store
        self.jobs = jobs
        self.feed_of = feed_of
        self.wake = wake
        self.reload(config)
        self._seen_runs: dict[str, int] = {}  # per camera, the live run we last saw start
        self._owed: dict[str, int] = {}  # per camera, where an owed scan begins (camera time)
        self._retry_at: dict[str, float] = {}  # per camera, when a failed owed scan is tried again
        self.scans = 0
        self.last_error: str | None = None

    def reload(self, config: RecorderConfig) -> None:
        """A new configuration (cameras added or removed at run time)."""
        self.config = config
        self.cameras = {c.id: c for c in config.cameras if c.enabled and config.partners_of(c)}

    def camera_changed(self, camera_id: str, added: bool) -> None:
        """The camera registry's news: what was owed for a camera removed is dropped (a camera
        added again starts a new run, which is scanned as any new run is)."""
        if not added:
            self._seen_runs.pop(camera_id, None)
            self._owed.pop(camera_id, None)
            self._retry_at.pop(camera_id, None)

    def startup_floors(self) -> dict[str, int]:
        """Per camera, where the startup scan begins: a little before our newest fragment."""
        floors = {}
        for cam in self.cameras:
            recent = self.store.recent_fragments(cam, 1)
            floors[cam] = recent[-1].end_us - MARGIN_US if recent else now_us() - self._lookback_us()
        return floors

    def _lookback_us(self) -> int:
        return int(self.config.backfill.lookback * 1e6)

    def _retention_floor(self, cam: str) -> int:
        camera = self.cameras[cam]
        max_age = camera.retention.max_age or self.config.recorder.retention.max_age
        floor = now_us() - int(max_age * 1e6) if max_age else 0
        return max(floor, self.store.deleted_until(cam) or 0)

    def caught_up(self) -> bool:
        """Every camera's current run, and the downtime before this start, has been compared with
        every partner (a gap found is then an open job, which the caller checks)."""
        return not any(self.owes(cam) for cam in self.cameras)

    def owes(self, cam: str) -> bool:
        """Whether a camera with partners still has a comparison to make: its current run not yet
        seen, or a scan owed (until then a hole may exist with no job for it yet)."""
        if cam not in self.cameras:
            return False
        feed = self.feed_of(cam)
        run_start = feed.run_start_us if feed is not None else None
        return run_start is None or run_start != self._seen_runs.get(cam) or cam in self._owed

    async def run(self, stop: asyncio.Event) -> None:
        self._owed.update(await asyncio.to_thread(self.startup_floors))
        # Wait a little for each live run to start, so one job spans the whole downtime.
        startup_deadline = time.monotonic() + STARTUP_WAIT_S
        next_periodic = time.monotonic() + self.config.backfill.scan_interval
        while not stop.is_set():
            for cam in list(self.cameras):
                feed = self.feed_of(cam)
                if feed is not None:
                    await self._owed_scan(cam, feed, time.monotonic() < startup_deadline)
            if time.monotonic() >= next_periodic:
                next_periodic = time.monotonic() + self.config.backfill.scan_interval
                for cam in self.cameras:
                    await self.scan(cam, now_us() - self._lookback_us())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    async def _owed_scan(self, cam: str, feed: FeedState, starting: bool) -> None:
        run_start = feed.run_start_us
        if run_start is not None and run_start != self._seen_runs.get(cam):  # a new run: scan up to it
            self._seen_runs[cam] = run_start
            lo = (feed.previous_run_end_us or run_start) - MARGIN_US
            self._owed[cam] = min(self._owed.get(cam, lo), lo)
            self._retry_at.pop(cam, None)
        if cam not in self._owed or (starting and run_start is None):
            return
        if time.monotonic() < self._retry_at.get(cam, 0.0):
            return
        if await self.scan(cam, self._owed[cam]):
            del self._owed[cam]
        else:
            self._retry_at[cam] = time.monotonic() + RESCAN_S

    async def scan(self, cam: str, lo: int) -> bool:
        """Queue jobs for what partners hold of [lo, our live run) that we lack. True when every
        partner answered (or nothing is missing). A failure is logged and shown in health."""
        try:
            return await self._scan(cam, lo)
        except Exception as exc:  # the scanner must outlive any one bad scan
            self.last_error = f"internal error scanning {cam}: {exc!r}"
            log.exception("gap scan of %s failed", cam)
            return False

    async def _scan(self, cam: str, lo: int) -> bool:
        feed, camera = self.feed_of(cam), self.cameras.get(cam)
        if feed is None or camera is None:  # removed by a configuration change meanwhile
            return True
        lo = max(lo, self._retention_floor(cam))
        run_start = feed.run_start_us
        hi = run_start if run_start is not None else FAR_FUTURE_US
        if hi <= lo:
            return True
        # With the live run's first fragment: a pause shorter than half a frame before the run (a
        # camera restarting its stream) is rounding there as between any two fragments, not a hole
        # that the partner's coverage (reported at 1.5 frames) would seem to fill, job after job.
        own = merged(await asyncio.to_thread(self.store.fragments, cam, lo, hi + 1), FRAME_GAP_FRAMES)
        missing = holes(own, lo, hi)
        if not missing:
            return True
        created = 0
        answered = True
        self.scans += 1
        for partner in self.config.partners_of(camera):
            query_hi = min(hi, now_us() + MARGIN_US)
            try:
                async with PartnerClient(partner.url, partner.token, timeout=10.0) as client:
                    theirs = await client.coverage(partner.camera, max(lo, missing[0][0]), query_hi)
            except (httpx.HTTPError, PartnerError) as exc:
                self.last_error = f"{partner.id}: {type(exc).__name__}: {exc}"
                log.warning("gap scan of %s: partner %s unreachable: %s", cam, partner.id, exc)
                answered = False
                continue
            for start, end in intersect(missing, theirs):
                if end - start < MIN_GAP_US:
                    continue
                claims = await asyncio.to_thread(self.jobs.claims, cam, partner.id)
                if any(lo_c <= start and end <= hi_c for lo_c, hi_c in claims):
                    continue
                job = await asyncio.to_thread(
                    self.jobs.create, cam, partner.id, partner.url, "", partner.camera, start, end, True
                )
                created += 1
                log.info(
                    "gap in %s from %s to %s (%.1f s): %s has it; backfill job %d queued",
                    cam,
                    iso(start),
                    iso(end),
                    (end - start) / 1e6,
                    partner.id,
                    job.id,
                )
        if created:
            self.wake.set()
        return answered
