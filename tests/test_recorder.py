"""Simulator -> recorder over loopback: export, crash recovery, retention, bad input."""

from __future__ import annotations

import io
import itertools
import json
import signal
import subprocess
import time

import av
import httpx
from conftest import GAPLESS, TOKEN, wait_for

from gapless.media.fmp4 import iter_boxes
from gapless.media.h264 import find_stamp, split_avcc


def window(rec, camera: str) -> tuple[float, float]:
    """Start and end (epoch seconds) of what the recorder holds for the camera over the last hour."""
    now = time.time()
    rows = rec.api.get(f"/api/v1/cameras/{camera}/fragments", params={"start": now - 3600, "end": now + 60})
    rows = rows.json()["fragments"]
    return rows[0]["start_us"] / 1e6, rows[-1]["end_us"] / 1e6


def exported_frames(
    rec, camera: str, start: float, end: float, layout: str = "fragmented"
) -> tuple[list[int], list[int], int]:
    params = {"start": start, "end": end, "layout": layout}
    body = rec.api.get(f"/api/v1/cameras/{camera}/export.mp4", params=params)
    assert body.status_code == 200, body.text
    top_level = [kind for kind, _start, _end in iter_boxes(body.content)]
    if layout == "progressive":  # faststart: every sample table before the media data, no fragments
        assert top_level.index(b"moov") < top_level.index(b"mdat") and b"moof" not in top_level, top_level
    else:
        assert b"moof" in top_level, top_level
    container = av.open(io.BytesIO(body.content))
    stream = container.streams.video[0]
    numbers, pts, decoded = [], [], 0
    for packet in container.demux(stream):
        if packet.size == 0:
            continue
        numbers.append(find_stamp(split_avcc(bytes(packet))).frame)
        pts.append(packet.pts)
        decoded += len(packet.decode())
    return numbers, pts, decoded


