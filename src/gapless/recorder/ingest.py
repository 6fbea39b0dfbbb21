"""Per-camera RTSP ingest (our own RTSP/RTP client, TCP-interleaved) with reconnect and backoff, forever."""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

import av

from gapless import __version__
from gapless.media.fmp4 import parse_fragment
from gapless.media.h264 import BitstreamError, split_avcc, to_annexb
from gapless.recorder.fragmenter import Fragmenter, Packet
from gapless.recorder.rtsp import RtspClient, RtspError, UnsupportedStream

log = logging.getLogger("gapless.ingest")

KEYFRAME_TIMEOUT_S = 10.0
#: A camera whose access units are malformed this often is sending something that is not H.264.
MALFORMED_LIMIT = (20, 0.05)  # at least this many, and at least this share of all packets
BACKOFF_MAX_S = 30.0


class CameraFailure(Exception):
    """The camera answered but what it sends cannot be recorded."""


def _check_decodes(fragment, sps: bytes, pps: bytes) -> None:
    """Decode the first keyframe of a run (one frame per connect, cheap): random bytes can pass every
    NAL header check, but they do not decode. Gapless otherwise never decodes video."""
    sample = parse_fragment(fragment.payload)[0]
    ctx = av.CodecContext.create("h264", "r")
    ctx.options = {"err_detect": "explode"}
    try:
        frames = ctx.decode(av.Packet(to_annexb([sps, pps, *split_avcc(sample.data)]))) + ctx.decode(None)
    except av.FFmpegError as exc:
        raise CameraFailure(f"stream is not valid H.264: its first keyframe does not decode ({exc})") from None
    if not frames:
        raise CameraFailure("stream is not valid H.264: its first keyframe does not decode")


@dataclass
class FeedState:
    state: str = "starting"  # starting | recording | reconnecting | failed
    reason: str = ""
    reconnects: int = 0
    fragments: int = 0
    frames: int = 0
    last_fragment_end_us: int | None = None
    timing_rejected: int = 0
    lost_packets: int = 0
    # For backfill, which must never store time that the live run records (camera time, µs):
    session_pending: bool = False  # connected, first fragment not delivered yet
    run_start_us: int | None = None  # first fragment of the current run
    previous_run_end_us: int | None = None  # last fragment end before the current run

    _INTERNAL = ("session_pending", "run_start_us", "previous_run_end_us")

    def public(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in self._INTERNAL}

    def live_guard(self) -> tuple[bool, int | None]:
        return self.session_pending, self.run_start_us


class CameraIngest(threading.Thread):
    def __init__(self, recorder_id: str, camera_id: str, url: str, out: queue.Queue, stop: threading.Event) -> None:
        super().__init__(name=f"ingest-{camera_id}", daemon=True)
        self.recorder_id = recorder_id
        self.camera_id = camera_id
        self.url = url
        self.out = out
        self.stop_event = stop
        self.feed = FeedState()

    def run(self) -> None:
        backoff = 1.0
        while not self.stop_event.is_set():
            started = time.monotonic()
            try:
                self._session()
            except CameraFailure as exc:
                self.feed.state, self.feed.reason = "failed", str(exc)
                log.error("camera %s failed: %s (retrying in %.0f s)", self.camera_id, exc, backoff)
            except (RtspError, OSError, BitstreamError) as exc:
                self.feed.state, self.feed.reason = "reconnecting", f"{type(exc).__name__}: {exc}"
                log.warning("camera %s: %s (reconnecting in %.0f s)", self.camera_id, exc, backoff)
            except Exception as exc:  # a bug must not silently end this camera's recording
                self.feed.state, self.feed.reason = "failed", f"internal error: {type(exc).__name__}: {exc}"
                log.exception("camera %s: internal error (retrying in %.0f s)", self.camera_id, backoff)
            if self.stop_event.is_set():
                break
            self.feed.reconnects += 1
            if time.monotonic() - started > 30:
                backoff = 1.0
            self.stop_event.wait(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

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
        client = RtspClient(self.url, f"gapless-recorder/{__version__} ({self.recorder_id})")
        try:
            try:
                info = client.open()
            except UnsupportedStream as exc:
                raise CameraFailure(str(exc)) from None
            frag = Fragmenter(self.camera_id, self.recorder_id)
            if info.sps and info.pps:
                frag.set_parameter_sets([info.sps, info.pps])
            opened = time.monotonic()
            units = malformed = 0
            last_dts = None
            checked = False
            if self.feed.state != "failed":  # a failed camera stays failed until it delivers a fragment
                self.feed.state, self.feed.reason = "connecting", ""
            try:
                for unit in client.access_units():
                    if self.stop_event.is_set():
                        break
                    units += 1
                    pts_us = unit.rtp_ticks * 1_000_000 // info.clock_rate
                    # RTP carries presentation time; decode order is arrival order (B-frames: one µs apart).
                    dts_us = pts_us if last_dts is None or pts_us > last_dts else last_dts + 1
                    last_dts = dts_us
                    try:
                        done = frag.push(Packet(unit.nals, pts_us, dts_us, unit.camera_us, unit.arrival_us))
                    except BitstreamError as exc:
                        malformed += 1
                        if malformed <= 3 or malformed % 100 == 0:
                            log.warning(
                                "camera %s: dropped malformed access unit %d: %s", self.camera_id, malformed, exc
                            )
                        if malformed >= MALFORMED_LIMIT[0] and malformed > MALFORMED_LIMIT[1] * units:
                            raise CameraFailure(
                                f"stream is not valid H.264: {malformed} of {units} access units malformed"
                                f" (last: {exc})"
                            ) from None
                        continue
                    if frag.seq == 0 and not done and time.monotonic() - opened > KEYFRAME_TIMEOUT_S + 5:
                        raise CameraFailure(f"no usable H.264 keyframe with camera time in {KEYFRAME_TIMEOUT_S:.0f} s")
                    if done and not checked:
                        _check_decodes(done[0], frag.sps, frag.pps)
                        checked = True
                    self._deliver(done, frag)
                    if client.lost_packets != self.feed.lost_packets:
                        log.warning(
                            "camera %s: %d RTP packets lost (their frames are missing and left as holes)",
                            self.camera_id,
                            client.lost_packets - self.feed.lost_packets,
                        )
                        self.feed.lost_packets = client.lost_packets
            finally:
                rest = frag.flush()  # the GOP in progress when the run ended is kept too
                if rest and not checked:
                    try:
                        _check_decodes(rest[0], frag.sps, frag.pps)
                    except CameraFailure as exc:
                        log.error("camera %s: not storing the end of a run: %s", self.camera_id, exc)
                        rest = []
                self._deliver(rest, frag)
        finally:
            client.close()

    def _deliver(self, fragments, frag: Fragmenter) -> None:
        self.feed.timing_rejected = frag.clock.rejected
        for fragment in fragments:
            if self.feed.run_start_us is None:
                self.feed.run_start_us = fragment.start_us
                self.feed.session_pending = False
            self.out.put(fragment)
            self.feed.state, self.feed.reason = "recording", ""
            self.feed.fragments += 1
            self.feed.frames += fragment.frames
            self.feed.last_fragment_end_us = fragment.end_us
