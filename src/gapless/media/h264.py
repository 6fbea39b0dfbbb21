"""H.264 bitstream helpers: NAL units, Annex B <-> AVCC, SPS dimensions, Gapless SEI.

Gapless never decodes video; it only needs to find NAL unit boundaries, tell keyframes and
parameter sets apart, read picture dimensions for the MP4 sample entry, and read or write the
per-frame SEI message that the camera simulator stamps on every frame (camera id, frame number,
capture time) so that loss can be proven frame by frame.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass

NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9

_HEVC_SEI_PREFIX = 39  # H.265's prefix SEI NAL unit type (media/h265.py)
#: UUID of the Gapless frame-stamp SEI (user_data_unregistered, payload type 5).
GAPLESS_SEI_UUID = uuid.UUID("6a3f1c2e-9b4d-4e58-a1f0-5d0c7e9b2a11").bytes


class BitstreamError(ValueError):
    """The bytes are not a valid H.264 elementary stream."""


def split_annexb(data: bytes) -> list[bytes]:
    """Split an Annex B byte stream (start-code delimited) into NAL units without start codes."""
    start = data.find(b"\x00\x00\x01")
    if start < 0:
        raise BitstreamError("no start code in Annex B data")
    nals: list[bytes] = []
    while start >= 0:
        end = data.find(b"\x00\x00\x01", start + 3)
        # A NAL unit ends with its stop bit, so trailing zeros belong to the next start code.
        nal = data[start + 3 : end if end >= 0 else len(data)].rstrip(b"\x00")
        if nal:
            nals.append(nal)
        start = end
    return nals


def split_avcc(data: bytes) -> list[bytes]:
    """Split a length-prefixed (4-byte big-endian) AVCC sample into NAL units."""
    nals: list[bytes] = []
    pos = 0
    n = len(data)
    while pos + 4 <= n:
        (length,) = struct.unpack_from(">I", data, pos)
        pos += 4
        if length == 0 or pos + length > n:
            raise BitstreamError(f"bad NAL length {length} at offset {pos - 4}")
        nals.append(data[pos : pos + length])
        pos += length
    if pos != n:
        raise BitstreamError("trailing bytes after last NAL unit")
    return nals


def to_avcc(nals: list[bytes]) -> bytes:
    parts: list[bytes] = []
    for nal in nals:
        parts += (len(nal).to_bytes(4, "big"), nal)
    return b"".join(parts)


def to_annexb(nals: list[bytes]) -> bytes:
    return b"".join(b"\x00\x00\x00\x01" + nal for nal in nals)


def nal_type(nal: bytes) -> int:
    return nal[0] & 0x1F


def nal_header_problem(header: int) -> str | None:
    """Why a NAL unit header byte cannot be H.264 (forbidden bit set, or a type that is unspecified
    or only exists inside RTP packetization), or None when it can."""
    if header & 0x80:
        return f"NAL unit header {header:#04x} has the forbidden_zero_bit set"
    kind = header & 0x1F
    if kind == 0 or kind >= 24:
        return f"NAL unit header {header:#04x} has the unspecified type {kind}"
    return None


def escape_rbsp(rbsp: bytes) -> bytes:
    """Insert emulation prevention bytes (0x03) so that no start code appears in the payload."""
    out = bytearray()
    zeros = 0
    for b in rbsp:
        if zeros >= 2 and b <= 3:
            out.append(3)
            zeros = 0
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


def unescape_rbsp(data: bytes) -> bytes:
    """Remove emulation prevention bytes."""
    if b"\x00\x00\x03" not in data:
        return data
    out = bytearray()
    zeros = 0
    for b in data:
        if zeros >= 2 and b == 3:
            zeros = 0
            continue
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


@dataclass(frozen=True, slots=True)
class FrameStamp:
    """What the simulator writes into every frame."""

    camera: str
    frame: int
    capture_us: int


def build_stamp_sei(stamp: FrameStamp, hevc: bool = False) -> bytes:
    """A complete SEI NAL unit (header included) carrying the frame stamp: H.264, or an H.265 prefix SEI."""
    cam = stamp.camera.encode()
    body = GAPLESS_SEI_UUID + struct.pack(">QQB", stamp.frame, stamp.capture_us, len(cam)) + cam
    payload = bytearray([5])  # payload type: user_data_unregistered
    size = len(body)
    while size >= 255:
        payload.append(255)
        size -= 255
    payload.append(size)
    payload += body
    payload.append(0x80)  # rbsp trailing bits
    header = bytes([_HEVC_SEI_PREFIX << 1, 1]) if hevc else bytes([NAL_SEI])
    return header + escape_rbsp(bytes(payload))


def _sei_rbsp(nal: bytes) -> bytes | None:
    """The payload of an H.264 SEI or an H.265 prefix SEI NAL unit, else None."""
    if nal and nal_type(nal) == NAL_SEI:
        return unescape_rbsp(nal[1:])
    if len(nal) > 2 and (nal[0] >> 1) & 0x3F == _HEVC_SEI_PREFIX:
        return unescape_rbsp(nal[2:])
    return None


def parse_stamp_sei(nal: bytes) -> FrameStamp | None:
    """The frame stamp carried by an SEI NAL unit (H.264 or H.265), or None if it carries none."""
    rbsp = _sei_rbsp(nal)
    if rbsp is None:
        return None
    pos = 0
    while pos < len(rbsp) and rbsp[pos] != 0x80:
        ptype = 0
        while rbsp[pos] == 255:
            ptype += 255
            pos += 1
        ptype += rbsp[pos]
        pos += 1
        psize = 0
        while rbsp[pos] == 255:
            psize += 255
            pos += 1
        psize += rbsp[pos]
        pos += 1
        body = rbsp[pos : pos + psize]
        pos += psize
        if ptype == 5 and body[:16] == GAPLESS_SEI_UUID and len(body) >= 33:
            frame, capture_us, cam_len = struct.unpack_from(">QQB", body, 16)
            return FrameStamp(body[33 : 33 + cam_len].decode(errors="replace"), frame, capture_us)
    return None


def find_stamp(nals: list[bytes]) -> FrameStamp | None:
    for nal in nals:
        stamp = parse_stamp_sei(nal)
        if stamp is not None:
            return stamp
    return None


class _BitReader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def bit(self) -> int:
        byte = self.pos >> 3
        if byte >= len(self.data):
            raise BitstreamError("SPS truncated")
        value = (self.data[byte] >> (7 - (self.pos & 7))) & 1
        self.pos += 1
        return value

    def bits(self, n: int) -> int:
        value = 0
        for _ in range(n):
            value = (value << 1) | self.bit()
        return value

    def ue(self) -> int:
        zeros = 0
        while self.bit() == 0:
            zeros += 1
            if zeros > 31:
                raise BitstreamError("bad Exp-Golomb code in SPS")
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        value = self.ue()
        return (value + 1) // 2 if value & 1 else -(value // 2)


def _skip_scaling_list(reader: _BitReader, size: int) -> None:
    last, nxt = 8, 8
    for _ in range(size):
        if nxt:
            nxt = (last + reader.se() + 256) % 256
        last = nxt or last


@dataclass(frozen=True, slots=True)
class SpsInfo:
    profile_idc: int
    constraint_flags: int
    level_idc: int
    width: int
    height: int

    @property
    def codec_string(self) -> str:
        return f"avc1.{self.profile_idc:02x}{self.constraint_flags:02x}{self.level_idc:02x}"


def parse_sps(nal: bytes) -> SpsInfo:
    """Read profile, level and cropped picture size from an SPS NAL unit."""
    if nal_type(nal) != NAL_SPS or len(nal) < 4:
        raise BitstreamError("not an SPS NAL unit")
    rbsp = unescape_rbsp(nal[1:])
    profile, constraints, level = rbsp[0], rbsp[1], rbsp[2]
    r = _BitReader(rbsp[3:])
    r.ue()  # seq_parameter_set_id
    chroma_format_idc = 1
    if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        chroma_format_idc = r.ue()
        if chroma_format_idc == 3:
            r.bit()
        r.ue()
        r.ue()
        r.bit()
        if r.bit():  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format_idc != 3 else 12):
                if r.bit():
                    _skip_scaling_list(r, 16 if i < 6 else 64)
    r.ue()  # log2_max_frame_num_minus4
    poc_type = r.ue()
    if poc_type == 0:
        r.ue()
    elif poc_type == 1:
        r.bit()
        r.se()
        r.se()
        for _ in range(r.ue()):
            r.se()
    r.ue()  # max_num_ref_frames
    r.bit()
    width_mbs = r.ue() + 1
    height_map_units = r.ue() + 1
    frame_mbs_only = r.bit()
    if not frame_mbs_only:
        r.bit()
    r.bit()  # direct_8x8_inference_flag
    crop = (0, 0, 0, 0)
    if r.bit():
        crop = (r.ue(), r.ue(), r.ue(), r.ue())
    sub_w = 2 if chroma_format_idc in (1, 2) else 1
    sub_h = (2 if chroma_format_idc == 1 else 1) * (2 - frame_mbs_only)
    if chroma_format_idc == 0:
        sub_w, sub_h = 1, 2 - frame_mbs_only
    width = width_mbs * 16 - sub_w * (crop[0] + crop[1])
    height = (2 - frame_mbs_only) * height_map_units * 16 - sub_h * (crop[2] + crop[3])
    if profile not in _PROFILES or not (16 <= width <= 16384 and 16 <= height <= 16384) or level > 62:
        raise BitstreamError(f"implausible SPS (profile {profile}, level {level}, {width}x{height})")
    return SpsInfo(profile, constraints, level, width, height)


_PROFILES = frozenset({66, 77, 88, 100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})
