"""H.264 (RFC 6184) and H.265 (RFC 7798) over RTP in an RTSP interleaved TCP stream (RFC 2326 §10.12)
-> access units.

This is the recorder's hottest loop: a 2 Mb/s camera sends about 200 RTP packets a second, most of
them FU-A fragments of one large slice. So the per-packet path does as little as Python allows:
one header unpack, a sequence check, and one zero-copy slice of the received bytes. Everything
per NAL unit or per access unit (parameter sets, lengths, keyframe flag, camera time) happens once
the unit's last packet is in. The video is copied once here, when an access unit is joined into
its AVCC sample (and once more when its fragment is built).
"""

from __future__ import annotations

import re
import struct
import time
from dataclasses import dataclass, field

from gapless.ingest.clock import SEQ_JUMP
from gapless.ingest.rtp_audio import AudioRtp
from gapless.ingest.rtsp import CameraFault, RtspError
from gapless.media import h265
from gapless.media.h264 import NAL_AUD, NAL_IDR, NAL_PPS, NAL_SPS, nal_header_problem

NTP_EPOCH_OFFSET_US = 2_208_988_800 * 1_000_000
_RTP_HEAD = struct.Struct(">BBHII")
#: The largest access unit (one frame) accepted: a 4K keyframe is about 1-2 MB.
MAX_ACCESS_UNIT_BYTES = 8 << 20
_CONTENT_LENGTH = re.compile(rb"(?im)^content-length:\s*(\d+)")
#: An RTSP reply (to a keep-alive) inside the interleaved stream is never longer than this.
MAX_REPLY_BYTES = 65536
_STAP_A, _FU_A = 24, 28
_HEVC_AP, _HEVC_FU = 48, 49


@dataclass(slots=True)
class AccessUnit:
    """One frame: its NAL units in AVCC form (each behind a 4-byte length), parameter sets and
    access unit delimiters left out (they belong in the init segment)."""

    avcc: bytes
    parameter_sets: list[bytes]  # SPS and PPS sent in band, usually with each keyframe
    keyframe: bool  # holds an IDR slice
    rtp_ts: int  # the RTP timestamp as sent (32 bits); ingest/clock.py makes it time
    ssrc: int
    arrival_us: int
    malformed: str | None = None  # why this is not H.264 (forbidden bit, reserved NAL type)
    seq_jump: bool = False  # the sequence numbers jumped before this unit (a restarted sender)
    #: RTCP sender reports received since the previous unit: (ssrc, camera µs, RTP timestamp)
    reports: list[tuple[int, int, int]] | None = None


@dataclass
class _Unit:
    """The access unit being assembled (touched per NAL unit, not per packet)."""

    parts: list = field(default_factory=list)
    parameter_sets: list[bytes] = field(default_factory=list)
    keyframe: bool = False
    malformed: str | None = None
    damaged: bool = False  # a packet of it was lost: it is dropped, never stored half
    size: int = 0  # payload bytes so far, bounded by MAX_ACCESS_UNIT_BYTES

    def has_content(self) -> bool:
        return bool(self.parts or self.parameter_sets or self.malformed)

    def add_nal(self, header: int, pieces: list, size: int) -> None:
        kind = header & 0x1F
        problem = nal_header_problem(header)
        if problem:
            self.malformed = problem
        elif kind in (NAL_SPS, NAL_PPS):
            self.parameter_sets.append(b"".join(pieces))
        elif kind != NAL_AUD:
            self.keyframe = self.keyframe or kind == NAL_IDR
            self.parts.append(size.to_bytes(4, "big"))
            self.parts += pieces


class _HevcUnit(_Unit):
    """An H.265 access unit: two-byte NAL unit headers (the second byte is the pieces' second byte)."""

    def add_nal(self, header: int, pieces: list, size: int) -> None:
        second = pieces[0][1] if len(pieces[0]) > 1 else pieces[1][0]
        problem = h265.nal_header_problem(header, second)
        kind = (header >> 1) & 0x3F
        if problem:
            self.malformed = problem
        elif kind in h265.PARAMETER_SET_TYPES:
            self.parameter_sets.append(b"".join(pieces))
        elif kind != h265.NAL_AUD:
            self.keyframe = self.keyframe or kind in h265.IRAP_TYPES
            self.parts.append(size.to_bytes(4, "big"))
            self.parts += pieces


