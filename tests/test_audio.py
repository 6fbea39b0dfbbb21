"""Camera audio end to end: AAC (RFC 3640 AAC-hbr) and G.711 (PCMU/PCMA) recorded beside the video in
the same fragments, timed by camera time; exported (fragmented and progressive, judged by PyAV),
served in HLS (AAC; G.711 left out, since no browser plays it), carried through backfill and failover
with no audio unit lost. The simulator's audio units all differ (a tone under seeded noise), so each
unit is identified by its bytes, as each video frame is by its SEI frame number."""

from __future__ import annotations

import io
import itertools
import re
import time

import av
import pytest
from cluster_harness import CAMERA, assert_continuous, kill_and_restart_the_holder, running_cluster
from conftest import TOKEN, audit_clean, exported, kill_and_restart, recorder_with_partner, wait_for

from gapless.audit.audit import audit, compare
from gapless.sim.audio import audio_loop

AAC_UNIT = 1024  # samples per AAC access unit
G711_UNIT = 160  # samples per simulated G.711 packet (20 ms at 8 kHz)


def loop_positions(units: list[bytes], codec: str) -> list[int]:
    """Each unit's place in the simulator's audio loop; fails on a unit the camera never sent."""
    index = {unit: i for i, unit in enumerate(audio_loop(codec).units)}
    positions = [index.get(unit) for unit in units]
    assert None not in positions, f"{positions.count(None)} audio units the camera never sent"
    return positions  # type: ignore[return-value]


def assert_unbroken(positions: list[int], codec: str, what: str) -> None:
    """Every unit follows the one before it in the camera's sequence: none missing, none repeated."""
    size = len(audio_loop(codec).units)
    breaks = [(a, b) for a, b in itertools.pairwise(positions) if b != (a + 1) % size]
    assert not breaks, f"{what}: audio sequence broken at {breaks[:5]} ({len(positions)} units)"


def export_audio(rec, camera: str, start: float, end: float, layout: str = "fragmented"):
    body = rec.api.get(f"/api/v1/cameras/{camera}/export.mp4", params={"start": start, "end": end, "layout": layout})
    assert body.status_code == 200, body.text
    return body


def video_seconds(data: bytes) -> float:
    """The duration of an MP4's video: its frames at the simulator's 25 fps."""
    with av.open(io.BytesIO(data)) as container:
        return sum(1 for p in container.demux(container.streams.video[0]) if p.dts is not None) / 25


