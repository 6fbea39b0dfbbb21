"""Camera time for one RTSP session, per clock segment.

A *clock segment* is a stretch of one stream whose RTP timestamps are one continuous timeline (one
SSRC, no jump) and whose mapping to time is one offset. Real streams break that: an encoder or a
restreamer restarts its timestamps (gst-rtsp-server restarts a shared stream's timestamps when
another client PLAYs from `npt=0`), the SSRC changes, sequence numbers jump, the camera's clock is
stepped by NTP. Each of those closes the segment and opens a new one; nothing is ever mapped across
a break.

A segment's time comes, in order of preference, from
1. **sender reports**: two RTCP sender reports that agree (within AGREE_US) on the NTP time of one
   RTP timestamp. Every recorder of the camera gets the same reports, so they give a frame the same
   time (what makes archives comparable and backfillable);
2. **one sender report** when the segment has waited SETTLE_WAIT_US of media for a second one;
3. **arrival** (estimated): the earliest arrival of the segment's frames relative to their RTP
   times, for cameras that send no reports and cameras whose clock is wrong.

A session's first segment may instead take a **partner's** time (ingest/partner_time.py): while
`hold` is set it does not settle on its own, and `settle(segment, partner=…)` fixes it to the time a
partner recording the same camera gave a keyframe both received, unless the segment's own sender
reports agree with that within AGREE_US anyway. Later reports are still checked against the
segment's own evidence, so a clock step is seen as before.

Whatever the source, a segment's time agrees with arrival within ARRIVAL_BOUND_US: a camera clock
further off (set to 1970, local time an hour off, a step) is reported in health and the segment is
timed by arrival instead, so footage is found and aged by wall-clock time. A segment never starts
before the end of what was already recorded (`floor_us`): one camera's archive never overlaps itself.
So a step of the camera's clock back within a session continues where the old segment ended; a
step forward is followed (a gap in time with no frame missing), because camera time is the only
time that recorders connecting later agree on. Frames are never stamped closer than their RTP
timestamps say (no compression).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger("gapless.clock")

#: Two sender reports agree when they put one RTP timestamp at times this close.
AGREE_US = 20_000
#: A confirmed report that disagrees with its segment by more than this is a clock step (if the next agrees).
STEP_US = 50_000
#: How much media a segment waits for a second sender report before it settles on less.
SETTLE_WAIT_US = 10_000_000
#: A segment's time never disagrees with the arrival of its frames by more than this.
ARRIVAL_BOUND_US = 2_000_000
#: RTP time may go back this far between frames (B-frames are sent out of presentation order).
REORDER_US = 1_000_000
#: RTP time may run ahead of arrival by this much between two frames before it counts as a jump.
FORWARD_SLACK_US = 1_500_000
#: A sequence number jump of more packets than this (or backwards) is a discontinuity, not loss.
SEQ_JUMP = 3000
PENDING = -(1 << 62)


@dataclass
class Report:
    camera_us: int
    ext_ts: int  # RTP timestamp, extended on the segment's timeline


@dataclass
class Segment:
    """One continuous timeline of a session. `base_us` is the time of RTP timestamp `first_ts`."""

    number: int
    ssrc: int
    first_ts: int  # extended timestamp of its first frame (PENDING until that frame arrives)
    clock_rate: int
    reason: str  # why it began
    last_ts: int = 0
    max_ts: int = 0
    last_arrival_us: int = 0
    min_lag_us: int | None = None  # earliest arrival relative to media time: the arrival estimate of base_us
    reports: list[Report] = field(default_factory=list)
    base_us: int | None = None
    source: str = ""  # sender reports | sender report (unconfirmed) | estimated: …
    frame_step_us: int = 0  # the smallest forward step between frames: one frame's duration
    end_us: int | None = None  # set when a discontinuity closes it: where its last frame ends
    camera_offset_us: int | None = None  # camera clock minus arrival estimate, when reports exist
    reported_base_us: int | None = None  # the segment's own base, before a partner's or the floor (see settle)
    own_source: str = ""  # how its own evidence timed it (differs from `source` when a partner's time is used)

    def media_us(self, ext_ts: int) -> int:
        return (ext_ts - self.first_ts) * 1_000_000 // self.clock_rate

    def report_base(self, report: Report) -> int:
        return report.camera_us - self.media_us(report.ext_ts)

    def confirmed_base(self) -> int | None:
        """The base two consecutive reports agree on (the later one's), else None."""
        for older, newer in zip(reversed(self.reports[:-1]), reversed(self.reports), strict=False):
            if abs(self.report_base(newer) - self.report_base(older)) <= AGREE_US:
                return self.report_base(newer)
        return None


class SessionClock:
    """Feeds: `report()` for each sender report, `frame()` for each access unit, in arrival order.

    `frame()` returns the segment the frame belongs to and its media time in that segment. Once a
    segment's `base_us` is set (settled), its frames' times are `base_us + media_us`, final."""

    def __init__(self, clock_rate: int, floor_us: int | None = None, name: str = "") -> None:
        self.name = name  # what the log says this clock is of ("camera lobby")
        self.clock_rate = clock_rate
        self.floor_us = floor_us  # end of what was already recorded of this camera
        self.segment: Segment | None = None
        self.segments = 0
        self.breaks: dict[str, int] = {}
        self.rejected_reports = 0
        self._ssrc: int | None = None
        self._last_ts32 = 0
        self._ext = 0
        self._step: Report | None = None  # a disagreeing report waiting for a second one
        self._early: list[tuple[int, int, int]] = []  # reports before the first frame
        self.hold = False  # set while a partner's time is awaited: segments do not settle on their own
        # The camera clock's offset from arrival in the segment before a break, when its sender
        # reports confirmed it (see _clock_ran_on).
        self._offset_before: int | None = None

    # ---- input ----------------------------------------------------------------------------
    def report(self, ssrc: int, camera_us: int, ts32: int) -> None:
        segment = self.segment
        if segment is None:  # before the first frame: kept for it (a camera reports first)
            self._early.append((ssrc, camera_us, ts32))
            return
        if ssrc != segment.ssrc:
            return  # another sender's report
        report = Report(camera_us, self._extend_near(ts32))
        if segment.base_us is None or not segment.own_source.startswith("sender report"):
            segment.reports.append(report)
            del segment.reports[:-8]
            if segment.base_us is not None:
                self._maybe_upgrade(segment)
            return
        seen = segment.report_base(report)
        expected = segment.reported_base_us if segment.reported_base_us is not None else segment.base_us
        if abs(seen - expected) <= STEP_US:
            self._step = None
            if segment.own_source != "sender reports" and abs(seen - expected) <= AGREE_US:
                segment.own_source = "sender reports"  # the unconfirmed report is confirmed now
                if segment.source.startswith("sender report"):
                    segment.source = segment.own_source
            return
        if self._step is not None and abs(segment.report_base(self._step) - seen) <= AGREE_US:
            self._break("sender report step", carry=[self._step, report])
            self._step = None
            return
        self.rejected_reports += 1
        self._step = report

    def frame(
        self, ssrc: int, ts32: int, seq_jump: bool, arrival_us: int, keyframe: bool = False
    ) -> tuple[Segment, int]:
        segment = self.segment
        if segment is None:
            self._ssrc, self._last_ts32 = ssrc, ts32
            segment = self._open("start", ssrc, 0)
            early, self._early = self._early, []
            for report in early:
                self.report(*report)
        elif ssrc != self._ssrc:  # another stream: a timeline of its own from this frame
            segment = self._break("SSRC change", carry=[])
            segment.ssrc, self._ssrc, self._last_ts32, self._ext = ssrc, ssrc, ts32, 0
            segment.first_ts = segment.last_ts = segment.max_ts = 0
        elif segment.first_ts == PENDING:  # opened by a report (a clock step): this is its first frame
            ext = self._extend(ts32)
            segment.first_ts = segment.last_ts = segment.max_ts = ext
        else:
            ext = self._extend(ts32)
            media_step = (ext - segment.last_ts) * 1_000_000 // self.clock_rate
            arrival_step = arrival_us - segment.last_arrival_us
            reason = None
            if seq_jump:
                reason = "sequence jump"
            elif ext < segment.max_ts - REORDER_US * self.clock_rate // 1_000_000 or (
                keyframe and ext <= segment.max_ts
            ):
                # A B-frame may go back a little; a keyframe is shown after every frame before it.
                reason = "RTP timestamp jump back"
            elif media_step - arrival_step > FORWARD_SLACK_US:
                reason = "RTP timestamp jump forward"
            if reason is not None:
                segment = self._break(reason, carry=[])
                segment.first_ts = segment.last_ts = segment.max_ts = ext
            elif media_step > 0 and (segment.frame_step_us == 0 or media_step < segment.frame_step_us):
                segment.frame_step_us = media_step
        ext = self._ext
        segment.last_ts = ext
        segment.max_ts = max(segment.max_ts, ext)
        segment.last_arrival_us = arrival_us
        media = segment.media_us(ext)
        lag = arrival_us - media
        if segment.min_lag_us is None or lag < segment.min_lag_us:
            segment.min_lag_us = lag
        if (
            segment.base_us is None
            and not self.hold
            and (segment.confirmed_base() is not None or media >= SETTLE_WAIT_US or self._clock_ran_on(segment))
        ):
            self.settle(segment)
        return segment, media

    def _clock_ran_on(self, segment: Segment) -> bool:
        """Whether a segment begun at a break within the session may settle on one sender report:
        the report puts the camera's clock where the segment before had it relative to arrival
        (within STEP_US), so that clock evidently ran on through the break (a restarted encoder or
        restreamer: gst-rtsp-server restarts a shared stream's timestamps when a client PLAYs).
        Waiting for a second report instead held the frames, and live with them, for 5 to 10 s;
        every recorder of the camera gets the same reports, so they still agree."""
        if self._offset_before is None or not segment.reports or segment.min_lag_us is None:
            return False
        reported = segment.report_base(segment.reports[-1])
        return abs(reported - segment.min_lag_us - self._offset_before) <= STEP_US

    # ---- decisions -------------------------------------------------------------------------
    def settle(self, segment: Segment, partner: tuple[int, str] | None = None) -> None:
        """Fix the segment's base from the best evidence it has (called early when reports agree,
        else after SETTLE_WAIT_US of media, or when the segment closes or holds too much), or from
        `partner`: (the base a partner's time gives it, the partner's id)."""
        if segment.base_us is not None:
            return
        estimate = segment.min_lag_us if segment.min_lag_us is not None else 0
        confirmed = segment.confirmed_base()
        reported = confirmed
        if reported is None and segment.reports:
            reported = segment.report_base(segment.reports[-1])
        if reported is None:
            base, source = estimate, "estimated: no sender reports"
        else:
            segment.camera_offset_us = reported - estimate
            if abs(reported - estimate) <= ARRIVAL_BOUND_US:
                base = reported
                source = "sender reports" if confirmed is not None else "sender report (unconfirmed)"
            else:
                log.warning(
                    "%s: camera clock is %+.1f s off the recorder's (segment %d): timed by arrival instead",
                    self.name,
                    (reported - estimate) / 1e6,
                    segment.number,
                )
                base, source = estimate, f"estimated: camera clock off by {(reported - estimate) / 1e6:+.1f} s"
        segment.reported_base_us, segment.own_source = base, source
        if partner is not None:
            partner_base, partner_id = partner
            agrees = source == "sender reports" and abs(partner_base - base) <= AGREE_US
            if not agrees and abs(partner_base - estimate) <= ARRIVAL_BOUND_US:
                log.info(
                    "%s: segment %d takes partner %s's time (%+.3f s from its own, %s)",
                    self.name,
                    segment.number,
                    partner_id,
                    (partner_base - base) / 1e6,
                    source,
                )
                base, source = partner_base, f"partner {partner_id}'s time (own: {source})"
        if self.floor_us is not None and self.floor_us > estimate + ARRIVAL_BOUND_US:
            log.warning(
                "%s: its recorded footage ends %.1f s in the future (a clock that was wrong before):"
                " not moving new footage after it",
                self.name,
                (self.floor_us - estimate) / 1e6,
            )
        elif self.floor_us is not None and base < self.floor_us:
            base = self.floor_us  # never overlap what is recorded (bounded: the floor is itself timed)
        elif (
            self.floor_us is not None
            and segment.reason == "sender report step"
            and source.startswith("estimated")
            and base - self.floor_us <= ARRIVAL_BOUND_US
        ):
            # A clock stepped out of the bound, the RTP timeline unbroken: arrival (late by the
            # latency) takes over where camera time ended, rather than leaving an empty gap.
            base = self.floor_us
        segment.base_us, segment.source = base, source
        log.info(
            "%s: segment %d timed by %s (%+.3f s from arrival)",
            self.name,
            segment.number,
            source,
            (base - estimate) / 1e6,
        )

    def end_of(self, segment: Segment, end_us: int) -> None:
        """The segment's fragments reach end_us: a later segment must not start before it."""
        self.floor_us = end_us if self.floor_us is None else max(self.floor_us, end_us)

    def _maybe_upgrade(self, segment: Segment) -> None:
        """A segment timed by arrival (no reports then) or by one report: two agreeing reports within
        the arrival bound now give a better time; switch to it in a new segment."""
        confirmed = segment.confirmed_base()
        estimate = segment.min_lag_us or 0
        if confirmed is None or abs(confirmed - estimate) > ARRIVAL_BOUND_US or segment.source.startswith("partner"):
            return
        if segment.source.startswith("estimated") or abs(confirmed - (segment.reported_base_us or 0)) > AGREE_US:
            self._break("sender reports arrived", carry=segment.reports[-2:])
        else:
            segment.source = segment.own_source = "sender reports"

    def _open(self, reason: str, ssrc: int, first_ts: int) -> Segment:
        self.segments += 1
        segment = Segment(self.segments, ssrc, first_ts, self.clock_rate, reason)
        segment.last_ts = segment.max_ts = first_ts
        if self.segment is not None:
            segment.last_arrival_us = self.segment.last_arrival_us
        self.segment = segment
        self._step = None
        if reason != "start":
            self.breaks[reason] = self.breaks.get(reason, 0) + 1
            log.info("%s: clock discontinuity (%s): segment %d begins", self.name, reason, segment.number)
        return segment

    def _break(self, reason: str, carry: list[Report]) -> Segment:
        """Close the segment; the next frame begins a new one. Reports that describe the timeline
        going on (a clock step, late reports) carry over, so it settles at once."""
        old = self.segment
        assert old is not None
        self.settle(old)
        assert old.base_us is not None
        old.end_us = old.base_us + old.media_us(old.max_ts) + (old.frame_step_us or 40_000)
        self.end_of(old, old.end_us)
        self._offset_before = None
        if old.own_source == "sender reports" and old.reported_base_us is not None and old.min_lag_us is not None:
            self._offset_before = old.reported_base_us - old.min_lag_us
        segment = self._open(reason, old.ssrc, PENDING)
        segment.reports = list(carry)
        return segment

    # ---- RTP timestamp unwrapping --------------------------------------------------------
    def _extend(self, ts32: int) -> int:
        delta = (ts32 - self._last_ts32) & 0xFFFFFFFF
        self._ext += delta - (1 << 32) if delta >= 1 << 31 else delta
        self._last_ts32 = ts32
        return self._ext

    def _extend_near(self, ts32: int) -> int:
        """A report's timestamp on the extended timeline, nearest the latest frame (does not advance)."""
        delta = (ts32 - self._last_ts32) & 0xFFFFFFFF
        return self._ext + (delta - (1 << 32) if delta >= 1 << 31 else delta)
