"""Camera time shared with partners: a session that starts while a partner records the same camera
takes its time from the partner, matched by a keyframe both received (its bytes' SHA-256).

Sender reports make two recorders agree on a frame's time, but not always: a camera without them
(or with a wrong clock) is timed by each recorder's own arrival estimate (tens of milliseconds
apart), and after a camera's clock stepped back the recorders that saw the step continue their
earlier time while a recorder that connects later follows the camera's new clock. Either way a
restarted recorder's archive would not line up with its partner's, and backfill, which matches
frames by time, could repeat or skip frames at the edge of what it copies.

So at the start of a session, before its first clock segment settles, the ingest thread asks each
partner for the times it gave its recent keyframes (`GET /api/v1/cameras/{id}/keyframes`), and the
first keyframe both hold fixes the segment's time to the partner's (ingest/clock.py `settle`); of
keyframes with equal bytes (a restarted encoder repeats its first one), the one timed closest to our
arrival.
The wait is bounded (PARTNER_WAIT_S; frames are held meanwhile, never dropped), ends at once when
no partner is reachable or records the camera, and when a partner has moved past our first
keyframe without holding it (a different stream: a sub-stream, another encoder).
"""

from __future__ import annotations

import collections
import hashlib
import logging
import threading
import time
from dataclasses import dataclass, field

import httpx
from pydantic import BaseModel

from gapless.config.recorder import PartnerLink
from gapless.ingest.clock import Segment

log = logging.getLogger("gapless.partner_time")

#: Keyframes remembered per camera (a few minutes of GOPs): what a partner can match against.
KEYFRAME_MEMORY = 256
#: The longest a session waits for a partner's time before settling on its own evidence.
PARTNER_WAIT_S = 15.0
#: Each partner request's timeout; and how often a waiting session asks again.
PARTNER_TIMEOUT_S = 2.0
ASK_INTERVAL_S = 0.5
#: A partner whose newest keyframe is this far past our first one would hold it if it had the stream.
PASSED_US = 2_500_000
#: Partners are asked only for keyframes timed this close to our first keyframe's arrival or later.
LOOKBACK_US = 3_000_000


class KeyframeTime(BaseModel):
    sha256: str
    time_us: int  # presentation time (camera time, µs) the recorder gave this keyframe


class KeyframeTimes(BaseModel):
    """`GET /api/v1/cameras/{id}/keyframes`: what a partner needs to take this recorder's time."""

    camera: str
    pending: bool  # its newest keyframes are not timed yet (a session or a clock segment is starting): ask again
    keyframes: list[KeyframeTime]


class KeyframeLog:
    """The recent keyframes a camera's ingest stored, with their times (appended by the stream
    reader's thread, read by the API's)."""

    def __init__(self) -> None:
        self._entries: collections.deque[KeyframeTime] = collections.deque(maxlen=KEYFRAME_MEMORY)

    def add(self, data: bytes, time_us: int) -> None:
        self._entries.append(KeyframeTime(sha256=hashlib.sha256(data).hexdigest(), time_us=time_us))

    def recent(self, since_us: int = 0) -> list[KeyframeTime]:
        return [kf for kf in list(self._entries) if kf.time_us >= since_us]


@dataclass
class OwnKeyframe:
    sha256: str
    segment: Segment
    media_us: int
    arrival_us: int


@dataclass
class PartnerAnswer:
    """How the wait ended: a partner's base for the segment, or why there is none."""

    segment: Segment | None
    base_us: int | None
    partner: str
    reason: str = ""


@dataclass
class PartnerWait:
    """One session's wait for a partner's time (asked from the ingest thread, applied in the reader's)."""

    partners: list[PartnerLink]
    own: list[OwnKeyframe] = field(default_factory=list)
    answer: PartnerAnswer | None = None
    untimed_match: PartnerAnswer | None = None  # the best match while the partner was still timing keyframes
    started: float = field(default_factory=time.monotonic)
    first_keyframe_at: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def waiting(self) -> bool:
        return self.answer is None

    def keyframe(self, data: bytes, segment: Segment, media_us: int, arrival_us: int) -> None:
        """One of our keyframes while the first segment waits (reader thread)."""
        with self._lock:
            self.own.append(OwnKeyframe(hashlib.sha256(data).hexdigest(), segment, media_us, arrival_us))
            if self.first_keyframe_at is None:
                self.first_keyframe_at = time.monotonic()

    def ask(self) -> None:
        """Ask every partner once; settle the answer if one matches or none can (ingest thread)."""
        if self.answer is not None:
            return
        with self._lock:
            own = list(self.own)
        if not own:
            if time.monotonic() - self.started > PARTNER_WAIT_S:
                self.answer = PartnerAnswer(None, None, "", "no keyframe to match")
            return
        unanswered = []
        still_possible = False
        by_sha = collections.defaultdict(list)
        for mine in own:
            by_sha[mine.sha256].append(mine)
        for partner in self.partners:
            try:
                times = _fetch(partner, own[0].arrival_us - LOOKBACK_US)
            except (httpx.HTTPError, ValueError) as exc:
                unanswered.append(f"{partner.id}: {exc}")
                continue
            matches = [(kf, mine) for kf in times.keyframes for mine in by_sha.get(kf.sha256, [])]
            if matches:
                # A camera can send one keyframe's bytes twice: a restarted encoder of a steady
                # scene (gst-rtsp-server restarts a shared stream when a client PLAYs). Of equal
                # keyframes, the pair timed closest to our arrival is the same frame; while the
                # partner is still timing its newest ones, the same frame may not be listed yet.
                kf, mine = min(matches, key=lambda match: abs(match[0].time_us - match[1].arrival_us))
                best = PartnerAnswer(mine.segment, kf.time_us - mine.media_us, partner.id)
                if not times.pending:
                    self.answer = best
                    return
                self.untimed_match = best
            # It may yet hold our keyframe: it is settling its own time, or has not got this far.
            newest = max((kf.time_us for kf in times.keyframes), default=None)
            if times.pending or (newest is not None and newest < own[0].arrival_us + PASSED_US):
                still_possible = True
        assert self.first_keyframe_at is not None
        if not still_possible or time.monotonic() - self.first_keyframe_at > PARTNER_WAIT_S:
            reason = "; ".join(unanswered) or "no partner holds this stream's keyframes"
            self.answer = self.untimed_match or PartnerAnswer(None, None, "", reason)


def _fetch(partner: PartnerLink, since_us: int) -> KeyframeTimes:
    response = httpx.get(
        f"{partner.url.rstrip('/')}/api/v1/cameras/{partner.camera}/keyframes",
        params={"since_us": since_us},
        headers={"Authorization": f"Bearer {partner.token}"},
        timeout=PARTNER_TIMEOUT_S,
    )
    if response.status_code == 404:  # the partner does not record this camera (now)
        return KeyframeTimes(camera=partner.camera, pending=False, keyframes=[])
    response.raise_for_status()
    return KeyframeTimes.model_validate_json(response.content)
