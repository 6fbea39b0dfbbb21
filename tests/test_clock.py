"""Camera time per clock segment (ingest/clock.py), driven frame by frame as a camera would send:
what real streams do to the NTP/RTP mapping, and what time each frame gets."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

import pytest

from gapless.ingest.clock import ARRIVAL_BOUND_US, SETTLE_WAIT_US, SessionClock

NOW_US = 1_780_000_000_000_000
FRAME_US = 40_000
TICKS = 3600


@dataclass
class Camera:
    """A 25 fps camera: true capture times, its RTP clock, its own (possibly wrong) wall clock."""

    ssrc: int = 0x1234
    rtp_base: int = 123_456
    clock_error_us: int = 0
    report_every: int | None = 25  # frames between sender reports; None: no reports
    latency_us: int = 30_000
    first_report_error_us: int = 0
    next_report_error_us: int = 0  # added to the next report only
    frame: int = 0
    rtp_offset: int = 0  # added to the RTP timestamps from now on (a restarted timeline)
    reports_sent: int = 0
    rng: random.Random = field(default_factory=lambda: random.Random(5))

    def true_us(self, n: int) -> int:
        return NOW_US + n * FRAME_US

    def rtp(self, n: int) -> int:
        return (self.rtp_base + self.rtp_offset + n * TICKS) & 0xFFFFFFFF

    def send(self, clock: SessionClock, count: int) -> list[tuple[int, int, object, int]]:
        """(frame number, true time, segment, media µs) of each frame sent."""
        out = []
        for _ in range(count):
            n = self.frame
            if self.report_every and n % self.report_every == 0:
                error = self.first_report_error_us if self.reports_sent == 0 else 0
                error, self.next_report_error_us = error + self.next_report_error_us, 0
                clock.report(self.ssrc, self.true_us(n) + self.clock_error_us + error, self.rtp(n))
                self.reports_sent += 1
            # the recorder reads every 0.5 s: a frame waits up to that long in the socket
            arrival = self.true_us(n) + self.latency_us + self.rng.randrange(0, 500_000)
            segment, media = clock.frame(self.ssrc, self.rtp(n), False, arrival)
            out.append((n, self.true_us(n), segment, media))
            self.frame += 1
        return out


def times(clock: SessionClock, sent) -> list[tuple[int, int, int]]:
    """(frame number, true time, stamped time) once every segment has settled."""
    for _, _, segment, _ in sent:
        clock.settle(segment)
    return [(n, true, segment.base_us + media) for n, true, segment, media in sent]


def test_two_agreeing_sender_reports_give_every_frame_its_true_time():
    clock, camera = SessionClock(90_000), Camera()
    sent = camera.send(clock, 100)
    assert sent[0][2].base_us is not None, "settles as soon as two reports agree"
    assert all(stamped == true for _, true, stamped in times(clock, sent))
    assert clock.segment.source == "sender reports"


def test_a_wrong_first_report_is_never_used():
    clock, camera = SessionClock(90_000), Camera(first_report_error_us=1_500_000)
    sent = camera.send(clock, 100)
    assert all(stamped == true for _, true, stamped in times(clock, sent))


def test_without_sender_reports_frames_are_timed_by_arrival_within_the_bound():
    clock, camera = SessionClock(90_000), Camera(report_every=None)
    sent = camera.send(clock, 400)
    stamped = times(clock, sent)
    assert sent[0][2].source == "estimated: no sender reports"
    assert sent[0][2].base_us is not None, "settled after the settle wait, not at the end"
    assert all(abs(s - true) <= ARRIVAL_BOUND_US for _, true, s in stamped)
    steps = {b[2] - a[2] for a, b in itertools.pairwise(stamped)}
    assert steps == {FRAME_US}, "never compressed, never stretched"


@pytest.mark.parametrize("error_us", [-56 * 365 * 86_400_000_000, 3_600_000_000, -5_000_000])
def test_a_wrong_camera_clock_is_reported_and_frames_are_found_by_wall_clock(error_us):
    clock, camera = SessionClock(90_000), Camera(clock_error_us=error_us)
    sent = camera.send(clock, 100)
    stamped = times(clock, sent)
    segment = sent[0][2]
    assert segment.source.startswith("estimated: camera clock off by")
    assert abs(segment.camera_offset_us - error_us) < 600_000
    assert all(abs(s - true) <= ARRIVAL_BOUND_US for _, true, s in stamped)


def test_a_timestamp_restart_opens_a_segment_and_time_stays_true():
    """gst-rtsp-server restarts a shared stream's RTP timestamps when another client PLAYs."""
    clock, camera = SessionClock(90_000), Camera()
    before = camera.send(clock, 60)
    camera.rtp_offset = -camera.frame * TICKS - 5000  # back to about where it began
    after = camera.send(clock, 120)
    stamped = times(clock, before + after)
    assert clock.breaks == {"RTP timestamp jump back": 1}
    assert before[-1][2] is not after[0][2]
    assert all(s == true for _, true, s in stamped)


def test_after_a_timestamp_restart_one_report_times_the_frames_when_the_clock_ran_on():
    """Live waits for the frames of a segment until it is timed: after a restart within a session,
    a report that finds the camera's clock where it was (relative to arrival) is taken at once,
    not 10 s later (this camera reports every 10 s after the restart)."""
    clock, camera = SessionClock(90_000), Camera()
    before = camera.send(clock, 240)  # reports every second: confirmed
    camera.rtp_offset, camera.report_every = -camera.frame * TICKS - 5000, 250  # next: in 0.4 s, then 10 s on
    after = camera.send(clock, 50)
    segment = after[0][2]
    assert segment is not before[-1][2] and segment.base_us is not None, "timed before the second report"
    assert segment.source == "sender report (unconfirmed)"
    assert all(s == true for _, true, s in times(clock, before + after))


