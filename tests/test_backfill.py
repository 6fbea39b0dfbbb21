"""Backfill: a recorder that was down copies what its partner recorded, frame-exact."""

from __future__ import annotations

import json
import os
import subprocess
import time

import av
import httpx
from conftest import GAPLESS, TOKEN, Sim, wait_for

from gapless.audit.audit import audit
from gapless.common.timeparse import parse_time_us

CAMERA = "lobby"


def pair(make_recorder, sim: Sim, b_section: dict | None = None, **backfill):
    cams = [{"id": CAMERA, "url": sim.url("cam0")}]
    b = make_recorder("rec-b", cams, **(b_section or {})).start()
    extra = {
        "partners": [{"id": "rec-b", "url": b.url, "token": TOKEN}],
        "backfill": {"scan_interval": "5s", **backfill},
    }
    a = make_recorder("rec-a", cams, extra).start()
    a.wait_fragments(CAMERA, 3)
    b.wait_fragments(CAMERA, 1)
    return a, b


def outage(a, seconds: float, before: float = 2.0) -> tuple[float, float]:
    """SIGKILL A after `before` s for `seconds`, restart it; returns a window spanning all of it."""
    start = time.time()
    time.sleep(before)
    a.proc.kill()
    time.sleep(seconds)
    a.start()
    a.wait_fragments(CAMERA, 3)
    return start, time.time() - 1


def spans(report, start: float, end: float) -> bool:
    """Whether the archive covers the window to within a GOP at both ends (the audit's gap count
    only sees holes between intervals, not time missing at the window's edges)."""
    if not report.intervals:
        return False
    first, last = parse_time_us(report.intervals[0][0]) / 1e6, parse_time_us(report.intervals[-1][1]) / 1e6
    return first <= start + 1.5 and last >= end - 1.5


def settled(a, start: float, end: float):
    """The audit of A once no backfill job is open and A's archive spans the window (bounded wait)."""

    last: list = []

    def done():
        open_jobs = [j for j in a.jobs() if j["state"] not in ("done", "partial")]
        last[:] = [audit(a.url, TOKEN, CAMERA, str(start), str(end)), a.jobs()]
        return not open_jobs and not last[0].lost and spans(last[0], start, end)

    try:
        wait_for(done, 120, "backfill to close every gap")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last audit and jobs: {last}") from None
    return last[0]


def assert_exported_decodes(a, start: float, end: float, tmp_path) -> int:
    response = a.api.get(f"/api/v1/cameras/{CAMERA}/export.mp4", params={"start": start, "end": end})
    assert response.status_code == 200, response.text
    path = tmp_path / "export.mp4"
    path.write_bytes(response.content)
    last = None
    frames = 0
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            assert last is None or frame.pts > last
            last = frame.pts
            frames += 1
    return frames


def test_backfill_after_sigkill(camera, make_recorder, tmp_path):
    a, _b = pair(make_recorder, camera)
    start, end = outage(a, 20)
    report = settled(a, start, end)
    assert report.missing == [] and report.duplicates == [] and report.gaps == 0, report
    assert report.frames > 25 * 20
    jobs = a.jobs()
    assert sum(j["stored_frames"] for j in jobs) >= 25 * 18, jobs
    listing = a.api.get(f"/api/v1/cameras/{CAMERA}/fragments", params={"start": start, "end": end}).json()["fragments"]
    assert {f["origin"] for f in listing} == {"rec-a", "rec-b"}
    assert assert_exported_decodes(a, start, end, tmp_path) >= report.frames - 25


def test_backfill_after_sigstop(camera, make_recorder, tmp_path):
    a, _b = pair(make_recorder, camera)
    start = time.time()
    time.sleep(2)
    a.proc.pause()
    time.sleep(20)
    # Socket buffers hold a while of video; stay stopped until the camera gives up on A, as it would.
    wait_for(
        lambda: not any("(rec-a)" in s["user_agent"] for s in camera.camera("cam0")["sessions"]),
        120,
        "the camera to drop the stopped recorder",
    )
    a.proc.resume()
    wait_for(lambda: a.health()["cameras"][CAMERA]["reconnects"] >= 1, 60, "A to reconnect to the camera")
    a.wait_fragments(CAMERA, 3)
    end = time.time() - 1
    report = settled(a, start, end)
    assert report.missing == [] and report.duplicates == [] and report.gaps == 0, report
    assert sum(j["stored_frames"] for j in a.jobs()) >= 25 * 5  # the camera dropped the stalled client
    assert assert_exported_decodes(a, start, end, tmp_path) >= report.frames - 25


def test_backfill_after_feed_lost_by_one_recorder(camera, make_recorder):
    a, b = pair(make_recorder, camera)
    start = time.time()
    time.sleep(2)
    camera.control.post("/cameras/cam0/block", params={"client": "(rec-a)", "seconds": 15}).raise_for_status()
    wait_for(lambda: a.health()["cameras"][CAMERA]["state"] != "recording", 30, "A to lose the feed")
    time.sleep(14)
    wait_for(lambda: a.health()["cameras"][CAMERA]["state"] == "recording", 90, "A's feed to return")
    a.wait_fragments(CAMERA, 3)
    end = time.time() - 1
    report = settled(a, start, end)
    assert report.missing == [] and report.duplicates == [] and report.gaps == 0, report
    assert sum(j["stored_frames"] for j in a.jobs()) >= 25 * 10
    b.wait_fragments(CAMERA, 2)  # B has stored the GOP that spans the window's end
    assert not audit(b.url, TOKEN, CAMERA, str(start), str(end)).lost  # B never lost the feed