class InterleavedRtp:
    """Push parser: `feed` takes whatever the socket gave and returns the access units it completed.

    An access unit ends with the RTP marker bit, or when the timestamp changes (a lost marker). One
    with a lost packet (sequence gap) is dropped and counted in `lost_packets`: its frame is missing
    and shows as a hole in the archive, which backfill can fill from another recorder."""

    def __init__(
        self, rtp_channel: int = 0, rtcp_channel: int = 1, codec: str = "h264", audio: AudioRtp | None = None
    ) -> None:
        self.rtp_channel, self.rtcp_channel = rtp_channel, rtcp_channel
        self.audio = audio  # the audio track's parser: its channels' packets go there
        self.hevc = codec == "h265"
        self._unit_type = _HevcUnit if self.hevc else _Unit
        self.lost_packets = 0
        self._rest = b""  # an incomplete packet or reply from the previous feed
        self._unit: _Unit = self._unit_type()
        self._fu: list | None = None  # pieces of the FU-A NAL unit in progress
        self._expected_seq = -1
        self._current_ts = -1
        self._ssrc = -1
        self._seq_jump = False
        self._reports: list[tuple[int, int, int]] | None = None  # sender reports for the next unit

    def feed(self, chunk: bytes | memoryview) -> list[AccessUnit]:
        # Immutable bytes, so that slices of it can wait in a unit across feeds without copies.
        data = self._rest + chunk if self._rest else bytes(chunk)
        view = memoryview(data)
        units: list[AccessUnit] = []
        n = len(data)
        pos = 0
        unpack = _RTP_HEAD.unpack_from
        rtp_channel = self.rtp_channel
        expected, current_ts, fu = self._expected_seq, self._current_ts, self._fu
        while pos + 4 <= n:
            if data[pos] != 0x24:
                after_reply = self._skip_reply(data, pos)
                if after_reply is None:
                    break
                pos = after_reply
                continue
            start = pos + 4
            end = start + ((data[pos + 2] << 8) | data[pos + 3])
            if end > n:
                break
            channel = data[pos + 1]
            pos = end
            if channel != rtp_channel:
                if channel == self.rtcp_channel:
                    report = _sender_report(data, start, end)
                    if report is not None:
                        self._reports = [*(self._reports or ()), report]
                elif self.audio is not None:
                    if channel == self.audio.track.rtp_channel:
                        self.audio.packet(data, start, end)
                    elif channel == self.audio.track.rtcp_channel and (report := _sender_report(data, start, end)):
                        self.audio.reports.append(report)
                continue
            if end - start < 12:
                continue
            first, second, seq, ts, ssrc = unpack(data, start)
            at = start + 12
            if first != 0x80:  # CSRCs, a header extension or padding
                at, end = _payload_bounds(data, first, start, end)
            if seq != expected and expected >= 0:
                gap = (seq - expected) & 0xFFFF
                if gap > SEQ_JUMP:  # far ahead or behind: a restarted sender, not lost packets
                    self._seq_jump = True
                else:
                    self.lost_packets += gap
                # The unit in progress lost its end. At a unit boundary the loss was whole units
                # (their frames are a hole), or a restreamer's flush: the next unit starts clean
                # (an FU-A piece without its start still marks it damaged below).
                if fu is not None or self._unit.has_content():
                    self._unit.damaged = True
                fu = None
            expected = (seq + 1) & 0xFFFF
            if ts != current_ts or ssrc != self._ssrc:
                if fu is not None or self._unit.has_content():  # its marker was lost
                    if fu is not None:
                        self._unit.damaged, fu = True, None
                    self._finish(units, current_ts)
                current_ts, self._ssrc = ts, ssrc
            if at >= end:
                continue
            self._unit.size += end - at
            if self._unit.size > MAX_ACCESS_UNIT_BYTES:
                raise CameraFault(
                    f"access unit over {MAX_ACCESS_UNIT_BYTES >> 20} MB refused (a frame that never ends)"
                )
            indicator = data[at]
            if self.hevc:
                fu = self._hevc_payload(data, view, at, end, fu)
            elif (kind := indicator & 0x1F) == _FU_A and end - at > 2:
                fu_header = data[at + 1]
                if fu_header & 0x80:
                    fu = [bytes(((indicator & 0xE0) | (fu_header & 0x1F),)), view[at + 2 : end]]
                elif fu is not None:
                    fu.append(view[at + 2 : end])
                else:
                    self._unit.damaged = True  # a fragment without its start
                if fu_header & 0x40 and fu is not None:
                    self._unit.add_nal(fu[0][0], fu, sum(map(len, fu)))
                    fu = None
            elif 1 <= kind <= 23:
                self._unit.add_nal(indicator, [view[at:end]], end - at)
            elif kind == _STAP_A:
                self._aggregate(data, view, at + 1, end)
            else:
                self._unit.malformed = f"unsupported RTP packetization (NAL unit type {kind})"
            if second & 0x80:  # marker: the access unit is complete
                if fu is not None:  # ... but a NAL unit in it is not: a packet went missing
                    self._unit.damaged, fu = True, None
                self._finish(units, ts)
        self._rest = data[pos:]
        if len(self._rest) > MAX_REPLY_BYTES + 4:
            raise RtspError("lost framing in the interleaved stream")
        self._expected_seq, self._current_ts, self._fu = expected, current_ts, fu
        return units

    def _hevc_payload(self, data: bytes, view: memoryview, at: int, end: int, fu: list | None) -> list | None:
        """One H.265 RTP payload (RFC 7798 §4.4): a single NAL unit, an aggregation packet or a
        fragmentation unit; returns the fragmentation unit in progress."""
        if end - at < 3:
            self._unit.malformed = "H.265 RTP payload shorter than its header"
            return fu
        first, second = data[at], data[at + 1]
        kind = (first >> 1) & 0x3F
        if kind == _HEVC_FU:
            fu_header = data[at + 2]
            if fu_header & 0x80:
                header = bytes(((first & 0x81) | ((fu_header & 0x3F) << 1), second))
                fu = [header, view[at + 3 : end]]
            elif fu is not None:
                fu.append(view[at + 3 : end])
            else:
                self._unit.damaged = True  # a fragment without its start
            if fu_header & 0x40 and fu is not None:
                self._unit.add_nal(fu[0][0], fu, sum(map(len, fu)))
                fu = None
        elif kind == _HEVC_AP:
            self._aggregate(data, view, at + 2, end)
        elif kind < _HEVC_AP:
            self._unit.add_nal(first, [view[at:end]], end - at)
        else:
            self._unit.malformed = f"unsupported H.265 RTP packetization (payload type {kind})"
        return fu

    def _aggregate(self, data: bytes, view: memoryview, at: int, end: int) -> None:
        """STAP-A (H.264) or AP (H.265): NAL units each behind a 16-bit size."""
        while at + 2 <= end:
            size = (data[at] << 8) | data[at + 1]
            if size == 0 or at + 2 + size > end:
                self._unit.malformed = "aggregation packet with a NAL unit size beyond the packet"
                return
            self._unit.add_nal(data[at + 2], [view[at + 2 : at + 2 + size]], size)
            at += 2 + size

    def _finish(self, units: list[AccessUnit], ts32: int) -> None:
        unit, self._unit = self._unit, self._unit_type()
        if unit.damaged or not unit.has_content():
            return
        units.append(
            AccessUnit(
                b"".join(unit.parts),
                unit.parameter_sets,
                unit.keyframe,
                ts32,
                self._ssrc,
                time.time_ns() // 1000,
                unit.malformed,
                self._seq_jump,
                self._reports,
            )
        )
        self._seq_jump = False
        self._reports = None

    @staticmethod
    def _skip_reply(data: bytes, pos: int) -> int | None:
        """Where an RTSP reply (to a keep-alive) at pos ends; None while it is incomplete."""
        if not data.startswith(b"RTSP/", pos):
            if len(data) - pos < 5 and b"RTSP/".startswith(data[pos:]):
                return None
            raise RtspError("lost framing in the interleaved stream")
        head_end = data.find(b"\r\n\r\n", pos)
        if head_end < 0:
            return None
        match = _CONTENT_LENGTH.search(data, pos, head_end)
        end = head_end + 4 + (int(match.group(1)) if match else 0)
        return end if end <= len(data) else None


def _payload_bounds(data: bytes, first: int, start: int, end: int) -> tuple[int, int]:
    """Payload start and end of an RTP packet with CSRCs, a header extension or padding."""
    at = start + 12 + 4 * (first & 0x0F)
    if first & 0x10 and at + 4 <= end:
        at += 4 + 4 * ((data[at + 2] << 8) | data[at + 3])
    if first & 0x20:
        end -= data[end - 1]
    return at, end


def _sender_report(data: bytes, at: int, end: int) -> tuple[int, int, int] | None:
    """(ssrc, camera µs, RTP timestamp) from the first sender report in a compound RTCP packet."""
    while at + 20 <= end:
        packet_type = data[at + 1]
        words = (data[at + 2] << 8) | data[at + 3]
        if packet_type == 200 and at + 28 <= end:
            ssrc, ntp_sec, ntp_frac, rtp_ts = struct.unpack_from(">IIII", data, at + 4)
            return ssrc, ntp_sec * 1_000_000 + (ntp_frac * 1_000_000 >> 32) - NTP_EPOCH_OFFSET_US, rtp_ts
        at += 4 * (words + 1)
    return None