def test_after_a_timestamp_restart_a_report_that_moved_the_clock_waits_for_a_second():
    clock, camera = SessionClock(90_000), Camera()
    before = camera.send(clock, 240)
    camera.rtp_offset, camera.report_every = -camera.frame * TICKS - 5000, 125  # next: in 0.4 s, then every 5 s
    camera.next_report_error_us = 1_500_000  # the first report of the new timeline is wrong
    waiting = camera.send(clock, 100)
    assert waiting[-1][2].base_us is None, "one report that moved the clock is not taken alone"
    after = camera.send(clock, 200)  # two more reports, which agree
    assert after[-1][2] is waiting[0][2]
    assert all(s == true for _, true, s in times(clock, before + waiting + after))


def test_a_keyframe_a_little_back_in_time_is_a_restart_not_a_b_frame():
    clock = SessionClock(90_000)
    for n in range(13):
        clock.frame(1, 1000 + n * TICKS, False, NOW_US + n * FRAME_US, keyframe=n == 0)
    segment, _ = clock.frame(1, 1000 + 2 * TICKS, False, NOW_US + 13 * FRAME_US, keyframe=True)
    assert clock.breaks == {"RTP timestamp jump back": 1} and segment.number == 2
    segment, _ = clock.frame(1, 1000 + 1 * TICKS, False, NOW_US + 14 * FRAME_US)
    assert segment.number == 2, "a B-frame a frame back is not a restart"


def test_a_forward_timestamp_jump_opens_a_segment():
    clock, camera = SessionClock(90_000), Camera()
    before = camera.send(clock, 60)
    camera.rtp_offset = 90_000 * 3600  # an hour ahead
    after = camera.send(clock, 120)
    assert clock.breaks == {"RTP timestamp jump forward": 1}
    assert all(s == true for _, true, s in times(clock, before + after))


def test_an_ssrc_change_opens_a_segment():
    clock, camera = SessionClock(90_000), Camera()
    before = camera.send(clock, 60)
    camera.ssrc, camera.rtp_offset = 0x9999, 77_777
    after = camera.send(clock, 120)
    assert clock.breaks == {"SSRC change": 1}
    assert all(s == true for _, true, s in times(clock, before + after))


def test_a_camera_clock_step_back_within_a_session_continues_where_the_old_segment_ended():
    """NTP steps the camera's clock back; the RTP timeline goes on, so no frame is missing: time goes on
    seamlessly (no overlap), and the step is counted."""
    clock, camera = SessionClock(90_000), Camera()
    before = camera.send(clock, 100)
    camera.clock_error_us = -800_000
    after = camera.send(clock, 150)
    stamped = times(clock, before + after)
    assert clock.breaks == {"sender report step": 1}
    assert {b[2] - a[2] for a, b in itertools.pairwise(stamped)} == {FRAME_US}
    assert after[-1][2].source == "sender reports"
    assert clock.rejected_reports == 1  # the first report of the step, until the second confirmed it


def test_a_camera_clock_step_forward_is_followed():
    """Camera time is what recorders connecting later agree on: the step shows as a gap in time."""
    clock, camera = SessionClock(90_000), Camera()
    before = camera.send(clock, 100)
    camera.clock_error_us = 700_000
    after = camera.send(clock, 150)
    stamped = times(clock, before + after)
    assert clock.breaks == {"sender report step": 1}
    steps = [b[2] - a[2] for a, b in itertools.pairwise(stamped)]
    assert sorted(set(steps)) == [FRAME_US, FRAME_US + 700_000] and steps.count(FRAME_US + 700_000) == 1
    assert all(s == true + 700_000 for _, true, s in stamped[-100:])


def test_reports_arriving_late_replace_the_estimate_in_a_new_segment():
    clock, camera = SessionClock(90_000), Camera(report_every=None)
    before = camera.send(clock, SETTLE_WAIT_US // FRAME_US + 50)
    camera.report_every = 25
    after = camera.send(clock, 100)
    assert clock.breaks == {"sender reports arrived": 1}
    assert after[-1][2].source == "sender reports"
    stamped = times(clock, before + after)
    # The estimate was late by the latency; the reports' time is earlier, so the new segment is moved
    # forward onto the end of the estimated one (never overlapping it), by less than the bound.
    shift = {s - true for _, true, s in stamped[-50:]}
    assert len(shift) == 1 and 0 <= shift.pop() < 600_000
    assert all(b[2] > a[2] for a, b in itertools.pairwise(stamped))


def test_a_new_session_never_starts_before_what_was_recorded():
    clock, camera = SessionClock(90_000, floor_us=NOW_US + 200_000), Camera()
    sent = camera.send(clock, 50)
    assert times(clock, sent)[0][2] >= NOW_US + 200_000


def test_footage_recorded_in_the_future_does_not_drag_new_footage_there():
    clock, camera = SessionClock(90_000, floor_us=NOW_US + 3_600_000_000), Camera()
    sent = camera.send(clock, 50)
    assert all(s == true for _, true, s in times(clock, sent))