def test_backfill_resumes_after_either_side_is_killed_mid_job(camera, make_recorder, tmp_path):
    a, b = pair(make_recorder, camera, max_rate="120KB")
    start = time.time()
    time.sleep(2)
    a.proc.kill()
    time.sleep(20)

    def job_in_progress():
        jobs = [j for j in a.jobs() if j["state"] == "running" and j["stored_fragments"] >= 2]
        return jobs and jobs[0]["fragments_done"] < jobs[0]["fragments_total"] - 3 and jobs[0]

    a.start()
    first = wait_for(job_in_progress, 60, "A's backfill job to be part-way")
    a.proc.kill()  # target killed mid-job
    a.start()
    a.wait_fragments(CAMERA, 3)  # A records live again, so killing B now loses nothing both lack
    wait_for(job_in_progress, 60, "the job to resume after A's restart")
    resumed = next(j for j in a.jobs() if j["id"] == first["id"])
    assert resumed["fragments_done"] >= first["fragments_done"]
    b.proc.kill()  # source killed mid-job
    wait_for(
        lambda: any(j["state"] == "waiting" and j["errors"] for j in a.jobs()),
        60,
        "the job to wait for its source, with the error shown",
    )
    time.sleep(3)
    b.start()
    a.wait_fragments(CAMERA, 3)
    end = time.time() - 1
    report = settled(a, start, end)
    assert report.missing == [] and report.duplicates == [] and report.gaps == 0, report
    assert assert_exported_decodes(a, start, end, tmp_path) >= report.frames - 25


def test_backfill_after_five_outages_in_a_row(camera, make_recorder):
    a, _b = pair(make_recorder, camera)
    start = time.time()
    time.sleep(2)
    for _ in range(5):
        a.proc.kill()
        time.sleep(4)
        a.start()
        a.wait_fragments(CAMERA, 2)
    end = time.time() - 1
    report = settled(a, start, end)
    assert report.missing == [] and report.duplicates == [] and report.gaps == 0, report
    assert len(a.jobs()) >= 5


def test_backfill_from_a_substream_plays_and_exports(make_sim, tmp_path, make_recorder):
    sim = make_sim(cameras=1, substream="320x180@10")
    b = make_recorder("rec-b", [{"id": "lobby-sub", "url": sim.url("cam0-sub")}]).start()
    partner = {"id": "rec-b", "url": b.url, "token": TOKEN, "camera": "lobby-sub"}
    cams = [{"id": CAMERA, "url": sim.url("cam0"), "partners": [partner]}]
    a = make_recorder("rec-a", cams, {"backfill": {"scan_interval": "5s"}}).start()
    a.wait_fragments(CAMERA, 3)
    start, end = outage(a, 12)

    def filled():
        open_jobs = [j for j in a.jobs() if j["state"] not in ("done", "partial")]
        return a.jobs() and not open_jobs and audit(a.url, TOKEN, CAMERA, str(start), str(end)).gaps == 0

    wait_for(filled, 120, "the sub-stream backfill to close the gap")
    report = audit(a.url, TOKEN, CAMERA, str(start), str(end))
    assert set(report.streams) == {"cam0", "cam0-sub"}, report
    main, sub = report.streams["cam0"], report.streams["cam0-sub"]
    missing_main = sum(b - a + 1 for a, b in main.missing)
    assert missing_main >= 25 * 10 and sub.missing == [] and sub.duplicates == []
    assert sub.frames >= missing_main * 10 / 25 - 10  # the hole is filled at the sub-stream's rate
    playlist = a.api.get(f"/api/v1/cameras/{CAMERA}/playback.m3u8", params={"start": start, "end": end}).text
    assert playlist.count("#EXT-X-MAP") >= 3 and "#EXT-X-DISCONTINUITY" in playlist
    response = a.api.get(f"/api/v1/cameras/{CAMERA}/export.mp4", params={"start": start, "end": end})
    path = tmp_path / "mixed.mp4"
    path.write_bytes(response.content)
    sizes, last = set(), None
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            assert last is None or frame.pts > last
            last = frame.pts
            sizes.add((frame.width, frame.height))
    assert sizes == {(640, 360), (320, 180)}


