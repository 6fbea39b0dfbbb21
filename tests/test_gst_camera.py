"""Against a camera Gapless did not write (GStreamer's RTSP server, shared media): record and export,
and a kill-restart-backfill with two recorders, where the restarted recorder's PLAY makes the server
restart the shared stream's RTP timestamps for the other one too. Judged with PyAV, since this
stream carries no frame numbers: frame count, timestamps 40 ms apart, no gap, no overlap."""

from __future__ import annotations

import bisect
import io
import itertools
import shutil
import subprocess
import time
from pathlib import Path

import av
import pytest
from cluster_harness import (
    CAMERA,
    assert_continuous,
    kill_and_restart_the_holder,
    running_cluster,
    told_by_the_logs,
)
from conftest import TOKEN, Proc, exported, free_port, wait_for, wait_new_fragments

SYSTEM_PYTHON = "/usr/bin/python3"
CAMERA_SCRIPT = Path(__file__).with_name("gst_camera.py")
FRAME_TICKS = 3600  # 25 fps in the export's 90 kHz timescale


def _gst_available() -> str | None:
    if not shutil.which(SYSTEM_PYTHON):
        return "no system python3"
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"], capture_output=True, timeout=30
    )
    return None if probe.returncode == 0 else "GStreamer's RTSP server (gir1.2-gst-rtsp-server-1.0) is not installed"


@pytest.fixture
def gst_camera(tmp_path):
    missing = _gst_available()
    if missing:
        pytest.skip(missing)
    port = free_port()
    log = tmp_path / "gst-camera.log"
    proc = Proc([SYSTEM_PYTHON, str(CAMERA_SCRIPT), str(port)], log).start()
    try:
        wait_for(lambda: "ready" in log.read_text(), 30, "the GStreamer camera")
        yield f"rtsp://127.0.0.1:{port}/cam"
    finally:
        proc.stop()


def decoded_export(rec, camera: str, start_us: int, end_us: int) -> list[int]:
    pts, decoded = exported(rec, camera, start_us, end_us)
    # A P-frame whose reference the camera itself lost (see assert_every_frame) may not decode.
    assert decoded >= len(pts) - 2, (decoded, len(pts))
    return pts


def continuous(rec, camera: str, gaps: int = 0) -> tuple[int, int]:
    """The recorder's archive of the camera: no overlap, `gaps` gaps at most. Returns its bounds."""
    now = time.time()
    rows = rec.api.get(f"/api/v1/cameras/{camera}/fragments", params={"start": now - 3600, "end": now + 60})
    fragments = rows.json()["fragments"]
    for a, b in itertools.pairwise(fragments):
        assert b["start_us"] >= a["end_us"], f"overlap: {a} {b}"
        assert a["end_us"] - a["start_us"] >= a["frames"] * 20_000, f"a fragment shorter than its frames: {a}"
    start, end = fragments[0]["start_us"], fragments[-1]["end_us"]
    coverage = rec.api.get(f"/api/v1/cameras/{camera}/coverage", params={"start": start / 1e6, "end": end / 1e6})
    assert len(coverage.json()["intervals"]) <= 1 + gaps, coverage.json()
    return start, end


