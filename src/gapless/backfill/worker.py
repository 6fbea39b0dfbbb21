"""The backfill worker inside the target recorder: runs the durable jobs against partner recorders.

Per job: list the source's fragments from the job's cursor, skip those our archive already holds,
fetch the rest (rate-limited, checksum and length verified), and hand them to the storage writer
thread, which trims them to exactly the frames we lack (trim.py) and stores them with
`origin=<source>`. The cursor moves only after the writer has made a batch durable.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from gapless.backfill.client import CorruptFragment, PartnerClient, PartnerError
from gapless.backfill.jobs import Job, JobStore, now_us
from gapless.backfill.trim import missing_runs
from gapless.common.backoff import Backoff
from gapless.common.timeparse import iso
from gapless.contracts.recorder import FragmentInfo
from gapless.media.audio import audio_of_init
from gapless.media.fmp4 import describe_init
from gapless.storage.coverage import FRAME_GAP_FRAMES, merged
from gapless.storage.store import Fragment, FragmentStore, InitSegment

log = logging.getLogger("gapless.backfill")

#: A partner's run starting mid-GOP continues our footage of the same stream when ours ends at most
#: this long before its first frame (a frame interval, with the two recorders' rounding).
CONTINUES_US = 100_000

BATCH_FRAGMENTS = 16
FETCH_PARALLEL = 4
RETRY_MAX_S = 60.0
RETRY = Backoff(2.0, RETRY_MAX_S)  # a job's attempts are counted in the job itself
LIVE_START_WAIT_S = 30.0
#: The longest the worker sleeps with nothing due: a safety net, since every change that can make
#: a job runnable (created, ended, retried from the API) wakes it.
IDLE_CHECK_S = 30.0
#: Our own live run, as the storage writer must see it: (a session is connected but has not delivered
#: its first fragment yet, camera time of the current session's first fragment or None).
LiveGuard = Callable[[], tuple[bool, int | None]]


class LiveStarting(Exception):
    """Our own feed of the camera just reconnected; where its first fragment starts is not known yet."""


@dataclass
class Source:
    id: str
    url: str
    token: str


@dataclass
class WriteBatch:
    """Partner fragments to store for one camera; trimmed and written in the storage writer thread."""

    camera: str
    origin: str
    items: list[tuple[FragmentInfo, bytes]]
    inits: dict[str, InitSegment]
    guard: LiveGuard
    stored_fragments: int = 0
    stored_frames: int = 0
    arrival_us: int = field(default_factory=now_us)

    def __call__(self, store: FragmentStore) -> WriteBatch:
        pending, live_from = self.guard()
        if pending:
            raise LiveStarting(f"own feed of {self.camera} is starting")
        lo = min(meta.start_us for meta, _ in self.items) - 10_000_000
        hi = max(meta.end_us for meta, _ in self.items) + 10_000_000
        held = [(r.start_us, r.end_us, r.init) for r in store.fragments(self.camera, lo, hi)]
        covered = [(start, end) for start, end, _init in held]
        if live_from is not None:
            covered.append((live_from, 1 << 62))
        fragments = []
        for meta, payload in self.items:
            audio = audio_of_init(self.inits[meta.init].data)
            rate = audio.rate if audio is not None else None

            def continues(at_us: int, init: str = meta.init) -> bool:
                """We hold footage of this stream (same init) ending where the partner's run starts."""
                return any(i == init and start < at_us <= end + CONTINUES_US for start, end, i in held)

            for run in missing_runs(payload, meta.start_us, meta.end_us, meta.seq, covered, rate, continues):
                fragments.append(
                    Fragment(
                        self.camera,
                        meta.run,
                        meta.seq,
                        run.start_us,
                        run.end_us,
                        run.frames,
                        self.inits[meta.init],
                        run.payload,
                        self.origin,
                        meta.arrival_us or self.arrival_us,  # when the partner received it
                        meta.sha256 if run.whole else None,
                        run.keyframe_first,
                    )
                )
                covered.append((run.start_us, run.end_us))
                held.append((run.start_us, run.end_us, meta.init))
        if fragments:
            store.write(fragments)
        self.stored_fragments = len(fragments)
        self.stored_frames = sum(f.frames for f in fragments)
        return self


class RateLimiter:
    """A token bucket over bytes, shared by all jobs; None means unlimited."""

    def __init__(self, bytes_per_s: int | None) -> None:
        self.rate = bytes_per_s
        self.allowance = float(bytes_per_s or 0)
        self.last = time.monotonic()
        self.lock = asyncio.Lock()

    async def take(self, amount: int) -> None:
        if not self.rate:
            return
        async with self.lock:
            now = time.monotonic()
            self.allowance = min(float(self.rate), self.allowance + (now - self.last) * self.rate)
            self.last = now
            self.allowance -= amount
            if self.allowance < 0:
                await asyncio.sleep(-self.allowance / self.rate)


