"""Camera audio over RTP -> audio access units: AAC in RFC 3640's AAC-hbr mode (MPEG4-GENERIC: AU
headers, several AUs per packet or one AU over several packets) and G.711 (RFC 3551: one packet of
samples is one unit).

Audio is second to the video it accompanies: whatever the audio track does wrong (malformed AU
headers, oversized units, lost packets) costs only the audio. Too many malformed packets switch the
track off for the session, with the reason in `problem`, and the video records on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from gapless.ingest.clock import SEQ_JUMP
from gapless.ingest.rtsp import AudioTrack
from gapless.media.audio import AAC_FRAME_SAMPLES

#: An AAC access unit is at most 6144 bits per channel; anything near this is not audio.
MAX_AUDIO_UNIT_BYTES = 64 << 10
#: The audio track is switched off after this many malformed packets, if they are this share of all.
MALFORMED_LIMIT = (20, 0.05)


@dataclass(slots=True)
class AudioUnit:
    data: bytes  # one AAC access unit, or one packet of G.711 samples
    rtp_ts: int
    ssrc: int
    arrival_us: int
    seq_jump: bool = False


class AudioRtp:
    """Push parser for the audio channel: `packet` per RTP packet, `take` for the units completed."""

    def __init__(self, track: AudioTrack) -> None:
        self.track = track
        self.aac = track.format.codec == "aac"
        self.header_bits = track.size_length + track.index_length
        self.units: list[AudioUnit] = []
        self.reports: list[tuple[int, int, int]] = []
        self.packets = self.malformed = self.lost_packets = 0
        self.problem = ""  # set when the track is switched off
        self._expected = -1
        self._seq_jump = False
        self._partial: list[bytes] = []  # pieces of an AAC AU spread over packets
        self._partial_size = 0

    def packet(self, data: bytes, start: int, end: int) -> None:
        if self.problem or end - start < 12:
            return
        self.packets += 1
        seq = (data[start + 2] << 8) | data[start + 3]
        ts = int.from_bytes(data[start + 4 : start + 8], "big")
        ssrc = int.from_bytes(data[start + 8 : start + 12], "big")
        if self._expected >= 0 and seq != self._expected:
            gap = (seq - self._expected) & 0xFFFF
            if gap > SEQ_JUMP:
                self._seq_jump = True
            else:
                self.lost_packets += gap
            self._partial, self._partial_size = [], 0
        self._expected = (seq + 1) & 0xFFFF
        first = data[start]
        at = start + 12 + 4 * (first & 0x0F)
        if first & 0x10 and at + 4 <= end:
            at += 4 + 4 * ((data[at + 2] << 8) | data[at + 3])
        if first & 0x20 and end > at:
            end -= data[end - 1]
        arrival = time.time_ns() // 1000
        if at >= end:
            return
        if not self.aac:
            self._add(bytes(data[at:end]), ts, ssrc, arrival)
            return
        problem = self._aac(data, at, end, ts, ssrc, arrival, marker=bool(data[start + 1] & 0x80))
        if problem:
            self.malformed += 1
            if self.malformed >= MALFORMED_LIMIT[0] and self.malformed > MALFORMED_LIMIT[1] * self.packets:
                self.problem = f"audio switched off: {self.malformed} of {self.packets} packets malformed ({problem})"

    def _aac(self, data: bytes, at: int, end: int, ts: int, ssrc: int, arrival: int, marker: bool) -> str:
        """One AAC-hbr payload; returns what is wrong with it, or ''."""
        if end - at < 2:
            return "AAC payload shorter than its AU header length"
        header_bits = (data[at] << 8) | data[at + 1]
        count = header_bits // self.header_bits if self.header_bits else 0
        body = at + 2 + (header_bits + 7) // 8
        if not count or body > end:
            return f"AU headers of {header_bits} bits do not fit the packet"
        headers = int.from_bytes(data[at + 2 : body], "big") >> ((body - at - 2) * 8 - header_bits)
        sizes = [
            (headers >> (header_bits - (i + 1) * self.header_bits + self.track.index_length))
            & ((1 << self.track.size_length) - 1)
            for i in range(count)
        ]
        if count == 1 and sizes[0] > end - body:  # one AU spread over several packets
            if sizes[0] > MAX_AUDIO_UNIT_BYTES:
                return f"AAC unit of {sizes[0]} bytes"
            self._partial.append(bytes(data[body:end]))
            self._partial_size += end - body
            if self._partial_size >= sizes[0] or marker:
                unit, self._partial, self._partial_size = b"".join(self._partial), [], 0
                if len(unit) != sizes[0]:
                    return f"AAC unit of {len(unit)} bytes where its header says {sizes[0]}"
                self._add(unit, ts, ssrc, arrival)
            return ""
        if sum(sizes) > end - body:
            return f"AU sizes ({sum(sizes)} bytes) beyond the packet ({end - body} bytes)"
        for i, size in enumerate(sizes):
            self._add(bytes(data[body : body + size]), ts + i * AAC_FRAME_SAMPLES, ssrc, arrival)
            body += size
        return ""

    def _add(self, unit: bytes, ts: int, ssrc: int, arrival: int) -> None:
        if unit:
            self.units.append(AudioUnit(unit, ts & 0xFFFFFFFF, ssrc, arrival, self._seq_jump))
            self._seq_jump = False

    def take(self) -> tuple[list[AudioUnit], list[tuple[int, int, int]]]:
        """The units completed and the sender reports received since the last call, in arrival order."""
        units, reports = self.units, self.reports
        self.units, self.reports = [], []
        return units, reports
