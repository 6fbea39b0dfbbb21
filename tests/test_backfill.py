"""Backfill: a recorder that was down copies what its partner recorded, frame-exact."""

from __future__ import annotations

import time

import av
import pytest
from conftest import TOKEN, Sim, wait_for

from gapless.audit.audit import audit

CAMERA = "lobby"


@pytest.fixture
def camera(tmp_path):
    simulator = Sim(tmp_path, cameras=1)
    yield simulator
    simulator.close()


def pair(make_recorder, sim: Sim, **backfill):
    cams = [{"id": CAMERA, "url": sim.url("cam0")}]
    b = make_recorder("rec-b", cams).start()
    extra = {
        "partners": [{"id": "rec-b", "url": b.url, "token": TOKEN}],
        "backfill": {"scan_interval": "5s", **backfill},
    }
    a = make_recorder("rec-a", cams, extra).start()
    a.wait_fragments(CAMERA, 3)
    b.wait_fragments(CAMERA, 1)
    return a, b


def settled(a, start: float, end: float):
    """The audit of A once no backfill job is open (bounded wait)."""

    last: list = []

    def done():
        open_jobs = [j for j in a.jobs() if j["state"] not in ("done", "partial")]
        last[:] = [audit(a.url, TOKEN, CAMERA, str(start), str(end)), a.jobs()]
        return not open_jobs and not last[0].lost

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
    start = time.time()
    time.sleep(2)
    a.proc.kill()
    time.sleep(20)
    a.start()
    a.wait_fragments(CAMERA, 3)
    end = time.time() - 1
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
    a.proc.resume()
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