class BackfillWorker:
    def __init__(
        self,
        store: FragmentStore,
        jobs: JobStore,
        submit: Callable[[WriteBatch], concurrent.futures.Future],
        live_guard: Callable[[str], tuple[bool, int | None]],  # of a camera (CameraRegistry.live_guard)
        sources: Callable[[Job], Source],
        concurrency: int,
        max_rate: int | None,
        newest_first: bool,
    ) -> None:
        self.store = store
        self.jobs = jobs
        self.submit = submit
        self.live_guard = live_guard
        self.sources = sources
        self.concurrency = concurrency
        self.newest_first = newest_first
        self.limiter = RateLimiter(max_rate)
        self.active: dict[int, asyncio.Task] = {}
        self.wake = asyncio.Event()
        self.bytes_fetched = 0
        self.fragments_stored = 0
        self.frames_stored = 0
        self.fragments_refused = 0

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                self.wake.clear()  # before looking, so that a wake-up meanwhile is not lost
                free = self.concurrency - len(self.active)
                runnable, next_try_us = await asyncio.to_thread(self._schedule, set(self.active))
                for job in runnable[: max(0, free)]:
                    task = asyncio.create_task(self._run_job(job), name=f"backfill-{job.id}")
                    self.active[job.id] = task
                    task.add_done_callback(functools.partial(self._job_ended, job.id))
                # Asleep until a job is created or ends, or a retry falls due (an idle recorder
                # does not query its job table every second).
                wait_s = IDLE_CHECK_S if next_try_us is None else (next_try_us - now_us()) / 1e6
                await self._sleep(stop, min(IDLE_CHECK_S, max(0.05, wait_s)))
        finally:
            for task in list(self.active.values()):
                task.cancel()
            await asyncio.gather(*self.active.values(), return_exceptions=True)

    async def _sleep(self, stop: asyncio.Event, timeout: float) -> None:
        """Until woken, stopped, or the timeout."""
        waits = [asyncio.create_task(self.wake.wait()), asyncio.create_task(stop.wait())]
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

    def _schedule(self, active: set[int]) -> tuple[list[Job], int | None]:
        return self.jobs.runnable(self.newest_first, active), self.jobs.next_try_us()

    def _job_ended(self, job_id: int, _task: asyncio.Task) -> None:
        self.active.pop(job_id, None)
        self.wake.set()  # its slot is free, and a retry it saved may be due sooner than the last plan

    async def _run_job(self, job: Job) -> None:
        started = time.monotonic()
        job.state = "running"
        await asyncio.to_thread(self.jobs.update, job.id, state="running")
        log.info(
            "backfill job %d: %s from %s, %s → %s", job.id, job.camera, job.source, iso(job.cursor_us), iso(job.end_us)
        )
        try:
            await self._transfer(job, started)
        except (httpx.HTTPError, PartnerError, LiveStarting, OSError) as exc:
            job.attempts += 1
            delay = RETRY.delay(job.attempts)
            message = f"{type(exc).__name__}: {exc}".strip()
            log.warning(
                "backfill job %d (%s from %s): %s; retrying in %.0f s", job.id, job.camera, job.source, message, delay
            )
            await asyncio.to_thread(self._save_retry, job, message, delay, time.monotonic() - started)
        except asyncio.CancelledError:
            await asyncio.shield(asyncio.to_thread(self.jobs.update, job.id, state="waiting"))
            raise
        except Exception as exc:  # a bug must leave the job visible, not lose it
            log.exception("backfill job %d: internal error", job.id)
            await asyncio.to_thread(self._save_retry, job, f"internal error: {exc!r}", RETRY_MAX_S, 0.0)

    def _save_retry(self, job: Job, message: str, delay: float, elapsed: float) -> None:
        self.jobs.add_error(job, message)
        self.jobs.update(
            job.id,
            state="waiting",
            attempts=job.attempts,
            next_try_us=now_us() + int(delay * 1e6),
            active_s=job.active_s + elapsed,
        )

    async def _transfer(self, job: Job, started: float) -> None:
        """Fetch the source's fragments a window at a time (FETCH_PARALLEL requests in flight) while
        the storage writer stores the previous window; progress is saved after each stored window."""
        source = self.sources(job)
        async with PartnerClient(source.url, source.token) as partner:
            listing = await partner.fragments(job.source_camera, job.cursor_us, job.end_us)
            listing = [m for m in listing if m.end_us > job.cursor_us]
            job.fragments_total = job.fragments_done + len(listing)
            job.bytes_total = job.bytes_done + sum(m.bytes for m in listing)
            await asyncio.to_thread(self._save, job, started)
            inits: dict[str, InitSegment] = {}
            slots = asyncio.Semaphore(FETCH_PARALLEL)
            size = self._window_size(listing)
            finishing: asyncio.Task | None = None
            try:
                for at in range(0, len(listing), size):
                    window = listing[at : at + size]
                    fetched = await asyncio.gather(*(self._fetch(job, partner, meta, inits, slots) for meta in window))
                    items = [(meta, data) for meta, data in zip(window, fetched, strict=True) if data]
                    write = (
                        WriteBatch(job.camera, job.source, items, inits, functools.partial(self.live_guard, job.camera))
                        if items
                        else None
                    )
                    if finishing is not None:
                        await finishing  # one window is written while the next is fetched
                    future = self.submit(write) if write else None
                    finishing = asyncio.create_task(self._finish(job, future, write, window, started))
                if finishing is not None:
                    await finishing
            finally:
                if finishing is not None and not finishing.done():
                    finishing.cancel()
        job.state = "partial" if job.refused else "done"
        job.finished_us = now_us()
        await asyncio.to_thread(self._save, job, started, final=True)
        log.info(
            "backfill job %d %s: %s from %s, %d of %d fragments handled, %d frames stored, %d refused",
            job.id,
            job.state,
            job.camera,
            job.source,
            job.fragments_done,
            job.fragments_total,
            job.stored_frames,
            job.refused,
        )

    def _window_size(self, listing: list[FragmentInfo]) -> int:
        """Fragments per stored window: BATCH_FRAGMENTS, fewer under a rate limit so that progress
        shows every couple of seconds."""
        if not self.limiter.rate or not listing:
            return BATCH_FRAGMENTS
        average = sum(m.bytes for m in listing) / len(listing)
        return max(1, min(BATCH_FRAGMENTS, int(2 * self.limiter.rate / average)))

    async def _fetch(
        self, job: Job, partner: PartnerClient, meta: FragmentInfo, inits: dict, slots: asyncio.Semaphore
    ) -> bytes:
        """The fragment's verified bytes; b"" when we hold it already or it was refused."""
        async with slots:
            if await asyncio.to_thread(self._held, job.camera, meta):
                return b""
            await self.limiter.take(meta.bytes)
            try:
                data = await partner.fragment_bytes(meta)
            except CorruptFragment as exc:
                job.refused += 1
                self.fragments_refused += 1
                log.error("backfill job %d: refused %s", job.id, exc)
                await asyncio.to_thread(self.jobs.add_error, job, f"refused: {exc}")
                return b""
            self.bytes_fetched += len(data)
            if meta.init not in inits:
                inits[meta.init] = await self._init(partner, meta.init)
            return data

    async def _finish(
        self,
        job: Job,
        future: concurrent.futures.Future | None,
        write: WriteBatch | None,
        window: list[FragmentInfo],
        started: float,
    ) -> None:
        """Wait for a window's write (resubmitting while our own feed is starting), then move the cursor."""
        if future is not None and write is not None:
            deadline = time.monotonic() + LIVE_START_WAIT_S
            while True:
                try:
                    await asyncio.wrap_future(future)
                    break
                except LiveStarting:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(1.0)
                    future = self.submit(write)
            job.stored_fragments += write.stored_fragments
            job.stored_frames += write.stored_frames
            self.fragments_stored += write.stored_fragments
            self.frames_stored += write.stored_frames
        for meta in window:
            job.fragments_done += 1
            job.bytes_done += meta.bytes
            job.cursor_us = max(job.cursor_us, meta.end_us)
        await asyncio.to_thread(self._save, job, started)

    def _held(self, camera: str, meta: FragmentInfo) -> bool:
        """Whether our archive already spans the whole fragment (then it is not even fetched)."""
        slack = (meta.end_us - meta.start_us) // max(1, meta.frames) // 2
        for start, end in merged(self.store.fragments(camera, meta.start_us, meta.end_us), FRAME_GAP_FRAMES):
            if start <= meta.start_us + slack and end >= meta.end_us - slack:
                return True
        return False

    async def _init(self, partner: PartnerClient, init_id: str) -> InitSegment:
        own = await asyncio.to_thread(self.store.init, init_id)
        if own is not None:
            return own
        data = await partner.init_segment(init_id)
        try:
            codec, width, height = describe_init(data)
        except (ValueError, IndexError, StopIteration) as exc:
            raise PartnerError(f"init segment {init_id} is not usable: {exc}") from None
        segment = InitSegment.make(codec, width, height, data)
        if segment.id != init_id:
            raise PartnerError(f"init segment {init_id} does not match its id")
        return segment

    def _save(self, job: Job, started: float, final: bool = False) -> None:
        fields: dict[str, object] = {
            "cursor_us": job.cursor_us,
            "fragments_total": job.fragments_total,
            "fragments_done": job.fragments_done,
            "bytes_total": job.bytes_total,
            "bytes_done": job.bytes_done,
            "stored_fragments": job.stored_fragments,
            "stored_frames": job.stored_frames,
            "refused": job.refused,
            "active_s": (active_s := job.active_s + (time.monotonic() - started)),
        }
        if final:
            fields.update(state=job.state, finished_us=job.finished_us)
            job.active_s = active_s
        self.jobs.update(job.id, **fields)
