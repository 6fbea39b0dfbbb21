"""H.265/HEVC bitstream helpers (ITU-T H.265): NAL unit types, the SPS fields an `hvcC` record and
a codec string need, and the record itself. As for H.264, Gapless never decodes: it tells keyframes
and parameter sets apart and describes the stream for MP4 and HLS.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from gapless.media.h264 import BitstreamError, _BitReader, unescape_rbsp

NAL_VPS = 32
NAL_SPS = 33
NAL_PPS = 34
NAL_AUD = 35
NAL_SEI_PREFIX = 39
NAL_SEI_SUFFIX = 40
#: Intra random access points (BLA, IDR, CRA): a decoder can start at one.
IRAP_TYPES = range(16, 24)
PARAMETER_SET_TYPES = (NAL_VPS, NAL_SPS, NAL_PPS)


def nal_type(nal: bytes) -> int:
    return (nal[0] >> 1) & 0x3F


def nal_header_problem(first: int, second: int) -> str | None:
    """Why a two-byte NAL unit header cannot be H.265, or None when it can."""
    if first & 0x80:
        return f"NAL unit header {first:02x}{second:02x} has the forbidden_zero_bit set"
    if second & 0x07 == 0:
        return f"NAL unit header {first:02x}{second:02x} has nuh_temporal_id_plus1 0"
    kind = (first >> 1) & 0x3F
    if kind >= 48:
        return f"NAL unit header {first:02x}{second:02x} has the type {kind}, which exists only in RTP packets"
    return None


@dataclass(frozen=True, slots=True)
class HevcSpsInfo:
    profile_space: int
    tier: int
    profile_idc: int
    compatibility_flags: int  # 32 bits
    constraint_flags: int  # 48 bits
    level_idc: int
    chroma_format_idc: int
    bit_depth_luma: int
    bit_depth_chroma: int
    width: int
    height: int

    @property
    def codec_string(self) -> str:
        """As RFC 6381 / ISO 14496-15 Annex E write it, e.g. hvc1.1.6.L93.B0."""
        space = ("", "A", "B", "C")[self.profile_space]
        compatibility = int(f"{self.compatibility_flags:032b}"[::-1], 2)  # bits in reverse order
        constraints = self.constraint_flags.to_bytes(6, "big").rstrip(b"\x00")
        tail = "".join(f".{b:X}" for b in constraints)
        return f"hvc1.{space}{self.profile_idc}.{compatibility:X}.{'HL'[self.tier == 0]}{self.level_idc}{tail}"


def _profile_tier_level(r: _BitReader, max_sub_layers_minus1: int) -> tuple[int, int, int, int, int, int]:
    space, tier, profile = r.bits(2), r.bit(), r.bits(5)
    compatibility = r.bits(32)
    constraints = r.bits(48)
    level = r.bits(8)
    present = [(r.bit(), r.bit()) for _ in range(max_sub_layers_minus1)]
    if max_sub_layers_minus1:
        r.bits(2 * (8 - max_sub_layers_minus1))
    for profile_present, level_present in present:
        if profile_present:
            r.bits(88)
        if level_present:
            r.bits(8)
    return space, tier, profile, compatibility, constraints, level


def parse_sps(nal: bytes) -> HevcSpsInfo:
    """Profile, tier, level, chroma format, bit depths and the cropped picture size of an SPS."""
    if len(nal) < 4 or nal_type(nal) != NAL_SPS:
        raise BitstreamError("not an H.265 SPS NAL unit")
    r = _BitReader(unescape_rbsp(nal[2:]))
    r.bits(4)  # sps_video_parameter_set_id
    max_sub_layers_minus1 = r.bits(3)
    r.bit()  # temporal_id_nesting
    space, tier, profile, compatibility, constraints, level = _profile_tier_level(r, max_sub_layers_minus1)
    r.ue()  # sps_seq_parameter_set_id
    chroma = r.ue()
    if chroma > 3:
        raise BitstreamError(f"H.265 SPS with chroma_format_idc {chroma}")
    if chroma == 3:
        r.bit()  # separate_colour_plane_flag
    width, height = r.ue(), r.ue()
    if r.bit():  # conformance_window_flag
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        sub_w = 2 if chroma in (1, 2) else 1
        sub_h = 2 if chroma == 1 else 1
        width -= sub_w * (left + right)
        height -= sub_h * (top + bottom)
    depth_luma, depth_chroma = r.ue() + 8, r.ue() + 8
    if not (0 < width <= 16384 and 0 < height <= 16384):
        raise BitstreamError(f"H.265 SPS with a picture of {width}x{height}")
    return HevcSpsInfo(
        space, tier, profile, compatibility, constraints, level, chroma, depth_luma, depth_chroma, width, height
    )


def hvcc_record(vps: bytes, sps: bytes, pps: bytes, info: HevcSpsInfo) -> bytes:
    """An HEVCDecoderConfigurationRecord (ISO 14496-15 8.3.3.1) with one VPS, SPS and PPS."""
    head = bytes([1, (info.profile_space << 6) | (info.tier << 5) | info.profile_idc])
    head += struct.pack(">I", info.compatibility_flags) + info.constraint_flags.to_bytes(6, "big")
    head += bytes(
        [
            info.level_idc,
            0xF0,
            0x00,  # min_spatial_segmentation_idc 0
            0xFC,  # parallelismType unknown
            0xFC | info.chroma_format_idc,
            0xF8 | (info.bit_depth_luma - 8),
            0xF8 | (info.bit_depth_chroma - 8),
            0,
            0,  # avgFrameRate unknown
            0x0F,  # constantFrameRate 0, one temporal layer, nested, 4-byte NAL lengths
            3,
        ]
    )
    arrays = b"".join(
        bytes([0x80 | kind]) + struct.pack(">HH", 1, len(nal)) + nal
        for kind, nal in ((NAL_VPS, vps), (NAL_SPS, sps), (NAL_PPS, pps))
    )
    return head + arrays


def hvcc_parameter_sets(record: bytes) -> list[bytes]:
    """The NAL units of an HEVCDecoderConfigurationRecord's arrays, in order."""
    if len(record) < 23:
        raise ValueError("hvcC record too short")
    out, pos = [], 23
    for _ in range(record[22]):
        count = struct.unpack_from(">H", record, pos + 1)[0]
        pos += 3
        for _ in range(count):
            length = struct.unpack_from(">H", record, pos)[0]
            out.append(record[pos + 2 : pos + 2 + length])
            pos += 2 + length
    return out
