"""Turn a camera's H.264 access units into GOP fragments stamped with camera time.

Time comes from `ingest/clock.py`: each access unit belongs to a clock segment and has a media
time in it; once the segment is settled, its time is `segment.base_us + media_us`. Until then
frames wait in memory (bounded by PENDING_MAX_BYTES, past which the segment settles on what it
has), never dropped. Each segment is a run of its own: a clock discontinuity ends the GOP in
progress and starts a new run, so no fragment spans a break (the rest of that GOP begins the new
run without a keyframe, like any later piece of a GOP: it decodes after the piece before it).

RTP timestamps are presentation times, and frames arrive in decode order: with B-frames they are
not sorted. A GOP's decode times are its sorted presentation times moved back by the segment's
reorder delay, so every composition offset is positive and decode times always increase.

Audio (when the camera sends it) has a clock of its own (a second SessionClock: its own SSRC, sender
reports and breaks) and joins the video by time: a fragment spanning [start, end) carries exactly
the audio units whose camera time falls in it. A finished GOP therefore waits until the audio of
its time has arrived (AUDIO_WAIT_US at most). Audio at a time no video fragment covers (before the
session's first keyframe, inside a hole of the video) is not stored and is counted; backfill brings
it with the partner's video.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import uuid
from dataclasses import dataclass, field

from gapless.ingest.clock import Segment, SessionClock
from gapless.ingest.live import LiveFeed
from gapless.ingest.partner_time import KeyframeLog
from gapless.media import h265
from gapless.media.audio import AudioFormat
from gapless.media.fmp4 import Sample, build_fragment, build_hevc_init_segment, build_init_segment, us_to_ticks
from gapless.media.h264 import NAL_PPS, NAL_SPS, BitstreamError, nal_type, parse_sps
from gapless.storage.store import Fragment, InitSegment

#: Frames held while a segment waits for its time; past this the segment settles at once.
PENDING_MAX_BYTES = 32 << 20
#: A GOP is cut into fragments of at most this much media, or this many bytes.
MAX_FRAGMENT_US = 5_000_000
MAX_FRAGMENT_BYTES = 64 << 20
#: A finished GOP waits at most this long (recorder time) for the audio of its time,
AUDIO_WAIT_US = 1_500_000
#: ... or this long while the audio's own clock waits for its first sender reports.
AUDIO_SETTLE_WAIT_US = 12_000_000
#: Audio held while its clock is not settled; past this its segment settles at once.
AUDIO_PENDING_MAX_BYTES = 4 << 20


@dataclass(slots=True)
class Packet:
    """One access unit: AVCC sample data without parameter sets, which come separately."""

    avcc: bytes
    keyframe: bool
    parameter_sets: list[bytes]
    segment: Segment
    media_us: int  # presentation time within its segment
    arrival_us: int


@dataclass(slots=True)
class AudioPacket:
    """One audio access unit (AAC) or packet of samples (G.711), timed in its audio clock segment."""

    data: bytes
    segment: Segment
    media_us: int
    arrival_us: int


@dataclass(slots=True)
class _Built:
    """A fragment's video, waiting for the audio of its time."""

    samples: list[Sample]
    start_us: int
    end_us: int
    run: str
    seq: int
    init: InitSegment
    arrival_us: int
    keyframe_first: bool
    done_us: int  # recorder time when its video was complete
    keyframe_us: int | None  # the presentation time of its first frame, when that is a keyframe


#: The parameter sets an init segment needs, by NAL unit type, per codec.
_PARAMETER_SETS = {"h264": (NAL_SPS, NAL_PPS), "h265": h265.PARAMETER_SET_TYPES}


