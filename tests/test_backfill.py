"""Backfill: a recorder that was down copies what its partner recorded, frame-exact."""

from __future__ import annotations

import signal
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
    extra = {"partners": [{"id": "rec-b", "url": b.url, "token": TOKEN}], "backfill": {"scan_interval": "5s", **backfill}}
    a = make_recorder("rec-a", cams, extra).start()
    a.wait_fragments(CAMERA, 3)
    b.wait_fragments(CAMERA, 1)
    return a, b


def settled(a, start: float, end: float):
    """The audit of A once no backfill job is open (bounded wait)."""

    def done():
        jobs = a.jobs()
        return jobs and all(j["state"] in ("done", "partial") for j in jobs) and not audit(a.url, TOKEN, CAMERA, str(start), str(end)).lost

    wait_for(done, 120, "backfill to close every gap")
    return audit(a.url, TOKEN, CAMERA, str(start), str(end))


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
    a, b = pair(make_recorder, camera)
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
