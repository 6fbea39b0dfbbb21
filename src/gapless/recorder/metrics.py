"""The recorder's Prometheus metrics (`GET /metrics`), read from its parts at each scrape."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from gapless.recorder.service import Recorder

_STATES = ("starting", "connecting", "recording", "reconnecting", "failed")


class RecorderMetrics:
    """A prometheus_client collector over one recorder."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def collect(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "gapless_camera_state", "1 for the camera's current feed state", labels=["camera", "state"]
        )
        frags = CounterMetricFamily("gapless_fragments_written", "fragments stored", labels=["camera"])
        frames = CounterMetricFamily("gapless_frames_written", "frames stored", labels=["camera"])
        reconnects = CounterMetricFamily("gapless_ingest_reconnects", "RTSP reconnects", labels=["camera"])
        if self.recorder.agent is not None:
            holder = GaugeMetricFamily("gapless_cluster_presenting", "1 while this member presents the cluster")
            holder.add_metric([], 1.0 if self.recorder.agent.presenting() else 0.0)
            changes = CounterMetricFamily("gapless_token_changes", "token changes seen here", labels=["change"])
            for change in ("taken", "released", "lost"):
                changes.add_metric([change], sum(1 for c in self.recorder.agent.state.changes if c.change == change))
            yield from (holder, changes)
        for cam, ingest in self.recorder.cameras.items():
            for name in _STATES:
                state.add_metric([cam, name], 1.0 if ingest.feed.state == name else 0.0)
            frags.add_metric([cam], ingest.feed.fragments)
            frames.add_metric([cam], ingest.feed.frames)
            reconnects.add_metric([cam], ingest.feed.reconnects)
        depth = GaugeMetricFamily("gapless_write_queue_depth", "fragments waiting to be stored")
        depth.add_metric([], self.recorder.writer.pending_fragments())
        jobs = GaugeMetricFamily("gapless_backfill_jobs", "backfill jobs by state", labels=["state"])
        for name, count in self.recorder.jobs.counts().items():
            jobs.add_metric([name], count)
        worker = self.recorder.backfill
        fetched = CounterMetricFamily("gapless_backfill_bytes_fetched", "bytes fetched from partners")
        fetched.add_metric([], worker.bytes_fetched)
        stored = CounterMetricFamily("gapless_backfill_frames_stored", "frames stored by backfill")
        stored.add_metric([], worker.frames_stored)
        refused = CounterMetricFamily("gapless_backfill_fragments_refused", "partner fragments failing checksum")
        refused.add_metric([], worker.fragments_refused)
        yield from (state, frags, frames, reconnects, depth, jobs, fetched, stored, refused)