@dataclass
class Fragmenter:
    camera: str
    origin: str
    clock: SessionClock
    codec: str = "h264"  # h264 | h265
    run: str = ""
    seq: int = 0
    init: InitSegment | None = None
    parameter_sets: list[bytes] = field(default_factory=list)  # those of the current init segment, in order
    segment: Segment | None = None
    pending: list[Packet] = field(default_factory=list)
    pending_bytes: int = 0
    gop: list[Packet] = field(default_factory=list)
    gop_bytes: int = 0
    frame_us: int = 0  # typical frame interval of this run (median step of the last GOP)
    reorder_us: int = 0  # this segment's decode delay (B-frames), only grows within a segment
    decoding: bool = False  # a keyframe has been seen this session: later frames decode, whatever segment
    discarded_before_keyframe: int = 0
    invalid_packets: int = 0
    audio: AudioFormat | None = None  # the camera's audio track; None: video only
    audio_clock: SessionClock | None = None
    audio_on: bool = False  # False once the audio track is switched off (video goes on alone)
    audio_pending: collections.deque[AudioPacket] = field(default_factory=collections.deque)
    audio_pending_bytes: int = 0
    audio_ready: collections.deque[tuple[int, bytes]] = field(default_factory=collections.deque)  # (µs, unit)
    audio_until_us: int | None = None  # where the latest timed audio unit ends
    audio_frames: int = 0  # audio units stored in fragments
    audio_dropped: int = 0  # audio units not stored: no video fragment at their time, or late
    held: list[_Built] = field(default_factory=list)
    now_us: int = 0  # latest arrival seen (recorder time)
    keyframes: KeyframeLog | None = None  # where stored keyframes' times are told to partners
    live: LiveFeed | None = None  # where each frame goes the moment it is timed (live viewers)

    def __post_init__(self) -> None:
        self.audio_on = self.audio is not None
        if self.audio is not None and self.audio_clock is None:
            raise ValueError("an audio track needs its clock")

    def audio_off(self) -> list[Fragment]:
        """The audio track broke: fragments stop waiting for it (the init segment keeps the track)."""
        self.audio_on = False
        return self._release_held()

    def set_parameter_sets(self, nals: list[bytes]) -> None:
        """Parameter sets announced out of band (SDP sprop-parameter-sets, sprop-vps/sps/pps)."""
        self._learn(nals)

    def _learn(self, nals: list[bytes]) -> None:
        """Take in-band parameter sets; an SPS that does not parse is refused before it is used."""
        hevc = self.codec == "h265"
        kind_of = h265.nal_type if hevc else nal_type
        wanted = _PARAMETER_SETS[self.codec]
        known = {kind_of(n): n for n in self.parameter_sets}
        known.update((kind_of(n), n) for n in nals if kind_of(n) in wanted)
        sets = [known[k] for k in wanted if k in known]
        if len(sets) < len(wanted) or sets == self.parameter_sets:
            if len(sets) < len(wanted):
                self.parameter_sets = sets
            return
        if hevc:
            hevc_info = h265.parse_sps(sets[1])  # raises BitstreamError
            data = build_hevc_init_segment(sets[0], sets[1], sets[2], hevc_info, self.audio)
            codec, width, height = hevc_info.codec_string, hevc_info.width, hevc_info.height
        else:
            info = parse_sps(sets[0])  # raises BitstreamError
            data = build_init_segment(sets[0], sets[1], info, self.audio)
            codec, width, height = info.codec_string, info.width, info.height
        self.parameter_sets = sets
        if self.audio is not None:
            codec = f"{codec},{self.audio.codec_string}"
        if self.init is None or self.init.data != data:
            self.init = InitSegment.make(codec, width, height, data)

    def push(self, packet: Packet) -> list[Fragment]:
        """Feed one access unit; returns fragments completed by it."""
        try:
            if packet.parameter_sets:
                self._learn(packet.parameter_sets)
            if packet.keyframe and self.init is None:
                raise BitstreamError("keyframe before any parameter sets (SPS/PPS)")
        except BitstreamError:
            self.invalid_packets += 1
            raise
        if not packet.avcc:  # parameter sets alone, in a packet of their own
            return []
        self.now_us = max(self.now_us, packet.arrival_us)
        out: list[Fragment] = []
        if packet.segment is not self.segment:
            out += self.flush()
            self.segment, self.run, self.seq, self.reorder_us = packet.segment, uuid.uuid4().hex, 0, 0
        self.pending.append(packet)
        self.pending_bytes += len(packet.avcc)
        if packet.segment.base_us is None and self.pending_bytes > PENDING_MAX_BYTES:
            self.clock.settle(packet.segment)
        if packet.segment.base_us is not None:
            out += self._release()
        return out + self._release_held()

    def push_audio(self, packet: AudioPacket) -> list[Fragment]:
        """Feed one audio unit; returns fragments whose audio is now complete."""
        if not self.audio_on:
            return []
        assert self.audio_clock is not None
        self.now_us = max(self.now_us, packet.arrival_us)
        self.audio_pending.append(packet)
        self.audio_pending_bytes += len(packet.data)
        if packet.segment.base_us is None and self.audio_pending_bytes > AUDIO_PENDING_MAX_BYTES:
            self.audio_clock.settle(packet.segment)
        while self.audio_pending and (base := self.audio_pending[0].segment.base_us) is not None:
            waiting = self.audio_pending.popleft()
            self.audio_pending_bytes -= len(waiting.data)
            self._time_audio(waiting, base + waiting.media_us)
        return self._release_held()

    def _time_audio(self, packet: AudioPacket, time_us: int) -> None:
        assert self.audio is not None and self.audio_clock is not None
        length_us = self.audio.samples_in(packet.data) * 1_000_000 // self.audio.rate
        if self.audio_until_us is not None and time_us < self.audio_until_us - length_us // 2:
            self.audio_dropped += 1  # overlaps audio already timed (its clock went back): never stored twice
            return
        self.audio_ready.append((time_us, packet.data))
        self.audio_until_us = time_us + length_us
        self.audio_clock.end_of(packet.segment, self.audio_until_us)

    def _release_held(self, force: bool = False) -> list[Fragment]:
        """Fragments whose audio has arrived (or waited long enough), built with it."""
        out = []
        while self.held:
            built = self.held[0]
            if not force and self.audio_on and (self.audio_until_us or 0) < built.end_us:
                wait = AUDIO_SETTLE_WAIT_US if self.audio_pending else AUDIO_WAIT_US
                if self.now_us - built.done_us < wait:
                    break
            self.held.pop(0)
            out.append(self._finish(built, self._audio_for(built) if self.audio is not None else None))
        return out

    def _audio_for(self, built: _Built) -> list[Sample]:
        """The timed audio units in the fragment's [start, end), as samples on the audio timescale."""
        assert self.audio is not None
        rate = self.audio.rate
        units: list[tuple[int, bytes]] = []
        ready = self.audio_ready
        while ready and ready[0][0] < built.end_us:
            time_us, data = ready.popleft()
            if time_us >= built.start_us:
                units.append((time_us * rate // 1_000_000, data))
            else:
                self.audio_dropped += 1
        self.audio_frames += len(units)
        ends = [tick for tick, _ in units[1:]]
        return [
            Sample(data, tick, max(1, ends[i] - tick) if i < len(ends) else self.audio.samples_in(data), 0, True)
            for i, (tick, data) in enumerate(units)
        ]

    def _release(self) -> list[Fragment]:
        out: list[Fragment] = []
        for waiting in self.pending:
            out.extend(self._add(waiting))
        self.pending.clear()
        self.pending_bytes = 0
        return out

    def _add(self, packet: Packet) -> list[Fragment]:
        if not packet.keyframe and not self.decoding:
            self.discarded_before_keyframe += 1
            return []
        self.decoding = True
        if self.live is not None and self.init is not None and packet.segment.base_us is not None:
            time_us = packet.segment.base_us + packet.media_us
            self.live.push(time_us, time_us - self.reorder_us, packet.keyframe, packet.avcc, self.init, self.frame_us)
        out: list[Fragment] = []
        if self.gop and (
            packet.keyframe
            or packet.media_us - self.gop[0].media_us >= MAX_FRAGMENT_US
            or self.gop_bytes > MAX_FRAGMENT_BYTES
        ):
            out.extend(self._emit(packet.media_us))
        self.gop.append(packet)
        self.gop_bytes += len(packet.avcc)
        return out

    def flush(self) -> list[Fragment]:
        """Close the segment in progress (a discontinuity, or the end of the session): its waiting
        frames are timed with what the segment knows, and its last GOP is kept (its last frame gets
        the typical frame duration)."""
        if self.segment is None:
            return []
        if self.pending:
            self.clock.settle(self.segment)
        out = self._release()
        if self.gop:
            segment = self.segment
            if segment.end_us is not None and segment.base_us is not None:  # closed by a discontinuity
                out += self._emit(segment.end_us - segment.base_us)
            else:
                out += self._emit(max(p.media_us for p in self.gop) + (self.frame_us or 40_000))
        return out + self._release_held(force=True)

    def _emit(self, next_us: int) -> list[Fragment]:
        """The GOP as fragments: one, or one per stretch when frames are missing inside it.

        A missing frame (a step of more than 1.5 frame intervals) ends a fragment, so the hole shows
        in the index like any other gap and backfill can fill it with exactly that frame."""
        assert self.init is not None and self.segment is not None and self.segment.base_us is not None
        presented = sorted(p.media_us for p in self.gop)
        next_us = max(next_us, presented[-1] + 1)
        self.reorder_us = max(
            self.reorder_us, *(shown - p.media_us for shown, p in zip(presented, self.gop, strict=True))
        )
        times = [*presented, next_us]
        steps = sorted(b - a for a, b in itertools.pairwise(times) if b > a)
        if len(steps) >= 2:
            self.frame_us = steps[len(steps) // 2]
        limit = 1.5 * self.frame_us if self.frame_us else None
        first = 0
        for i in range(len(self.gop)):
            hole = limit is not None and times[i + 1] - times[i] > limit
            if hole or i == len(self.gop) - 1:
                end = times[i] + self.frame_us if hole else next_us
                self.held.append(self._fragment(first, i + 1, times, end))
                first = i + 1
        self.gop = []
        self.gop_bytes = 0
        self.clock.end_of(self.segment, self.held[-1].end_us)
        return self._release_held()

    def _fragment(self, first: int, stop: int, presented: list[int], end_us: int) -> _Built:
        """Frames gop[first:stop]; decode time i is the i-th presentation time less the reorder delay."""
        assert self.segment is not None and self.segment.base_us is not None and self.init is not None
        base = self.segment.base_us
        items = self.gop[first:stop]
        samples = []
        for i, packet in enumerate(items, start=first):
            dts = us_to_ticks(base + presented[i] - self.reorder_us)
            next_dts = us_to_ticks(base + (presented[i + 1] if i + 1 < stop else end_us) - self.reorder_us)
            pts = us_to_ticks(base + packet.media_us)
            samples.append(Sample(packet.avcc, dts, max(1, next_dts - dts), pts - dts, packet.keyframe))
        self.seq += 1
        return _Built(
            samples,
            base + presented[first],
            base + end_us,
            self.run,
            self.seq,
            self.init,
            items[0].arrival_us,
            items[0].keyframe,
            self.now_us,
            base + items[0].media_us if items[0].keyframe else None,
        )

    def _finish(self, built: _Built, audio: list[Sample] | None) -> Fragment:
        payload = build_fragment(built.seq, built.samples, audio)
        if self.keyframes is not None and built.keyframe_us is not None:
            self.keyframes.add(built.samples[0].data, built.keyframe_us)
        return Fragment(
            self.camera,
            built.run,
            built.seq,
            built.start_us,
            built.end_us,
            len(built.samples),
            built.init,
            payload,
            self.origin,
            built.arrival_us,
            # Hashed here, while the payload is still in the CPU cache: measured at 0.77 s per
            # camera-hour in the writer thread, where it is not.
            sha256=hashlib.sha256(payload).hexdigest(),
            keyframe_first=built.keyframe_first,
        )