def assert_every_frame(pts: list[int], start_us: int, end_us: int, restarts: int = 0) -> None:
    """Frames 40 ms apart, as many as the time holds; but for `restarts` pauses of the camera's own
    (gst-rtsp-server's seek of a shared stream drops a few frames for every client)."""
    steps = [b - a for a, b in itertools.pairwise(pts)]
    odd = [step for step in steps if abs(step - FRAME_TICKS) > 1]  # µs times in 90 kHz: ±1 tick
    # gst re-times the restarted stream: the frame after a restart may come at a new phase, after a
    # pause of the camera's own (flushing its pipeline for the seek: measured up to 0.93 s with two
    # test workers loading the machine, 2.02 s with six and Chromium beside). Under load one stray
    # frame may fall inside that pause (seen: 23 ms then 123 ms): adjacent odd steps are one pause.
    pauses: list[list[int]] = []
    for step, previous in zip(steps, [FRAME_TICKS, *steps], strict=False):
        if abs(step - FRAME_TICKS) > 1:
            if pauses and abs(previous - FRAME_TICKS) > 1:
                pauses[-1].append(step)
            else:
                pauses.append([step])
    lengths = [sum(pause) for pause in pauses]
    assert len(pauses) <= restarts and all(FRAME_TICKS // 2 <= n <= 100 * FRAME_TICKS for n in lengths), pauses
    expected = (end_us - start_us - sum(odd) * 100 // 9 + len(odd) * 40_000) // 40_000
    assert abs(len(pts) - expected) <= 2, (len(pts), expected)


def assert_holds_every_frame(rec, camera: str, b_frames: list[int], start: int, end: int) -> None:
    """rec holds a frame for every frame of b_frames (exported over start..end by the other recorder).
    Their times agree within the jitter of the sender reports each confirmed the camera's clock from
    (gst-rtsp-server's: measured up to about 12 ms), so rec's export is a frame wider each side."""
    frames = decoded_export(rec, camera, start - 40_000, end + 40_000)
    half = FRAME_TICKS // 2
    for b in b_frames:
        i = bisect.bisect_left(frames, b - half)
        assert i < len(frames) and abs(frames[i] - b) <= half, f"no frame near {b} in {rec.url}'s archive"


def test_records_and_exports_a_gstreamer_camera(gst_camera, make_recorder):
    rec = make_recorder("rec-a", [{"id": "gst", "url": gst_camera}]).start()
    rec.wait_fragments("gst", 6)
    start, end = continuous(rec, "gst")
    assert_every_frame(decoded_export(rec, "gst", start, end), start, end)
    health = rec.health()["cameras"]["gst"]
    assert health["time_source"].startswith("sender report"), health
    assert abs(health["camera_clock_offset_ms"]) < 2000, health


@pytest.mark.parametrize(("mount", "codec", "unit"), [("cam-aac", "aac", 1024), ("cam-pcmu", "pcm_mulaw", None)])
def test_records_gstreamer_audio(gst_camera, make_recorder, mount, codec, unit):
    """The audio of a camera we did not write (gst's RTP payloaders): in the export beside every video
    frame, contiguous (each unit starts where the one before ends) and as long as the video."""
    rec = make_recorder("rec-a", [{"id": "gst", "url": gst_camera.replace("/cam", f"/{mount}")}]).start()
    rec.wait_fragments("gst", 6)
    start, end = continuous(rec, "gst")
    assert_every_frame(decoded_export(rec, "gst", start, end), start, end)
    body = rec.api.get("/api/v1/cameras/gst/export.mp4", params={"start": start / 1e6, "end": end / 1e6})
    with av.open(io.BytesIO(body.content)) as container:
        audio = container.streams.audio[0]
        assert audio.codec_context.name == codec
        packets = [p for p in container.demux(audio) if p.dts is not None]
        decoded = sum(frame.samples for p in packets for frame in p.decode())
        seconds = float((packets[-1].pts + packets[-1].duration - packets[0].pts) * audio.time_base)
    for a, b in itertools.pairwise(packets):
        length = unit or a.size  # G.711: one byte per sample
        assert abs(b.pts - a.pts - length) <= 1, f"audio not contiguous at {a.pts}: {b.pts - a.pts} != {length}"
    assert abs(seconds - (end - start) / 1e6) < 0.25, (seconds, (end - start) / 1e6)
    assert decoded >= (len(packets) - 2) * (unit or 1)
    assert rec.health()["cameras"]["gst"]["audio_frames"] >= len(packets)


def test_kill_restart_backfill_with_a_gstreamer_camera(gst_camera, make_recorder):
    cams = [{"id": "gst", "url": gst_camera}]
    b = make_recorder("rec-b", cams).start()
    extra = {"partners": [{"id": "rec-b", "url": b.url, "token": TOKEN}], "backfill": {"scan_interval": "5s"}}
    a = make_recorder("rec-a", cams, extra).start()
    wait_new_fragments([(a, "gst"), (b, "gst")], 3)
    a.proc.kill()
    time.sleep(6)
    a.start()  # its PLAY restarts the shared stream's timestamps for rec-b as well
    wait_new_fragments([(a, "gst"), (b, "gst")], 3)

    last: list[str] = []

    def backfilled() -> bool:
        jobs = a.jobs()
        last[:] = [f"jobs: {jobs}"]
        if not jobs or any(j["state"] not in ("done", "partial") for j in jobs):
            return False
        try:
            continuous(a, "gst", gaps=2)
        except AssertionError as exc:
            last.append(str(exc))
            return False
        return True

    try:
        wait_for(backfilled, 120, "backfill to close rec-a's gap")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen: {last}") from None
    assert b.health()["cameras"]["gst"]["clock_discontinuities"] >= 1, "the timestamp restart was not seen"
    b_start, b_end = continuous(b, "gst", gaps=2)
    a_start, a_end = continuous(a, "gst", gaps=2)
    start, end = max(a_start, b_start), min(a_end, b_end)
    b_frames = decoded_export(b, "gst", start, end)
    assert_every_frame(b_frames, start, end, restarts=2)  # rec-a PLAYed twice
    assert_holds_every_frame(a, "gst", b_frames, start, end)


def test_cluster_failover_with_a_gstreamer_camera(tmp_path, gst_camera):
    """A symmetrical cluster recording the GStreamer camera: the holder is killed under a live reader
    on the gateway, which keeps reading every segment once; rec-a comes back, backfills, takes the
    token back, and then holds every frame rec-b holds."""

    class Camera:  # what the cluster harness asks of a camera source
        def url(self, _name: str) -> str:
            return gst_camera

    with running_cluster(tmp_path, Camera()) as (management, a, b):
        # rec-b's first PLAY re-timed the shared stream (gst-rtsp-server does): wait until that
        # discontinuity has left the live playlist's window, so the reader counts only the restart's.
        wait_for(
            lambda: "#EXT-X-DISCONTINUITY" not in management.api.get(f"/api/v1/cameras/{CAMERA}/live.m3u8").text,
            60,
            "the setup's discontinuity to leave the live window",
        )

        def breaks_and_reconnects(rec) -> tuple[int, int]:  # the timeline breaks it saw, its new sessions
            feed = rec.health()["cameras"][CAMERA]
            return feed["clock_discontinuities"], feed["reconnects"]

        b_before = breaks_and_reconnects(b)
        reader, _start, _end = kill_and_restart_the_holder(management, a)
        b_after, a_after = breaks_and_reconnects(b), breaks_and_reconnects(a)
        # The reader's playlists come from rec-b, recording throughout, but for their end: each break
        # rec-b saw and each session it began again is a new timeline of the shared stream. rec-a's
        # PLAY after its restart makes one; a recorder that had to reconnect (under load: the camera
        # silent for READ_TIMEOUT_S while gst flushes) PLAYs again and makes another; nothing else may.
        b_reconnects = b_after[1] - b_before[1]
        restarts = b_after[0] - b_before[0] + b_reconnects
        assert 1 <= restarts <= 1 + b_reconnects + a_after[1], (restarts, b_reconnects, a_after[1])
        with told_by_the_logs(tmp_path):
            assert_continuous(reader, camera_restarts=restarts)
        a_start, a_end = continuous(a, CAMERA, gaps=1 + restarts)
        b_start, b_end = continuous(b, CAMERA, gaps=1 + restarts)
        start, end = max(a_start, b_start), min(a_end, b_end) - 2_000_000
        b_frames = decoded_export(b, CAMERA, start, end)
        assert_every_frame(b_frames, start, end, restarts=1 + restarts)  # and rec-b's first PLAY
        assert_holds_every_frame(a, CAMERA, b_frames, start, end)
        # The camera's pauses at its restarts hold no frames on either side: a job that found nothing
        # there is not queued again (seen: the same empty job at every scan).
        for rec in (a, b):
            empty = [(job["start"], job["end"]) for job in rec.jobs() if job["fragments_total"] == 0]
            assert len(empty) == len(set(empty)), rec.jobs()
