"""RTP packetization (RFC 6184 H.264, RFC 7798 H.265, RFC 6416 MPEG-4) and RTCP sender reports (RFC 3550)."""

from __future__ import annotations

import struct

NTP_EPOCH_OFFSET = 2_208_988_800  # seconds between 1900-01-01 and 1970-01-01
MAX_PAYLOAD = 1400


def rtp_header(payload_type: int, seq: int, timestamp: int, ssrc: int, marker: bool) -> bytes:
    return struct.pack(
        ">BBHII", 0x80, (0x80 if marker else 0) | payload_type, seq & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc
    )


def packetize_h264(nals: list[bytes], max_payload: int = MAX_PAYLOAD) -> list[tuple[bytes, bool]]:
    """RTP payloads for one access unit: single NAL unit packets or FU-A fragments.

    Returns (payload, marker) pairs; the marker is set on the last packet of the access unit.
    """
    payloads: list[bytes] = []
    for nal in nals:
        if len(nal) <= max_payload:
            payloads.append(nal)
            continue
        header = nal[0]
        indicator = (header & 0xE0) | 28
        kind = header & 0x1F
        body = nal[1:]
        chunk = max_payload - 2
        for start in range(0, len(body), chunk):
            first = start == 0
            last = start + chunk >= len(body)
            fu_header = (0x80 if first else 0) | (0x40 if last else 0) | kind
            payloads.append(bytes([indicator, fu_header]) + body[start : start + chunk])
    return [(p, i == len(payloads) - 1) for i, p in enumerate(payloads)]


def packetize_h265(nals: list[bytes], max_payload: int = MAX_PAYLOAD) -> list[tuple[bytes, bool]]:
    """RTP payloads for one H.265 access unit (RFC 7798): single NAL unit packets or fragmentation units."""
    payloads: list[bytes] = []
    for nal in nals:
        if len(nal) <= max_payload:
            payloads.append(nal)
            continue
        header = bytes(((nal[0] & 0x81) | (49 << 1), nal[1]))
        kind = (nal[0] >> 1) & 0x3F
        body = nal[2:]
        chunk = max_payload - 3
        for start in range(0, len(body), chunk):
            fu_header = (0x80 if start == 0 else 0) | (0x40 if start + chunk >= len(body) else 0) | kind
            payloads.append(header + bytes([fu_header]) + body[start : start + chunk])
    return [(p, i == len(payloads) - 1) for i, p in enumerate(payloads)]


def packetize_mpeg4(frame: bytes, max_payload: int = MAX_PAYLOAD) -> list[tuple[bytes, bool]]:
    parts = [frame[i : i + max_payload] for i in range(0, len(frame), max_payload)]
    return [(p, i == len(parts) - 1) for i, p in enumerate(parts)]


def ntp_timestamp(unix_us: int) -> tuple[int, int]:
    seconds, micros = divmod(unix_us, 1_000_000)
    return seconds + NTP_EPOCH_OFFSET, (micros << 32) // 1_000_000


def sender_report(ssrc: int, unix_us: int, rtp_timestamp: int, packets: int, octets: int) -> bytes:
    ntp_sec, ntp_frac = ntp_timestamp(unix_us)
    return struct.pack(
        ">BBHIIIIII",
        0x80,
        200,
        6,
        ssrc,
        ntp_sec & 0xFFFFFFFF,
        ntp_frac,
        rtp_timestamp & 0xFFFFFFFF,
        packets & 0xFFFFFFFF,
        octets & 0xFFFFFFFF,
    )
