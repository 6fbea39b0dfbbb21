"""Per-camera RTSP ingest (our own RTSP/RTP client, TCP-interleaved) with reconnect and backoff, forever.

Every way a camera can fail is a state with a reason in words (health, metrics, log): it cannot reach
the camera, the camera refuses the credentials, sends something that is not H.264, or stops sending
frames. A refused password is retried rarely (AUTH_BACKOFF_S), since cameras lock an account out
after a few failures.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Protocol

import av

from gapless import __version__
from gapless.common.backoff import Backoff
from gapless.config.recorder import PartnerLink
from gapless.ingest.clock import SessionClock
from gapless.ingest.fragmenter import AudioPacket, Fragmenter, Packet
from gapless.ingest.live import LiveFeed
from gapless.ingest.partner_time import ASK_INTERVAL_S, KeyframeLog, KeyframeTimes, PartnerWait
from gapless.ingest.reader import StreamReader
from gapless.ingest.rtp import AccessUnit, InterleavedRtp
from gapless.ingest.rtp_audio import AudioRtp
from gapless.ingest.rtsp import AuthRefused, CameraFault, RtspClient, RtspError, StreamInfo
from gapless.media.fmp4 import parse_fragment
from gapless.media.h264 import BitstreamError, split_avcc, to_annexb
from gapless.storage.store import Fragment

log = logging.getLogger("gapless.ingest")

#: The first fragment of a session may take the clock's settle wait (10 s of media) plus a GOP,
#: counted after any wait for a partner's time (ingest/partner_time.py: PARTNER_WAIT_S).
FIRST_FRAGMENT_TIMEOUT_S = 25.0
#: A session that delivers no fragment for this long is ended (the camera sends, but no frames).
NO_FRAGMENT_S = 20.0
READ_TIMEOUT_S = 5.0
END_WAIT_S = 10.0
#: A camera whose access units are malformed this often is sending something that is not H.264.
MALFORMED_LIMIT = (20, 0.05)  # at least this many, and at least this share of all packets
BACKOFF_MAX_S = 30.0
#: After refused credentials: wait this long, doubling to AUTH_BACKOFF_MAX_S (a lockout typically
#: follows 5 failures within minutes).
AUTH_BACKOFF_S = 60.0
AUTH_BACKOFF_MAX_S = 600.0


def _codec_name(codec: str) -> str:
    return {"h264": "H.264", "h265": "H.265"}[codec]


def _check_decodes(fragment, codec: str, parameter_sets: list[bytes]) -> None:
    """Decode the first keyframe of a run (one frame per connect, cheap): random bytes can pass every
    NAL header check, but they do not decode. Gapless otherwise never decodes video."""
    sample = parse_fragment(fragment.payload)[0]
    ctx = av.CodecContext.create("hevc" if codec == "h265" else "h264", "r")
    ctx.options = {"err_detect": "explode"}
    name = _codec_name(codec)
    try:
        frames = ctx.decode(av.Packet(to_annexb([*parameter_sets, *split_avcc(sample.data)]))) + ctx.decode(None)
    except av.FFmpegError as exc:
        raise CameraFault(f"stream is not valid {name}: its first keyframe does not decode ({exc})") from None
    if not frames:
        raise CameraFault(f"stream is not valid {name}: its first keyframe does not decode")


@dataclass
class FeedState:
    state: str = "starting"  # starting | connecting | recording | reconnecting | failed
    reason: str = ""
    reconnects: int = 0
    fragments: int = 0
    frames: int = 0
    last_fragment_end_us: int | None = None
    lost_packets: int = 0
    # How this camera's frames are timed (ingest/clock.py), for the operator:
    time_source: str = ""  # sender reports | sender report (unconfirmed) | estimated: …
    camera_clock_offset_ms: int | None = None  # the camera's clock minus the recorder's, when it reports one
    clock_discontinuities: int = 0
    timing_rejected: int = 0  # sender reports that disagreed once and were not followed
    # The camera's audio: "" (none), its format ("AAC 16 kHz mono"), or why it is not recorded
    audio: str = ""
    audio_frames: int = 0  # audio units stored
    audio_dropped: int = 0  # audio units not stored (no video at their time, late, overlapping)
    audio_lost_packets: int = 0
    # For backfill, which must never store time that the live run records (camera time, µs):
    session_pending: bool = False  # connected, first fragment not delivered yet
    run_start_us: int | None = None  # first fragment of the current run
    previous_run_end_us: int | None = None  # last fragment end before the current run
    # The run (Fragment.run) whose fragments are still coming; None once the session ended, before
    # its last, possibly cut, GOP is stored: a viewer of a pair can tell a GOP that may go on at
    # the other recorder (docs/design/identity.md).
    open_run: str | None = None

    _INTERNAL = ("session_pending", "run_start_us", "previous_run_end_us", "open_run")

    def public(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in self._INTERNAL}

    def live_guard(self) -> tuple[bool, int | None]:
        return self.session_pending, self.run_start_us


class FragmentSink(Protocol):
    """Where ingest hands its fragments (the recorder's storage writer)."""

    def put(self, fragment: Fragment) -> None: ...


class CameraIngest(threading.Thread):
    def __init__(
        self,
        recorder_id: str,
        camera_id: str,
        url: str,
        out: FragmentSink,
        reader: StreamReader,
        recorded_until_us: int | None = None,
        username: str | None = None,
        password: str | None = None,
        partners: list[PartnerLink] | None = None,
    ) -> None:
        super().__init__(name=f"ingest-{camera_id}", daemon=True)
        self.partners = partners or []  # recorders of the same camera: a new session takes their time
        self.keyframes = KeyframeLog()
        self.live = LiveFeed()  # frames for live viewers as they are timed (ingest/live.py)
        self.reader = reader
        self.recorder_id = recorder_id
        self.camera_id = camera_id
        self.url = url
        self.credentials = (username, password)
        self.source = (url, username, password)  # compared with CameraConfig.source on reconfiguration
        self.out = out
        self.stop_event = threading.Event()
        self.feed = FeedState(last_fragment_end_us=recorded_until_us)
        self.session: _Session | None = None

    def keyframe_times(self, since_us: int = 0) -> KeyframeTimes:
        """What a partner starting a session needs to take this recorder's time (see partner_time)."""
        session = self.session
        if session is None:
            settling = self.feed.session_pending
        elif session.partner_wait is not None:
            settling = False  # waiting for a partner itself: two starting sessions must not wait on each other
        else:  # a session starting, or a clock segment begun at a discontinuity and not timed yet
            current = session.clock.segment
            settling = self.feed.session_pending or (current is not None and current.base_us is None)
        return KeyframeTimes(camera=self.camera_id, pending=settling, keyframes=self.keyframes.recent(since_us))

    def stop(self) -> None:
        """End recording: the session in progress is detached, and the GOP it was building is kept."""
        self.stop_event.set()
        if self.session is not None:
            self.reader.detach(self.session)

    def run(self) -> None:
        backoff = Backoff(1.0, BACKOFF_MAX_S)
        auth_backoff = Backoff(AUTH_BACKOFF_S, AUTH_BACKOFF_MAX_S)
        while not self.stop_event.is_set():
            started = time.monotonic()
            wait = None
            try:
                self._session()
            except AuthRefused as exc:
                wait = auth_backoff.next()
                self.feed.state, self.feed.reason = "failed", str(exc)
                log.error("camera %s: %s (trying again in %.0f s)", self.camera_id, exc, wait)
            except CameraFault as exc:
                self.feed.state, self.feed.reason = "failed", str(exc)
                log.error(
                    "camera %s failed: %s (retrying in %.0f s)",
                    self.camera_id,
                    exc,
                    backoff.upcoming,
                )
            except (RtspError, OSError, BitstreamError) as exc:
                self.feed.state, self.feed.reason = "reconnecting", str(exc)
                log.warning("camera %s: %s (reconnecting in %.0f s)", self.camera_id, exc, backoff.upcoming)
            except Exception as exc:  # a bug must not silently end this camera's recording
                self.feed.state, self.feed.reason = "failed", f"internal error: {type(exc).__name__}: {exc}"
                log.exception(
                    "camera %s: internal error (retrying in %.0f s)",
                    self.camera_id,
                    backoff.upcoming,
                )
            if self.stop_event.is_set():
                break
            self.feed.reconnects += 1
            if wait is None:
                auth_backoff.reset()  # the camera took the credentials (or needed none)
                if time.monotonic() - started > 30:  # it recorded a while: start the doubling again
                    backoff.reset()
                wait = backoff.next()
            self.stop_event.wait(wait)

    def _session(self) -> None:
        self.feed.previous_run_end_us = self.feed.last_fragment_end_us
        self.feed.run_start_us = None
        self.feed.session_pending = True
        try:
            self._record()
        finally:
            self.feed.session_pending = False
            self.feed.run_start_us = None

    def _record(self) -> None:
        username, password = self.credentials
        client = RtspClient(self.url, f"gapless-recorder/{__version__} ({self.recorder_id})", username, password)
        try:
            info = client.open()
            if self.feed.state != "failed":  # a failed camera stays failed until it delivers a fragment
                self.feed.state, self.feed.reason = "connecting", ""
            session = self.session = _Session(self, client, info)
            self.reader.attach(session)
            try:
                # Asleep until the session ends: stop() detaches it, so no polling (the thread of
                # every camera waking twice a second showed in the CPU per camera-hour), but while
                # the session's time waits for a partner's (a few seconds at its start).
                while not self.stop_event.is_set():
                    wait = session.partner_wait
                    if session.ended.wait(ASK_INTERVAL_S if wait is not None else 5.0):
                        break
                    if wait is not None:
                        wait.ask()
            finally:
                self.reader.detach(session)
                if not session.ended.wait(END_WAIT_S):
                    log.error("camera %s: the stream reader did not let go in %.0f s", self.camera_id, END_WAIT_S)
                session.finish()
            if session.error is not None:
                raise session.error
        finally:
            client.close()

    def deliver(self, fragments: list[Fragment], session: _Session, run_ended: bool = False) -> None:
        clock = session.clock
        self.feed.timing_rejected = clock.rejected_reports
        self.feed.clock_discontinuities = session.breaks_before + sum(clock.breaks.values())
        segment = clock.segment
        if segment is not None and segment.base_us is not None:
            self.feed.time_source = segment.source
            offset = segment.camera_offset_us
            self.feed.camera_clock_offset_ms = None if offset is None else round(offset / 1000)
        frag = session.frag
        self.feed.audio_frames = session.audio_frames_before + frag.audio_frames
        self.feed.audio_dropped = session.audio_dropped_before + frag.audio_dropped
        for fragment in fragments:
            if self.feed.run_start_us is None:
                self.feed.run_start_us = fragment.start_us
                self.feed.session_pending = False
            self.out.put(fragment)
            self.feed.state, self.feed.reason = "recording", ""
            self.feed.fragments += 1
            self.feed.frames += fragment.frames
            self.feed.last_fragment_end_us = fragment.end_us
        if fragments:
            session.last_fragment_at = time.monotonic()
            if not run_ended:
                self.feed.open_run = fragments[-1].run


class _Session:
    """One RTSP session while streaming: parsed and fragmented in the StreamReader's thread."""

    def __init__(self, ingest: CameraIngest, client: RtspClient, info: StreamInfo) -> None:
        self.ingest, self.client, self.info = ingest, client, info
        assert client.sock is not None, "the session is open"
        self.sock: socket.socket = client.sock
        self.camera_id = ingest.camera_id
        self.clock = SessionClock(info.clock_rate, ingest.feed.last_fragment_end_us, f"camera {ingest.camera_id}")
        self.breaks_before = ingest.feed.clock_discontinuities
        feed = ingest.feed
        self.audio_frames_before, self.audio_dropped_before = feed.audio_frames, feed.audio_dropped
        self.audio_lost_before = feed.audio_lost_packets
        self.audio = AudioRtp(info.audio) if info.audio is not None else None
        audio_clock = (
            SessionClock(info.audio.format.rate, name=f"camera {ingest.camera_id} audio")
            if info.audio is not None
            else None
        )
        self.frag = Fragmenter(
            ingest.camera_id,
            ingest.recorder_id,
            self.clock,
            info.codec,
            audio=info.audio.format if info.audio is not None else None,
            audio_clock=audio_clock,
            keyframes=ingest.keyframes,
            live=ingest.live,
        )
        self.partner_wait = PartnerWait(ingest.partners) if ingest.partners else None
        self.clock.hold = self.partner_wait is not None
        feed.audio = info.audio.format.describe() if info.audio is not None else info.audio_problem
        if info.audio_problem:
            log.warning("camera %s: %s", self.camera_id, info.audio_problem)
        if info.parameter_sets:
            try:
                self.frag.set_parameter_sets(info.parameter_sets)
            except BitstreamError as exc:
                raise CameraFault(f"the parameter sets the camera announces (SDP) are not valid H.264: {exc}") from None
        self.depacketizer = InterleavedRtp(info.rtp_channel, info.rtcp_channel, info.codec, self.audio)
        self.first_data = client.take_buffered()
        self.opened = self.last_data = self.last_fragment_at = time.monotonic()
        self.keepalive_s = client.keepalive_interval_s
        self.next_keepalive = self.opened + self.keepalive_s
        self.units = self.malformed = self.lost_reported = 0
        self.checked = False
        self.ended = threading.Event()
        self.error: BaseException | None = None

    # ---- called by the StreamReader ----------------------------------------------------------
    def on_data(self, data: memoryview) -> None:
        self.last_data = time.monotonic()
        if self.first_data:
            for unit in self.depacketizer.feed(self.first_data):
                self._push(unit)
            self.first_data = b""
        for unit in self.depacketizer.feed(data):
            self._push(unit)
        if self.audio is not None:
            self._push_audio(self.audio)
        newly_lost = self.depacketizer.lost_packets - self.lost_reported
        if newly_lost:  # the feed's count runs across sessions, the depacketizer's per session
            log.warning(
                "camera %s: %d RTP packets lost (their frames are missing and left as holes)",
                self.camera_id,
                newly_lost,
            )
            self.ingest.feed.lost_packets += newly_lost
            self.lost_reported += newly_lost

    def on_tick(self, now: float) -> None:
        if now - self.last_data > READ_TIMEOUT_S:
            raise RtspError(f"no data from the camera for {READ_TIMEOUT_S:.0f} s")
        quiet = now - self.last_fragment_at
        if not self.checked and quiet > FIRST_FRAGMENT_TIMEOUT_S:
            raise CameraFault(
                f"no recordable H.264 in {FIRST_FRAGMENT_TIMEOUT_S:.0f} s although the camera sends data"
                f" ({self.units} frames, none a usable keyframe)"
            )
        if self.checked and quiet > NO_FRAGMENT_S:
            raise RtspError(f"no complete frame for {quiet:.0f} s although the camera sends data")
        if now > self.next_keepalive:
            self.next_keepalive = now + self.keepalive_s
            self.client.keepalive()

    def on_end(self, error: BaseException | None) -> None:
        if isinstance(error, ConnectionError):
            error = RtspError(str(error))
        self.error = error
        self.ended.set()

    # ---- parsing --------------------------------------------------------------------------------
    def _push(self, unit: AccessUnit) -> None:
        self.units += 1
        if unit.reports:
            for ssrc, camera_us, ts32 in unit.reports:
                self.clock.report(ssrc, camera_us, ts32)
        wait = self.partner_wait
        if wait is not None and wait.answer is not None:
            self._take_partner_time(wait)
        segment, media_us = self.clock.frame(unit.ssrc, unit.rtp_ts, unit.seq_jump, unit.arrival_us, unit.keyframe)
        if wait is not None and wait.answer is None and unit.keyframe and segment.base_us is None:
            wait.keyframe(unit.avcc, segment, media_us, unit.arrival_us)
        try:
            if unit.malformed:
                raise BitstreamError(unit.malformed)
            done = self.frag.push(
                Packet(unit.avcc, unit.keyframe, unit.parameter_sets, segment, media_us, unit.arrival_us)
            )
        except BitstreamError as exc:
            self.malformed += 1
            if self.malformed <= 3 or self.malformed % 100 == 0:
                log.warning("camera %s: dropped malformed access unit %d: %s", self.camera_id, self.malformed, exc)
            if self.malformed >= MALFORMED_LIMIT[0] and self.malformed > MALFORMED_LIMIT[1] * self.units:
                raise CameraFault(
                    f"stream is not valid {_codec_name(self.info.codec)}: {self.malformed} of"
                    f" {self.units} access units malformed (last: {exc})"
                ) from None
            return
        if done:
            self._check_first(done)
        self.ingest.deliver(done, self)

    def _take_partner_time(self, wait: PartnerWait) -> None:
        """The wait for a partner's time ended: settle the segment with it, or let it settle alone."""
        self.partner_wait = None
        self.clock.hold = False
        # The first fragment's timeout counts from here: frames were held for the partner, not
        # missing (a reconnect would restart a shared stream for every client: gst-rtsp-server).
        self.last_fragment_at = time.monotonic()
        answer = wait.answer
        assert answer is not None
        if answer.segment is not None and answer.base_us is not None:
            self.clock.settle(answer.segment, (answer.base_us, answer.partner))
        else:
            log.info("camera %s: timed on its own evidence (%s)", self.camera_id, answer.reason)

    def _push_audio(self, audio: AudioRtp) -> None:
        """The audio units of the data just read. Nothing the audio does may end the video's session."""
        units, reports = audio.take()
        clock = self.frag.audio_clock
        assert clock is not None
        for ssrc, camera_us, ts32 in reports:
            clock.report(ssrc, camera_us, ts32)
        done = []
        for unit in units:
            segment, media_us = clock.frame(unit.ssrc, unit.rtp_ts, unit.seq_jump, unit.arrival_us)
            done += self.frag.push_audio(AudioPacket(unit.data, segment, media_us, unit.arrival_us))
        self.ingest.feed.audio_lost_packets = self.audio_lost_before + audio.lost_packets
        if audio.problem and self.frag.audio_on:
            log.error("camera %s: %s; recording video only", self.camera_id, audio.problem)
            self.ingest.feed.audio = audio.problem
            done += self.frag.audio_off()
        if done:
            self._check_first(done)
            self.ingest.deliver(done, self)

    def _check_first(self, done: list[Fragment]) -> None:
        if not self.checked:
            _check_decodes(done[0], self.info.codec, self.frag.parameter_sets)
            self.checked = True

    def finish(self) -> None:
        """The run ended: the GOP in progress is kept too (called once the reader let go)."""
        self.ingest.feed.open_run = None  # before the GOP it cut is stored
        rest = self.frag.flush()
        if rest and not self.checked:
            try:
                _check_decodes(rest[0], self.info.codec, self.frag.parameter_sets)
            except CameraFault as exc:
                log.error("camera %s: not storing the end of a run: %s", self.camera_id, exc)
                rest = []
        self.ingest.deliver(rest, self, run_ended=True)