def test_corrupt_fragment_on_the_source_is_refused_and_reported(camera, make_recorder):
    # rec-b's scrubber off: it would find the damage first and quarantine it, and then rec-a never
    # asks for that fragment (test_archive_integrity covers the scrubber).
    a, b = pair(make_recorder, camera, b_section={"scrub_rate": 0})
    start = time.time()
    time.sleep(1)
    a.proc.kill()
    time.sleep(8)
    b.wait_fragments(CAMERA, 1)
    rows = b.api.get(f"/api/v1/cameras/{CAMERA}/fragments", params={"start": start + 2, "end": start + 6}).json()
    victim = rows["fragments"][1]
    chunk = next(b.storage.glob("cameras/lobby/*.glc"))
    data = bytearray(chunk.read_bytes())
    at = data.find(b'"start_us":%d' % victim["start_us"])
    assert at > 0
    data[at + 4000] ^= 0xFF  # inside that fragment's payload, after its record header
    chunk.write_bytes(bytes(data))
    a.start()
    a.wait_fragments(CAMERA, 3)
    wait_for(lambda: any(j["state"] == "partial" for j in a.jobs()), 60, "the job to end as partial")
    job = next(j for j in a.jobs() if j["state"] == "partial")
    assert job["refused"] == 1 and any("checksum" in e for e in job["errors"]), job
    stored = a.api.get(f"/api/v1/cameras/{CAMERA}/fragments", params={"start": start, "end": time.time()}).json()
    assert all(f["sha256"] != victim["sha256"] for f in stored["fragments"])
    assert "gapless_backfill_fragments_refused_total 1.0" in a.api.get("/metrics").text
    report = audit(a.url, TOKEN, CAMERA, str(start + 2), str(start + 8))
    assert len(report.missing) == 1, report  # exactly the refused fragment's frames, nothing else
    assert report.missing[0][1] - report.missing[0][0] + 1 == victim["frames"]


def test_manual_backfill_with_the_cli_and_audit_compare(camera, make_recorder):
    cams = [{"id": CAMERA, "url": camera.url("cam0")}]
    b = make_recorder("rec-b", cams).start()
    a = make_recorder("rec-a", cams).start()  # no partners: nothing happens on its own
    a.wait_fragments(CAMERA, 2)
    start, end = outage(a, 6, before=2.5)  # A stores at least one whole GOP (1 s) after `start` first
    window = ["--camera", CAMERA, "--start", f"{start:.3f}", "--end", f"{end:.3f}"]
    env = {**os.environ, "GAPLESS_API_TOKEN": TOKEN}
    compare = [*GAPLESS, "audit", "--recorder", a.url, "--compare", b.url, *window, "--json"]
    before = subprocess.run(compare, capture_output=True, text=True, env=env, timeout=120)
    assert before.returncode == 1, before.stderr
    lacking = json.loads(before.stdout)
    assert lacking["only_in_b"] and sum(b - a + 1 for a, b in lacking["frames_only_in_b"]["cam0"]) >= 5 * 25

    edge = audit(a.url, TOKEN, CAMERA, str(start), str(start + 5))  # ends inside A's downtime
    assert edge.tail_is_hole and edge.uncovered_tail_s > 1 and edge.gaps == 1 and edge.lost, edge

    backfill = [*GAPLESS, "backfill", "--target", a.url, "--source", b.url, *window]
    done = subprocess.run(backfill, capture_output=True, text=True, env=env, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "done" in done.stdout
    after = subprocess.run(compare, capture_output=True, text=True, env=env, timeout=120)
    assert after.returncode == 0, after.stdout
    assert not audit(a.url, TOKEN, CAMERA, str(start), str(end)).lost
    job = a.jobs()[0]
    assert job["source"] == b.url.removeprefix("http://") and "source_token" not in job


def test_backfill_api_refuses_bad_requests(camera, make_recorder):
    a = make_recorder("rec-a", [{"id": CAMERA, "url": camera.url("cam0")}]).start()
    good = {"camera": CAMERA, "source": "http://127.0.0.1:9", "start": "1", "end": "2", "source_token": TOKEN}
    cases = [
        ({**good, "camera": "nope"}, 404, "no camera"),
        ({**good, "source": "rec-z", "source_token": None}, 400, "not a configured partner"),
        ({**good, "start": "3"}, 400, "end must be after start"),
        ({**good, "start": "yesterday"}, 400, "invalid time"),
        ({**good, "extra": 1}, 400, "extra"),
        ({**good, "source_token": "short"}, 400, "source_token"),
    ]
    for body, status, message in cases:
        response = a.api.post("/api/v1/backfill", json=body)
        assert response.status_code == status and message in response.text, (body, response.text)
    assert a.api.post("/api/v1/backfill", content=b"{not json").status_code == 400
    assert a.api.get("/api/v1/backfill/../../etc").status_code == 404
    assert a.api.get("/api/v1/backfill", params={"state": "bogus"}).status_code == 400
    assert httpx.post(f"{a.url}/api/v1/backfill", json=good).status_code == 401
    created = a.api.post("/api/v1/backfill", json=good)  # a source that does not answer: waits, visible
    assert created.status_code == 201
    job_id = created.json()["id"]
    wait_for(lambda: a.api.get(f"/api/v1/backfill/{job_id}").json()["attempts"] >= 2, 30, "two failed attempts")
    job = a.api.get(f"/api/v1/backfill/{job_id}").json()
    assert job["state"] in ("waiting", "running") and "ConnectError" in job["errors"][-1]
    assert TOKEN not in a.log.read_text()
