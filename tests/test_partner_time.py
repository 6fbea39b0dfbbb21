"""Camera time shared with partners (ingest/partner_time.py, and clock.py's settle with a
partner's base): a new session takes a partner's time for the keyframes both received, unless its
own sender reports agree anyway; a partner that cannot help ends the wait at once."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import threading

import pytest
from test_clock import FRAME_US, NOW_US, Camera

from gapless.config.recorder import PartnerLink
from gapless.ingest.clock import ARRIVAL_BOUND_US, SessionClock
from gapless.ingest.partner_time import PartnerWait

TOKEN = "partner-token-0123456789"


def test_a_held_clock_settles_on_the_partners_time_and_still_sees_a_clock_step():
    """After a clock step back, the partner kept its earlier time (0.8 s later than ours)."""
    camera = Camera()
    clock = SessionClock(90_000)
    clock.hold = True
    sent = camera.send(clock, 100)  # 4 s: two agreeing reports, yet no settling while held
    segment = sent[0][2]
    assert segment.base_us is None
    partner_base = NOW_US + 800_000 - sent[0][3]
    clock.settle(segment, (partner_base, "rec-b"))
    clock.hold = False
    assert segment.base_us == partner_base and segment.source.startswith("partner rec-b's time")
    assert segment.own_source == "sender reports"
    camera.send(clock, 100)  # reports that agree with the camera's clock: no break, no upgrade
    assert clock.segment is segment and not clock.breaks
    camera.clock_error_us = 1_500_000  # a real step of the camera's clock is still seen
    camera.send(clock, 75)
    assert clock.breaks == {"sender report step": 1}


def test_own_sender_reports_that_agree_with_the_partner_win():
    camera = Camera()
    clock = SessionClock(90_000)
    sent = camera.send(clock, 60)
    segment = sent[0][2]
    clock.settle(segment, (NOW_US + 5_000 - sent[0][3], "rec-b"))  # 5 ms: within AGREE_US
    assert segment.source == "sender reports" and segment.base_us == NOW_US - sent[0][3]


def test_a_partner_time_beyond_the_arrival_bound_is_not_taken():
    camera = Camera(report_every=None)
    clock = SessionClock(90_000)
    sent = camera.send(clock, 60)
    segment = sent[0][2]
    clock.settle(segment, (NOW_US + ARRIVAL_BOUND_US + 500_000, "rec-b"))
    assert segment.source == "estimated: no sender reports"
    assert abs(segment.base_us - NOW_US) < 600_000


class _Partner(http.server.BaseHTTPRequestHandler):
    answers: list[tuple[int, dict]] = []

    def do_GET(self) -> None:
        assert self.headers["Authorization"] == f"Bearer {TOKEN}"
        status, body = self.answers[0] if len(self.answers) == 1 else self.answers.pop(0)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_args) -> None:
        pass


@contextlib.contextmanager
def partner(*answers: tuple[int, dict]):
    _Partner.answers = list(answers)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Partner)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield PartnerLink("rec-b", f"http://127.0.0.1:{server.server_address[1]}", TOKEN, "cam")
    finally:
        server.shutdown()
        server.server_close()


def keyframes(pending: bool, *entries: tuple[bytes, int]) -> dict:
    return {
        "camera": "cam",
        "pending": pending,
        "keyframes": [{"sha256": hashlib.sha256(d).hexdigest(), "time_us": t} for d, t in entries],
    }


def test_the_first_keyframe_both_hold_gives_the_base():
    clock = SessionClock(90_000)
    segment, _ = clock.frame(1, 0, False, NOW_US)
    with partner((200, keyframes(True)), (200, keyframes(False, (b"other", NOW_US), (b"key", NOW_US + 1_000)))) as p:
        wait = PartnerWait([p])
        wait.keyframe(b"key", segment, 2 * FRAME_US, NOW_US + 2 * FRAME_US)
        wait.ask()
        assert wait.waiting  # the partner is settling its own time: ask again
        wait.ask()
    assert wait.answer is not None and wait.answer.segment is segment
    assert (wait.answer.base_us, wait.answer.partner) == (NOW_US + 1_000 - 2 * FRAME_US, "rec-b")


def test_of_keyframes_sent_twice_the_one_nearest_our_arrival_gives_the_base():
    """gst-rtsp-server restarts a shared stream when a client PLAYs: its encoder's first keyframe
    then has the bytes of the one it sent 0.8 s before. The new session's first keyframe arrived
    with the second: matched to the first, its time would be 0.8 s early for good."""
    clock = SessionClock(90_000)
    segment, _ = clock.frame(1, 0, False, NOW_US)
    earlier = (b"key", NOW_US - 800_000)
    # The partner saw the restart too: until it has timed its own new keyframe, it lists only the old one.
    with partner((200, keyframes(True, earlier)), (200, keyframes(False, earlier, (b"key", NOW_US + 3_000)))) as p:
        wait = PartnerWait([p])
        wait.keyframe(b"key", segment, 0, NOW_US + 40_000)
        wait.ask()
        assert wait.waiting
        wait.ask()
    assert wait.answer is not None and wait.answer.base_us == NOW_US + 3_000


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        ((404, {"error": "no camera"}), "no partner holds"),
        ((200, keyframes(False)), "no partner holds"),  # recording nothing yet, not settling either
        ((200, keyframes(False, (b"other", NOW_US + 3_000_000))), "no partner holds"),  # moved past ours
        ((500, {"error": "boom"}), "rec-b: Server error"),
    ],
)
def test_a_partner_that_cannot_help_ends_the_wait_at_once(answer, says):
    clock = SessionClock(90_000)
    segment, _ = clock.frame(1, 0, False, NOW_US)
    with partner(answer) as p:
        wait = PartnerWait([p])
        wait.keyframe(b"key", segment, 0, NOW_US)
        wait.ask()
    assert wait.answer is not None and wait.answer.base_us is None and says in wait.answer.reason


def test_an_unreachable_partner_ends_the_wait():
    clock = SessionClock(90_000)
    segment, _ = clock.frame(1, 0, False, NOW_US)
    wait = PartnerWait([PartnerLink("rec-b", "http://127.0.0.1:9", TOKEN, "cam")])
    wait.keyframe(b"key", segment, 0, NOW_US)
    wait.ask()
    assert wait.answer is not None and wait.answer.base_us is None and "rec-b:" in wait.answer.reason
