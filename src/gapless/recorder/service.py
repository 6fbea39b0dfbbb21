"""The recorder process: ingest threads -> one storage writer thread -> index; API; retention."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import signal
import threading
import time

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from gapless.recorder.api import build_api
from gapless.recorder.config import RecorderConfig
from gapless.recorder.ingest import CameraIngest
from gapless.storage.store import FragmentStore

log = logging.getLogger("gapless.recorder")

RETENTION_INTERVAL_S = 10.0
_STATES = ("starting", "connecting", "recording", "reconnecting", "failed")


class Recorder:
    def __init__(self, config: RecorderConfig) -> None:
        self.config = config
        section = config.recorder
        self.store = FragmentStore(
            section.storage, section.id, section.chunk.max_bytes, int(section.chunk.max_duration * 1_000_000)
        )
        self.queue: queue.Queue = queue.Queue()
        self.stop_event = threading.Event()
        self.writer_error: str | None = None
        self.cameras = {
            c.id: CameraIngest(section.id, c.id, c.url, self.queue, self.stop_event)
            for c in config.cameras
            if c.enabled
        }
        self.metrics_registry = CollectorRegistry()
        self.metrics_registry.register(self)
        self._writer = threading.Thread(target=self._write_loop, name="storage-writer", daemon=True)

    # prometheus collector
    def collect(self):
        state = GaugeMetricFamily(
            "gapless_camera_state", "1 for the camera's current feed state", labels=["camera", "state"]
        )
        frags = CounterMetricFamily("gapless_fragments_written", "fragments stored", labels=["camera"])
        frames = CounterMetricFamily("gapless_frames_written", "frames stored", labels=["camera"])
        reconnects = CounterMetricFamily("gapless_ingest_reconnects", "RTSP reconnects", labels=["camera"])
        for cam, ingest in self.cameras.items():
            for name in _STATES:
                state.add_metric([cam, name], 1.0 if ingest.feed.state == name else 0.0)
            frags.add_metric([cam], ingest.feed.fragments)
            frames.add_metric([cam], ingest.feed.frames)
            reconnects.add_metric([cam], ingest.feed.reconnects)
        depth = GaugeMetricFamily("gapless_write_queue_depth", "fragments waiting to be stored")
        depth.add_metric([], self.queue.qsize())
        yield from (state, frags, frames, reconnects, depth)

    def start(self) -> None:
        report = self.store.recover()
        log.info("storage %s recovered: %s", self.store.root, report)
        self._writer.start()
        for ingest in self.cameras.values():
            ingest.start()

    def _write_loop(self) -> None:
        """Store fragments in batches; on error keep them and retry: nothing is dropped."""
        batch: list = []
        while True:
            if not batch:
                item = self.queue.get()
                if item is None:
                    break
                batch.append(item)
            stop_after = False
            while len(batch) < 64:
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop_after = True
                    break
                batch.append(item)
            try:
                self.store.write(batch)
                batch = []
                self.writer_error = None
            except OSError as exc:
                self.writer_error = f"{exc.strerror or exc} (keeping {len(batch)} fragments, retrying)"
                log.error("storage write failed: %s", self.writer_error)
                time.sleep(1.0)
            if stop_after:
                if batch:
                    self.store.write(batch)
                break
        self.store.close()

    def apply_retention(self) -> int:
        """Delete whole oldest chunks: per camera by age (camera's limit, else the recorder's) and by the
        camera's byte limit; then, across all cameras, oldest first while the recorder's byte limit is
        exceeded. The chunk being written is never deleted. Returns the number of chunks deleted."""
        section = self.config.recorder
        deleted = 0
        now_us = time.time_ns() // 1000
        db = self.store.db()
        for camera in self.config.cameras:
            max_age = camera.retention.max_age or section.retention.max_age
            max_bytes = camera.retention.max_bytes
            rows = db.execute(
                "SELECT id, bytes, end_us, state FROM chunks WHERE camera=? ORDER BY id", (camera.id,)
            ).fetchall()
            total = sum(r[1] for r in rows)
            for chunk_id, size, end_us, state in rows:
                too_old = max_age is not None and end_us is not None and end_us < now_us - max_age * 1e6
                too_big = max_bytes is not None and total > max_bytes
                if not (too_old or too_big) or state == "open":
                    break
                self._delete(chunk_id, camera.id, size, "age" if too_old else "camera bytes")
                total -= size
                deleted += 1
        if section.retention.max_bytes is not None:
            rows = db.execute("SELECT id, camera, bytes, state FROM chunks ORDER BY end_us, id").fetchall()
            total = sum(r[2] for r in rows)
            for chunk_id, camera_id, size, state in rows:
                if total <= section.retention.max_bytes:
                    break
                if state == "open":
                    continue
                self._delete(chunk_id, camera_id, size, "recorder bytes")
                total -= size
                deleted += 1
        return deleted

    def _delete(self, chunk_id: int, camera_id: str, size: int, why: str) -> None:
        self.store.delete_chunk(chunk_id)
        log.info("retention (%s): deleted chunk %d of %s (%d bytes)", why, chunk_id, camera_id, size)

    def stop(self) -> None:
        self.stop_event.set()
        for ingest in self.cameras.values():
            ingest.join(timeout=15)
        self.queue.put(None)
        self._writer.join(timeout=30)


async def run_recorder(config: RecorderConfig) -> None:
    recorder = Recorder(config)
    recorder.start()
    runner = web.AppRunner(build_api(recorder), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.recorder.host, config.recorder.port)
    await site.start()
    log.info(
        "recorder %s: %d cameras, API on http://%s", config.recorder.id, len(recorder.cameras), config.recorder.listen
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        while not stop.is_set():
            await asyncio.to_thread(recorder.apply_retention)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RETENTION_INTERVAL_S)
    finally:
        await runner.cleanup()
        await asyncio.to_thread(recorder.stop)
