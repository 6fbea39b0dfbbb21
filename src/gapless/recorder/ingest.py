"""Per-camera RTSP ingest (PyAV over TCP) with reconnect and backoff, forever."""

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
            except (av.FFmpegError, OSError, BitstreamError) as exc:
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
        options = {"rtsp_transport": "tcp", "user_agent": f"gapless-recorder/{__version__} ({self.recorder_id})"}
        self.feed.previous_run_end_us = self.feed.last_fragment_end_us
        self.feed.run_start_us = None
        self.feed.session_pending = True
        try:
            self._record(options)
        finally:
            self.feed.session_pending = False
            self.feed.run_start_us = None

    def _record(self, options: dict) -> None:
        container = av.open(self.url, options=options, timeout=(10.0, 5.0))
        try:
            stream = container.streams.video[0] if container.streams.video else None
            if stream is None:
                raise CameraFailure("the stream has no video track")
            codec = stream.codec_context.name
            if codec != "h264":
                raise CameraFailure(f"unsupported codec {codec}; Gapless records H.264")
            frag = Fragmenter(self.camera_id, self.recorder_id)
            frag.set_parameter_sets(bytes(stream.codec_context.extradata or b""))
            tb_us = float(stream.time_base * 1_000_000)
            opened = time.monotonic()
            packets = malformed = 0
            checked = False
            if self.feed.state != "failed":  # a failed camera stays failed until it delivers a fragment
                self.feed.state, self.feed.reason = "connecting", ""
            try:
                for packet in container.demux(stream):
                    if self.stop_event.is_set():
                        break
                    if packet.pts is None or packet.size == 0:
                        continue
                    side = packet.get_sidedata("prft")
                    raw = bytes(side) if side else b""
                    prft = int.from_bytes(raw[:8], "little", signed=True) if len(raw) >= 8 else None
                    dts = packet.dts if packet.dts is not None else packet.pts
                    packets += 1
                    try:
                        done = frag.push(
                            Packet(
                                bytes(packet), int(packet.pts * tb_us), int(dts * tb_us), prft, time.time_ns() // 1000
                            )
                        )
                    except BitstreamError as exc:
                        malformed += 1
                        if malformed <= 3 or malformed % 100 == 0:
                            log.warning(
                                "camera %s: dropped malformed access unit %d: %s", self.camera_id, malformed, exc
                            )
                        if malformed >= MALFORMED_LIMIT[0] and malformed > MALFORMED_LIMIT[1] * packets:
                            raise CameraFailure(
                                f"stream is not valid H.264: {malformed} of {packets} access units malformed"
                                f" (last: {exc})"
                            ) from None
                        continue
                    if frag.seq == 0 and not done and time.monotonic() - opened > KEYFRAME_TIMEOUT_S + 5:
                        raise CameraFailure(f"no usable H.264 keyframe with camera time in {KEYFRAME_TIMEOUT_S:.0f} s")
                    if done and not checked:
                        _check_decodes(done[0], frag.sps, frag.pps)
                        checked = True
                    self._deliver(done, frag)
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
            container.close()
        if not self.stop_event.is_set():
            raise OSError("stream ended")

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
