"""H.265 end to end: a simulated H.265 camera (libx265, RFC 7798 packets, SEI frame stamps) recorded
into `hvc1` fragments; the export judged by PyAV; kill-restart-backfill and cluster failover with
zero missing frames."""

from __future__ import annotations

import io
import itertools
import time

import av
from cluster_harness import CAMERA, assert_continuous, kill_and_restart_the_holder, running_cluster
from conftest import audit_clean, kill_and_restart, recorder_with_partner


def test_records_and_exports_h265(h265_camera, make_recorder):
    rec = make_recorder("rec-a", [{"id": "cam", "url": h265_camera.url("cam0")}]).start()
    started = time.time()
    rec.wait_fragments("cam", 8)
    first = rec.api.get("/api/v1/cameras/cam/fragments", params={"start": started - 60, "end": time.time()})
    begin, end = first.json()["fragments"][0]["start_us"] / 1e6, time.time() - 1.5
    audit_clean(rec, "cam", begin, end)
    rec.wait_fragments("cam", 2)  # the GOP spanning `end` is stored
    body = rec.api.get("/api/v1/cameras/cam/export.mp4", params={"start": begin, "end": end})
    assert body.status_code == 200, body.text
    with av.open(io.BytesIO(body.content)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.codec_tag) == ("hevc", "hvc1")
        assert (stream.width, stream.height) == (640, 360)
        frames = list(container.decode(stream))
    assert abs(len(frames) - (end - begin) * 25) <= 26, (len(frames), end - begin)
    assert all(abs(b.pts - a.pts - 3600) <= 1 for a, b in itertools.pairwise(frames))  # µs times in 90 kHz
    health = rec.health()["cameras"]["cam"]
    assert health["state"] == "recording" and health["time_source"] == "sender reports", health


def test_h265_kill_restart_backfill_loses_no_frame(h265_camera, make_recorder):
    a, _b = recorder_with_partner(make_recorder, h265_camera.url("cam0"))
    start = kill_and_restart(a)
    audit_clean(a, "cam", start, time.time() - 2)
    assert any(j["state"] == "done" and j["stored_frames"] > 0 for j in a.jobs()), a.jobs()


def test_h265_cluster_failover_with_a_live_reader(tmp_path, h265_camera):
    with running_cluster(tmp_path, h265_camera) as (management, a, _b):
        reader, start, end = kill_and_restart_the_holder(management, a)
        assert_continuous(reader)
        assert len(reader.frames) > 25 * 10, "the live reader saw H.265 frames with their stamps"
        audit_clean(a, CAMERA, start - 4, end - 2)
