"""What real streams do to camera time, with two recorders of one simulated camera (real RTSP, real
processes): for every fault, both archives give each frame (its SEI frame number) the same time, a
time true to when it was captured, never overlapping, with no frame missing; the export decodes
with strictly increasing timestamps and coverage shows no false gap."""

from __future__ import annotations

import itertools
import json
import subprocess
import time

import pytest
from conftest import GAPLESS, TOKEN, exported, wait_for, wait_new_fragments

from gapless.audit.audit import audit
from gapless.ingest.clock import ARRIVAL_BOUND_US
from gapless.media.fmp4 import parse_fragment, ticks_to_us
from gapless.media.h264 import find_stamp, split_avcc

#: A frame's time against its true capture time: the clock's bound, plus the reader's 0.5 s wait
#: and the simulator's scheduling.
TRUE_SLACK_US = ARRIVAL_BOUND_US + 700_000


def archive(rec, camera: str) -> tuple[list[dict], dict[int, int]]:
    """The fragments a recorder holds of the camera, and each frame number's presentation time."""
    now = time.time()
    rows = rec.api.get(f"/api/v1/cameras/{camera}/fragments", params={"start": now - 3600, "end": now + 60})
    rows.raise_for_status()
    fragments = rows.json()["fragments"]
    frames: dict[int, int] = {}
    for meta in fragments:
        payload = rec.api.get(f"/api/v1/fragments/{meta['id']}").content
        for sample in parse_fragment(payload):
            number = find_stamp(split_avcc(sample.data)).frame
            assert number not in frames, f"frame {number} stored twice"
            frames[number] = ticks_to_us(sample.dts + sample.cts_offset)
    return fragments, frames


def check_archive(rec, camera: str, sim_start_us: int, frame_us: int, gaps: int = 0) -> dict[int, int]:
    fragments, frames = archive(rec, camera)
    assert fragments, f"{rec.url} recorded nothing"
    for a, b in itertools.pairwise(sorted(fragments, key=lambda f: f["start_us"])):
        assert b["start_us"] >= a["end_us"], f"fragments overlap: {a} and {b}"
        assert a["end_us"] - a["start_us"] >= a["frames"] * frame_us // 2, f"fragment shorter than its frames: {a}"
    numbers = sorted(frames)
    missing = sorted(set(range(numbers[0], numbers[-1] + 1)) - set(numbers))
    assert not missing, f"frames missing: {missing[:10]}"
    for a, b in itertools.pairwise(numbers):
        assert frames[b] > frames[a], f"frame {b} is not later than frame {a}"
    for number in numbers:
        true_us = sim_start_us + number * frame_us
        assert abs(frames[number] - true_us) <= TRUE_SLACK_US, f"frame {number} is {frames[number] - true_us} µs off"
    coverage = rec.api.get(
        f"/api/v1/cameras/{camera}/coverage",
        params={"start": fragments[0]["start_us"] / 1e6, "end": fragments[-1]["end_us"] / 1e6},
    ).json()["intervals"]
    assert len(coverage) == 1 + gaps, f"coverage has {len(coverage) - 1} gaps, expected {gaps}: {coverage}"
    return frames


def check_export(rec, camera: str, frames: dict[int, int]) -> None:
    numbers = sorted(frames)
    pts, decoded = exported(rec, camera, frames[numbers[0]], frames[numbers[-1]] + 20_000)
    assert len(set(pts)) == len(pts), "two frames share a presentation time"
    assert len(pts) >= len(numbers) - 1, (len(pts), len(numbers))
    assert decoded == len(pts)


SENDER_REPORTS = "sender report"
CLOCK_OFF = "estimated: camera clock off by"
FAULTS = [
    # (name, simulator options, control call during recording, tolerance between recorders µs,
    #  how health says the camera's frames are timed at the end, gaps in time (no frame missing))
    ("rtp-jump-back", (), "/rtp-jump?seconds=-30", 0, SENDER_REPORTS, 0),
    ("rtp-jump-forward", (), "/rtp-jump?seconds=3600", 0, SENDER_REPORTS, 0),
    ("ssrc-change", (), "/ssrc-change", 0, SENDER_REPORTS, 0),
    ("seq-jump", (), "/seq-jump?packets=20000", 0, SENDER_REPORTS, 0),
    ("clock-step-back", (), "/clock-step?seconds=-0.8", 0, SENDER_REPORTS, 0),
    # followed: the camera's clock jumped, so its time shows a gap though no frame is missing
    ("clock-step-forward", (), "/clock-step?seconds=1.5", 0, SENDER_REPORTS, 1),
    # beyond the arrival bound: the clock is now wrong, so it is timed by arrival, seamlessly
    ("clock-step-back-5s", (), "/clock-step?seconds=-5", 0, CLOCK_OFF, 0),
    # timed by arrival: rec-a, started after rec-b, takes rec-b's time (ingest/partner_time.py)
    ("no-sender-reports", ("--sr-interval", "0"), None, 0, "estimated: no sender reports", 0),
    ("sender-reports-every-20s", ("--sr-interval", "20"), None, 0, SENDER_REPORTS, 0),
    ("clock-1970", ("--clock-error", "-1.7e9"), None, 0, CLOCK_OFF, 0),
    ("b-frames", ("--bframes", "2"), None, 0, SENDER_REPORTS, 0),
]