def audio_packets(data: bytes) -> tuple[str, int, list[bytes], list[int], int]:
    """(codec, sample rate, units, presentation times, decoded samples) of an MP4's audio track."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        units, pts, decoded = [], [], 0
        for packet in container.demux(stream):
            if packet.dts is None:
                continue
            units.append(bytes(packet))
            pts.append(packet.pts)
            decoded += sum(frame.samples for frame in packet.decode())
        return stream.codec_context.name, stream.rate, units, pts, decoded


def recording_window(rec, started: float) -> tuple[float, float]:
    """From the first stored fragment to a moment whose GOP is already stored."""
    rec.wait_fragments("cam", 6)
    listing = rec.api.get("/api/v1/cameras/cam/fragments", params={"start": started - 60, "end": time.time()})
    begin, end = listing.json()["fragments"][0]["start_us"] / 1e6, time.time() - 1.5
    rec.wait_fragments("cam", 2)
    return begin, end


def test_aac_records_exports_and_plays_in_hls(aac_camera, make_recorder):
    rec = make_recorder("rec-a", [{"id": "cam", "url": aac_camera.url("cam0")}]).start()
    begin, end = recording_window(rec, time.time())
    report = audit_clean(rec, "cam", begin, end, audio=True)
    assert report.audio_units >= (end - begin) * 16000 / AAC_UNIT - 2, report

    fragmented = export_audio(rec, "cam", begin, end).content
    codec, rate, units, pts, decoded = audio_packets(fragmented)
    assert (codec, rate) == ("aac", 16000)
    assert abs(len(units) - video_seconds(fragmented) * 16000 / AAC_UNIT) <= 2, len(units)
    assert_unbroken(loop_positions(units, "aac"), "aac", "fragmented export")
    assert all(abs(b - a - AAC_UNIT) <= 1 for a, b in itertools.pairwise(pts)), "audio times are not contiguous"
    assert decoded >= (len(units) - 1) * AAC_UNIT  # the decoder's priming unit aside, every unit decodes
    video_pts, video_decoded = exported(rec, "cam", int(begin * 1e6), int(end * 1e6))
    assert video_decoded == len(video_pts) > 0
    # Lip sync: the audio starts within one AAC unit of the video, on one camera-time axis.
    with av.open(io.BytesIO(fragmented)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        video_start = min(video_pts) * video.time_base
    assert abs(float(pts[0] * audio.time_base - video_start)) < AAC_UNIT / 16000 + 0.05

    progressive = export_audio(rec, "cam", begin, end, "progressive")
    assert progressive.headers["content-type"] == "video/mp4"
    _c, _r, progressive_units, _p, _d = audio_packets(progressive.content)
    assert progressive_units == units

    health = rec.health()["cameras"]["cam"]
    assert health["audio"] == "AAC 16 kHz mono" and health["audio_frames"] > 0, health

    # HLS: the playback playlist's init segment and segments carry the AAC track (hls.js and Safari play it).
    playlist = rec.api.get("/api/v1/cameras/cam/playback.m3u8", params={"start": begin, "end": end}).text
    init_uri = re.search(r'#EXT-X-MAP:URI="([^"]+)"', playlist).group(1)
    segments = [line for line in playlist.splitlines() if line and not line.startswith("#")]
    stream = rec.api.get(init_uri).content + b"".join(rec.api.get(uri).content for uri in segments)
    codec, _rate, hls_units, _pts, _decoded = audio_packets(stream)
    assert codec == "aac" and len(hls_units) >= len(units) - 2
    assert_unbroken(loop_positions(hls_units, "aac"), "aac", "HLS playback")


@pytest.mark.parametrize(("codec", "audio_first"), [("pcmu", True), ("pcma", False)])
def test_g711_records_and_exports_but_stays_out_of_hls(make_sim, make_recorder, codec, audio_first):
    sim = make_sim(cameras=1, extra=("--audio", codec, *(("--audio-first",) if audio_first else ())))
    rec = make_recorder("rec-a", [{"id": "cam", "url": sim.url("cam0")}]).start()
    begin, end = recording_window(rec, time.time())
    audit_clean(rec, "cam", begin, end, audio=True)
    fragmented = export_audio(rec, "cam", begin, end).content
    name, rate, units, pts, decoded = audio_packets(fragmented)
    assert (name, rate) == ({"pcmu": "pcm_mulaw", "pcma": "pcm_alaw"}[codec], 8000)
    assert_unbroken(loop_positions(units, codec), codec, "fragmented export")
    assert decoded == sum(len(unit) for unit in units)  # one byte per sample, every one decodes
    assert abs(len(units) - video_seconds(fragmented) * 8000 / G711_UNIT) <= 2, len(units)
    assert all(abs(b - a - G711_UNIT) <= 1 for a, b in itertools.pairwise(pts))

    progressive = export_audio(rec, "cam", begin, end, "progressive")
    assert progressive.headers["content-type"] == "video/quicktime"  # MP4 has no G.711 entry
    assert audio_packets(progressive.content)[0] == name

    health = rec.health()["cameras"]["cam"]
    assert health["audio"] == f"G.711 {codec.upper()} 8 kHz mono", health
    playlist = rec.api.get("/api/v1/cameras/cam/live.m3u8").text
    init_uri = re.search(r'#EXT-X-MAP:URI="([^"]+)"', playlist).group(1)
    segment_uri = next(line for line in playlist.splitlines() if line and not line.startswith("#"))
    with av.open(io.BytesIO(rec.api.get(init_uri).content + rec.api.get(segment_uri).content)) as container:
        assert [s.type for s in container.streams] == ["video"]  # no browser plays G.711
        assert sum(1 for p in container.demux() if p.dts is not None) > 0


def test_broken_audio_never_disturbs_the_video(aac_camera, make_recorder):
    rec = make_recorder("rec-a", [{"id": "cam", "url": aac_camera.url("cam0")}]).start()
    rec.wait_fragments("cam", 3)
    start = time.time()
    assert aac_camera.control.post("/cameras/cam0/audio-broken", params={"seconds": 8}).status_code == 200
    wait_for(lambda: "audio switched off" in rec.health()["cameras"]["cam"]["audio"], 60, "audio switched off")
    rec.wait_fragments("cam", 4)
    end = time.time() - 2
    health = rec.health()["cameras"]["cam"]
    assert health["state"] == "recording" and health["reconnects"] == 0, health
    report = audit(rec.url, TOKEN, "cam", str(start), str(end))
    assert report.gaps == 0 and not report.missing and not report.duplicates and not report.time_problems, report
    assert report.frames >= (end - start - 2) * 25, report


def test_audio_kill_restart_backfill_loses_no_unit(aac_camera, make_recorder):
    a, b = recorder_with_partner(make_recorder, aac_camera.url("cam0"))
    start = kill_and_restart(a)
    end = time.time() - 2
    audit_clean(a, "cam", start, end, audio=True)
    assert any(j["state"] == "done" and j["stored_frames"] > 0 for j in a.jobs()), a.jobs()
    difference = compare(a.url, TOKEN, b.url, TOKEN, "cam", str(start), str(end))
    assert not difference.lost, difference
    _n, _r, units, _p, _d = audio_packets(export_audio(a, "cam", start, end).content)
    assert_unbroken(loop_positions(units, "aac"), "aac", "export across the outage, after backfill")


def test_audio_survives_cluster_failover_under_a_live_reader(tmp_path, aac_camera):
    with running_cluster(tmp_path, aac_camera) as (management, a, _b):
        reader, start, end = kill_and_restart_the_holder(management, a)
        assert_continuous(reader)
        assert len(reader.audio) > 16000 / AAC_UNIT * 10, "the live reader heard the audio"
        assert_unbroken(loop_positions(reader.audio, "aac"), "aac", "live audio across failover")
        audit_clean(a, CAMERA, start - 4, end - 2, audio=True)