def audit(rec, camera, start, end) -> tuple[int, dict]:
    result = subprocess.run(
        [
            *GAPLESS,
            "audit",
            "--recorder",
            rec.url,
            "--token",
            TOKEN,
            "--camera",
            camera,
            "--start",
            str(start),
            "--end",
            str(end),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.returncode, json.loads(result.stdout)


def test_export_decodes_every_frame_in_order(sim, make_recorder):
    rec = make_recorder("rec-a", [{"id": "lobby", "url": sim.url("cam0")}]).start()
    rec.wait_fragments("lobby", 6)
    rec.proc.stop()  # graceful: the GOP in progress is flushed
    rec.start()
    start, end = window(rec, "lobby")
    numbers, pts, decoded = exported_frames(rec, "lobby", start, end)
    assert decoded == len(numbers) > 6 * sim.gop
    assert all(b > a for a, b in itertools.pairwise(pts)), "timestamps must strictly increase"
    # Two runs (before and after the restart): inside each, no hole and no repeat.
    holes = [(a, b) for a, b in itertools.pairwise(numbers) if b != a + 1]
    assert len(holes) <= 1 and all(b > a for a, b in holes)
    # The first stored frame is the first keyframe after the simulator started sending.
    session_first = numbers[0]
    assert session_first % sim.gop == 0
    # The plain ("faststart") layout holds exactly the same frames, equally spaced in time (the
    # muxer may shift the whole timeline by a constant).
    plain_numbers, plain_pts, plain_decoded = exported_frames(rec, "lobby", start, end, "progressive")
    assert (plain_numbers, plain_decoded) == (numbers, decoded)
    shift = plain_pts[0] - pts[0]
    assert [p - shift for p in plain_pts] == pts
    bad = rec.api.get("/api/v1/cameras/lobby/export.mp4", params={"start": start, "end": end, "layout": "x"})
    assert bad.status_code == 400


def test_sigkill_leaves_exactly_one_gap(sim, make_recorder, tmp_path):
    rec = make_recorder("rec-a", [{"id": "lobby", "url": sim.url("cam0")}]).start()
    rec.wait_fragments("lobby", 4)
    rec.proc.kill(signal.SIGKILL)
    # A torn write: half a record appended to the newest chunk, as a power cut mid-append leaves it.
    newest = max((tmp_path / "rec-a" / "cameras" / "lobby").glob("*.glc"))
    with newest.open("ab") as fh:
        fh.write(b"GLR1F\x00\x00\x00\x10" + b"\x00" * 20)
    time.sleep(4)
    rec.start()
    rec.wait_fragments("lobby", 4)
    assert "cut a torn tail" in rec.log.read_text()
    start, end = window(rec, "lobby")
    code, report = audit(rec, "lobby", start, end - 0.5)
    assert code == 1
    assert report["gaps"] == 1, report["intervals"]
    assert len(report["missing"]) == 1 and report["duplicates"] == [] and report["bad_checksums"] == []
    first_missing, last_missing = report["missing"][0]
    assert last_missing - first_missing + 1 >= 4 * 25 - sim.gop  # at least the ~4 s of downtime


def test_retention_by_bytes_deletes_oldest_first(sim, make_recorder):
    rec = make_recorder(
        "rec-a",
        [{"id": "lobby", "url": sim.url("cam0"), "retention": {"max_bytes": "400KB"}}],
        chunk={"max_duration": "2s"},
    ).start()
    rec.wait_fragments("lobby", 2)
    first_recorded = window(rec, "lobby")[0]
    wait_for(
        lambda: "retention (camera bytes): deleted chunk" in rec.log.read_text(), 90, "retention to delete a chunk"
    )
    now = time.time()
    rows = rec.api.get("/api/v1/cameras/lobby/fragments", params={"start": now - 3600, "end": now + 60})
    kept = rows.json()["fragments"]
    # Oldest first: what is left is one unbroken stretch that starts later than the recording did.
    assert kept[0]["start_us"] / 1e6 > first_recorded
    assert all(b["start_us"] == a["end_us"] for a, b in itertools.pairwise(kept))
    first_kept = kept[0]["start_us"] / 1e6
    gone = rec.api.get("/api/v1/cameras/lobby/export.mp4", params={"start": first_kept - 20, "end": first_kept - 10})
    assert gone.status_code == 404 and "deleted by retention" in gone.json()["error"]


def test_bad_input_is_refused_and_other_cameras_keep_recording(sim, make_recorder, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "recorder: {id: r1, storage: ./x, api_token: '0123456789abcdef0'}\n"
        "cameras:\n  - {id: lobby, url: 'http://not-rtsp', retention: {max_age: ten days}}\n"
    )
    result = subprocess.run([*GAPLESS, "recorder", "--config", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "cameras.0.url" in result.stderr and "cameras.0.retention.max_age" in result.stderr

    rec = make_recorder(
        "rec-a",
        [
            {"id": "lobby", "url": sim.url("cam0")},
            {"id": "old", "url": sim.url("mpeg4")},
            {"id": "junk", "url": sim.url("garbage")},
            {"id": "gone", "url": "rtsp://127.0.0.1:9/nothing"},
            {"id": "paused", "url": sim.url("cam0"), "enabled": False},
        ],
    ).start()
    rec.wait_fragments("lobby", 3)
    listed = rec.api.get("/api/v1/cameras")
    assert listed.status_code == 200, listed.text
    assert {"id": "paused", "enabled": False, "state": "disabled"} in listed.json()["cameras"]
    health = wait_for(lambda: (h := rec.health())["cameras"]["gone"]["reconnects"] >= 2 and h, 60, "retries")
    assert health["cameras"]["old"]["state"] == "failed"
    assert "unsupported codec mpeg4" in health["cameras"]["old"]["reason"]
    assert health["cameras"]["gone"]["state"] == "reconnecting"
    junk = wait_for(lambda: (c := rec.health()["cameras"]["junk"])["state"] == "failed" and c, 60, "garbage refused")
    assert "not valid H.264" in junk["reason"] and junk["fragments"] == 0
    assert health["cameras"]["lobby"]["state"] == "recording"

    assert httpx.get(f"{rec.url}/api/v1/health").status_code == 401
    assert httpx.get(f"{rec.url}/api/v1/health", headers={"Authorization": "Bearer wrong"}).status_code == 401
    now = time.time()
    assert rec.api.get("/api/v1/cameras/nope/coverage", params={"start": now - 5, "end": now}).status_code == 404
    assert rec.api.get("/api/v1/cameras/lobby/coverage", params={"start": now, "end": now - 5}).status_code == 400
    assert rec.api.get("/api/v1/cameras/lobby/export.mp4", params={"start": now - 86400, "end": now}).status_code == 400
    assert (
        rec.api.get("/api/v1/cameras/lobby/coverage", params={"start": "2026-01-01T00:00:00", "end": now}).status_code
        == 400
    )
    for attempt in ("..%2F..%2Findex.sqlite3", "1;drop", "-1", "99999999999999999999"):
        assert rec.api.get(f"/api/v1/fragments/{attempt}").status_code in (400, 404)
    for method, path in (("GET", "/api/v1/no-such-route"), ("DELETE", "/api/v1/health")):  # aiohttp's own errors
        answer = rec.api.request(method, path)
        assert answer.status_code in (404, 405) and "error" in answer.json(), answer.text
    assert rec.health()["cameras"]["lobby"]["state"] == "recording"


def test_third_party_client_reads_the_simulator_over_udp_and_tcp(sim):
    for transport in ("udp", "tcp"):
        container = av.open(sim.url("cam0"), options={"rtsp_transport": transport}, timeout=(10, 10))
        try:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264"
            got = 0
            for packet in container.demux(stream):
                if packet.size:
                    got += 1
                if got >= 30:
                    break
            assert got >= 30, f"{transport}: only {got} packets"
        finally:
            container.close()


def live_numbers(text: str) -> dict[str, int]:
    """Each segment's path (its signature left out) with its media sequence number."""
    number = int(next(x for x in text.splitlines() if x.startswith("#EXT-X-MEDIA-SEQUENCE:")).split(":")[1])
    numbers = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            numbers[line.split("?")[0]] = number
            number += 1
    return numbers


def test_live_and_playback_playlists_play_through_signed_urls(sim, make_recorder):
    rec = make_recorder("rec-a", [{"id": "lobby", "url": sim.url("cam0")}]).start()
    rec.wait_fragments("lobby", 4)
    live = httpx.get(f"{rec.url}/api/v1/cameras/lobby/live.m3u8", params={"token": TOKEN})
    assert live.status_code == 200, live.text
    lines = live.text.splitlines()
    numbered = live_numbers(live.text)
    rec.wait_fragments("lobby", 2)
    later = live_numbers(httpx.get(f"{rec.url}/api/v1/cameras/lobby/live.m3u8", params={"token": TOKEN}).text)
    assert max(later.values()) > max(numbered.values())
    kept = {path: number for path, number in later.items() if path in numbered}
    assert kept and all(numbered[path] == number for path, number in kept.items()), (numbered, later)
    init_uri = next(x for x in lines if x.startswith("#EXT-X-MAP:")).split('"')[1]
    segments = [x for x in lines if x.startswith("/api/v1/cameras/lobby/segments/")]
    assert len(segments) >= 3
    # Players that cannot send headers: the signed URLs alone open the media, no token needed.
    media = b"".join(httpx.get(rec.url + uri).raise_for_status().content for uri in [init_uri, *segments])
    container = av.open(io.BytesIO(media))
    numbers = [find_stamp(split_avcc(bytes(p))).frame for p in container.demux(container.streams.video[0]) if p.size]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    assert httpx.get(rec.url + segments[0].replace("sig=", "sig=x")).status_code == 401
    # The other recorder of the camera may have listed the GOP a few milliseconds apart (hls.same_gop).
    path = segments[1].split("?")[0]
    start_us = int(path.rsplit("/", 1)[1].removesuffix(".m4s"))
    near = path.replace(f"/{start_us}.m4s", f"/{start_us + 7_000}.m4s")
    listed_bytes = httpx.get(rec.url + segments[1]).content
    assert rec.api.get(near).content == listed_bytes
    assert rec.api.get(path.replace(f"/{start_us}.m4s", f"/{start_us + 150_000}.m4s")).status_code == 404
    assert httpx.get(rec.url + segments[0].split("?")[0]).status_code == 401
    assert httpx.get(f"{rec.url}/api/v1/health", params={"token": TOKEN}).status_code == 401  # not a media URL

    start, end = window(rec, "lobby")
    vod = rec.api.get("/api/v1/cameras/lobby/playback.m3u8", params={"start": start, "end": end})
    assert vod.status_code == 200 and vod.text.rstrip().endswith("#EXT-X-ENDLIST")
    assert sum(1 for x in vod.text.splitlines() if x.startswith("/api/v1/cameras/lobby/segments/")) >= 4


def test_reindex_rebuilds_the_same_index_from_chunk_files(sim, make_recorder):
    rec = make_recorder("rec-a", [{"id": "lobby", "url": sim.url("cam0")}], chunk={"max_duration": "3s"}).start()
    rec.wait_fragments("lobby", 5)
    start, end = window(rec, "lobby")
    before = rec.api.get("/api/v1/cameras/lobby/fragments", params={"start": start, "end": end}).json()["fragments"]
    rec.proc.stop()
    result = subprocess.run(
        [*GAPLESS, "recorder", "--config", str(rec.config_path), "--reindex"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert list(rec.storage.glob("index.sqlite3.before-reindex-*"))
    rec.start()
    after = rec.api.get("/api/v1/cameras/lobby/fragments", params={"start": start, "end": end}).json()["fragments"]
    key = ("run", "seq", "start_us", "end_us", "frames", "bytes", "sha256", "init", "origin")
    assert [tuple(f[k] for k in key) for f in after[: len(before)]] == [tuple(f[k] for k in key) for f in before]
    code, report = audit(rec, "lobby", start, end)
    assert code == 0 and report["frames"] == sum(f["frames"] for f in before), report