@pytest.mark.parametrize(
    ("name", "options", "fault", "tolerance_us", "source", "gaps"), FAULTS, ids=[f[0] for f in FAULTS]
)
def test_two_recorders_agree_on_every_frame_through_the_fault(
    make_sim, make_recorder, name, options, fault, tolerance_us, source, gaps
):
    sim = make_sim(cameras=1, gop=25, extra=options)
    cameras = [{"id": "cam", "url": sim.url("cam0")}]
    b = make_recorder("rec-b", cameras).start()
    backfill = {"partners": [{"id": "rec-b", "url": b.url, "token": TOKEN}], "backfill": {"scan_interval": "5s"}}
    recorders = [make_recorder("rec-a", cameras, backfill).start(), b]
    wait_new_fragments([(rec, "cam") for rec in recorders], 3)
    if fault:
        assert sim.control.post(f"/cameras/cam0{fault}").status_code == 200
    wait_new_fragments([(rec, "cam") for rec in recorders], 8, timeout=120)
    described = sim.camera("cam0")
    frame_us = 1_000_000 // described["fps"]
    archives = [check_archive(rec, "cam", described["start_us"], frame_us, gaps) for rec in recorders]
    common = sorted(set(archives[0]) & set(archives[1]))
    assert len(common) >= 150
    worst = max(abs(archives[0][n] - archives[1][n]) for n in common)
    assert worst <= tolerance_us, f"the recorders disagree by up to {worst} µs on one frame"
    check_export(recorders[0], "cam", archives[0])
    numbers = sorted(archives[0])
    window = (str(archives[0][numbers[0]] / 1e6), str(archives[0][numbers[-1]] / 1e6))
    command = [*GAPLESS, "audit", "--recorder", recorders[0].url, "--token", TOKEN, "--camera", "cam"]
    command += ["--start", window[0], "--end", window[1], "--json"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    audited = json.loads(result.stdout)
    assert not (audited["time_problems"] or audited["missing"] or audited["duplicates"]), audited
    assert audited["gaps"] == gaps and result.returncode == (1 if gaps else 0), audited
    health = recorders[0].health()["cameras"]["cam"]
    assert source in health["time_source"], health  # rec-a's own evidence, when it took rec-b's time
    if fault:
        assert health["clock_discontinuities"] >= 1, health
    if name == "clock-1970":
        assert health["camera_clock_offset_ms"] < -1.6e12, health
    kill_restart_backfill(recorders[0], b, archives[0][numbers[0]] / 1e6)


def kill_restart_backfill(a, b, since: float) -> None:
    """Across the fault: rec-a is killed and restarted; backfill from rec-b leaves no frame missing,
    none twice, and the restarted rec-a gives every frame the time rec-b gives it (after a clock step
    back, or for a camera timed by arrival, only because it takes rec-b's time)."""
    a.proc.kill()
    time.sleep(3)
    a.start()
    a.wait_fragments("cam", 3)
    b.wait_fragments("cam", 1)
    _fragments, after_a = archive(a, "cam")
    _fragments, after_b = archive(b, "cam")
    common = set(after_a) & set(after_b)
    disagree = {n: after_a[n] - after_b[n] for n in common if after_a[n] != after_b[n]}
    assert not disagree, f"after the restart the recorders disagree on {len(disagree)} frames: {disagree}"
    until = time.time() - 2
    last: list = []

    def clean() -> bool:
        last[:] = [audit(a.url, TOKEN, "cam", str(since), str(until))]
        report = last[0]
        return not (report.missing or report.duplicates or report.time_problems or report.bad_checksums)

    try:
        wait_for(clean, 120, "backfill to close rec-a's gap")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last audit: {last}") from None


def test_a_1970_camera_keeps_its_footage_under_age_retention(make_sim, make_recorder):
    """Retention ages footage by wall-clock time, whatever the camera's clock says."""
    sim = make_sim(cameras=1, gop=25, extra=("--clock-error", "-1.7e9"))
    rec = make_recorder(
        "rec-a",
        [{"id": "cam", "url": sim.url("cam0")}],
        retention={"max_age": "1d"},
        chunk={"max_duration": "3s"},
    ).start()
    rec.wait_fragments("cam", 12)
    time.sleep(11)  # one retention pass, which runs every 10 s
    fragments, frames = archive(rec, "cam")
    numbers = sorted(frames)
    assert numbers[-1] - numbers[0] + 1 == len(numbers) >= 12 * 25, "retention deleted footage"
    wall = time.time()
    assert abs(fragments[-1]["end_us"] / 1e6 - wall) < 10, "footage is not found at wall-clock time"
    check_export(rec, "cam", frames)
