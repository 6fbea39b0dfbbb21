"""Fragmented MP4 (ISO BMFF) writing and reading for one H.264 (`avc1`) or H.265 (`hvc1`) video track.

Gapless stores each GOP as one `moof+mdat` fragment and each codec configuration as one init
segment (`ftyp+moov`). Timestamps are on a 90 kHz timescale and the fragment's
`baseMediaDecodeTime` is the camera time of its first frame, so fragments recorded by two
recorders of the same camera sit on one timeline and can be spliced without rewriting.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from gapless.media import h265
from gapless.media.h264 import SpsInfo, parse_sps

TIMESCALE = 90_000
TRACK_ID = 1

_SAMPLE_FLAGS_SYNC = 0x02000000  # sample_depends_on = 2 (does not depend on others)
_SAMPLE_FLAGS_NON_SYNC = 0x01010000  # depends on others, is_non_sync_sample


def us_to_ticks(us: int) -> int:
    return (us * 9 + 50) // 100


def ticks_to_us(ticks: int) -> int:
    return (ticks * 100 + 4) // 9


def box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I", 8 + len(body)) + kind + body


def full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return box(kind, struct.pack(">I", (version << 24) | flags), *payload)


_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


def avcc_record(sps: bytes, pps: bytes, info: SpsInfo) -> bytes:
    return (
        bytes([1, info.profile_idc, info.constraint_flags, info.level_idc, 0xFF, 0xE1])
        + struct.pack(">H", len(sps))
        + sps
        + bytes([1])
        + struct.pack(">H", len(pps))
        + pps
    )


def _config_record(init: bytes, kind: bytes) -> bytes | None:
    at = init.find(kind)
    if at < 4:
        return None
    return init[at + 4 : at - 4 + struct.unpack_from(">I", init, at - 4)[0]]


def init_parameter_sets(init: bytes) -> list[bytes]:
    """The parameter sets in an init segment's `avcC` (SPS, PPS) or `hvcC` (VPS, SPS, PPS)."""
    hvcc = _config_record(init, b"hvcC")
    if hvcc is not None:
        return h265.hvcc_parameter_sets(hvcc)
    record = _config_record(init, b"avcC")
    if record is None:
        raise ValueError("init segment has neither an avcC nor an hvcC box")
    if len(record) < 8 or record[5] & 0x1F != 1:
        raise ValueError("avcC must hold exactly one SPS")
    sps_len = struct.unpack_from(">H", record, 6)[0]
    sps = record[8 : 8 + sps_len]
    pps_at = 8 + sps_len + 1
    pps_len = struct.unpack_from(">H", record, pps_at)[0]
    return [sps, record[pps_at + 2 : pps_at + 2 + pps_len]]


def describe_init(init: bytes) -> tuple[str, int, int]:
    """(codec string, width, height) of an init segment, read from its parameter sets."""
    sets = init_parameter_sets(init)
    if b"hvcC" in init:
        sps = next((n for n in sets if h265.nal_type(n) == h265.NAL_SPS), b"")
        hevc = h265.parse_sps(sps)
        return hevc.codec_string, hevc.width, hevc.height
    avc = parse_sps(sets[0])
    return avc.codec_string, avc.width, avc.height


def build_init_segment(sps: bytes, pps: bytes, info: SpsInfo) -> bytes:
    """`ftyp+moov` for one H.264 track with an empty sample table (fragments carry the samples)."""
    return _init_segment(b"avc1", box(b"avcC", avcc_record(sps, pps, info)), info.width, info.height)


def build_hevc_init_segment(vps: bytes, sps: bytes, pps: bytes, info: h265.HevcSpsInfo) -> bytes:
    """`ftyp+moov` for one H.265 track (`hvc1`: parameter sets in the record and in band)."""
    return _init_segment(b"hvc1", box(b"hvcC", h265.hvcc_record(vps, sps, pps, info)), info.width, info.height)


def _init_segment(entry: bytes, config: bytes, width: int, height: int) -> bytes:
    ftyp = box(b"ftyp", b"iso5", struct.pack(">I", 512), b"iso5iso6" + entry + b"mp41")
    mvhd = full_box(
        b"mvhd",
        0,
        0,
        struct.pack(">IIII", 0, 0, TIMESCALE, 0),
        struct.pack(">IH", 0x00010000, 0x0100),
        bytes(10),
        _MATRIX,
        bytes(24),
        struct.pack(">I", 2),
    )
    tkhd = full_box(
        b"tkhd",
        0,
        3,
        struct.pack(">IIIII", 0, 0, TRACK_ID, 0, 0),
        bytes(8),
        struct.pack(">hhhH", 0, 0, 0, 0),
        _MATRIX,
        struct.pack(">II", width << 16, height << 16),
    )
    mdhd = full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, TIMESCALE, 0, 0x55C4, 0))
    hdlr = full_box(b"hdlr", 0, 0, bytes(4), b"vide", bytes(12), b"Gapless video\x00")
    vmhd = full_box(b"vmhd", 0, 1, bytes(8))
    dinf = box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, 1)))
    sample_entry = box(
        entry,
        bytes(6),
        struct.pack(">H", 1),
        bytes(16),
        struct.pack(">HHIIIH", width, height, 0x00480000, 0x00480000, 0, 1),
        bytes(32),
        struct.pack(">Hh", 0x18, -1),
        config,
    )
    stbl = box(
        b"stbl",
        full_box(b"stsd", 0, 0, struct.pack(">I", 1), sample_entry),
        full_box(b"stts", 0, 0, struct.pack(">I", 0)),
        full_box(b"stsc", 0, 0, struct.pack(">I", 0)),
        full_box(b"stsz", 0, 0, struct.pack(">II", 0, 0)),
        full_box(b"stco", 0, 0, struct.pack(">I", 0)),
    )
    trak = box(b"trak", tkhd, box(b"mdia", mdhd, hdlr, box(b"minf", vmhd, dinf, stbl)))
    mvex = box(b"mvex", full_box(b"trex", 0, 0, struct.pack(">IIIII", TRACK_ID, 1, 0, 0, 0)))
    return ftyp + box(b"moov", mvhd, trak, mvex)


@dataclass(frozen=True, slots=True)
class Sample:
    """One access unit: AVCC data, decode time and duration in 90 kHz ticks."""

    data: bytes
    dts: int
    duration: int
    cts_offset: int
    keyframe: bool


def build_fragment(sequence: int, samples: list[Sample]) -> bytes:
    """`moof+mdat` for the samples; the first sample's dts becomes the baseMediaDecodeTime."""
    if not samples:
        raise ValueError("a fragment needs at least one sample")
    entries = b"".join(
        struct.pack(
            ">IIIi",
            s.duration,
            len(s.data),
            _SAMPLE_FLAGS_SYNC if s.keyframe else _SAMPLE_FLAGS_NON_SYNC,
            s.cts_offset,
        )
        for s in samples
    )
    trun_flags = 0x000001 | 0x000100 | 0x000200 | 0x000400 | 0x000800

    def moof_with(data_offset: int) -> bytes:
        traf = box(
            b"traf",
            full_box(b"tfhd", 0, 0x020000, struct.pack(">I", TRACK_ID)),
            full_box(b"tfdt", 1, 0, struct.pack(">Q", samples[0].dts)),
            full_box(b"trun", 1, trun_flags, struct.pack(">Ii", len(samples), data_offset), entries),
        )
        return box(b"moof", full_box(b"mfhd", 0, 0, struct.pack(">I", sequence & 0xFFFFFFFF)), traf)

    moof_size = len(moof_with(0))
    mdat_size = 8 + sum(len(s.data) for s in samples)
    return b"".join([moof_with(moof_size + 8), struct.pack(">I", mdat_size), b"mdat", *(s.data for s in samples)])


def iter_boxes(data: bytes, start: int = 0, end: int | None = None):
    """Yield (kind, payload_start, box_end) for the boxes laid end to end in data[start:end]."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        if size < header or pos + size > end:
            raise ValueError(f"bad box size {size} for {kind!r} at {pos}")
        yield kind, pos + header, pos + size
        pos += size


def parse_fragment(data: bytes) -> list[Sample]:
    """The samples of one `moof+mdat` fragment as written by :func:`build_fragment`."""
    boxes = list(iter_boxes(data))
    moof = next((b for b in boxes if b[0] == b"moof"), None)
    if moof is None:
        raise ValueError("fragment has no moof")
    moof_start = moof[1] - 8
    traf = next(b for b in iter_boxes(data, moof[1], moof[2]) if b[0] == b"traf")
    base_dts = 0
    samples: list[Sample] = []
    for kind, start, _end in iter_boxes(data, traf[1], traf[2]):
        if kind == b"tfdt":
            version = data[start]
            base_dts = struct.unpack_from(">Q" if version == 1 else ">I", data, start + 4)[0]
        elif kind == b"trun":
            flags = int.from_bytes(data[start + 1 : start + 4], "big")
            if flags != 0x000F01:
                raise ValueError(f"unsupported trun flags {flags:#x}")
            count, data_offset = struct.unpack_from(">Ii", data, start + 4)
            pos = start + 12
            offset = moof_start + data_offset
            dts = base_dts
            for _ in range(count):
                duration, size, sflags, cts = struct.unpack_from(">IIIi", data, pos)
                pos += 16
                samples.append(Sample(data[offset : offset + size], dts, duration, cts, not sflags & 0x00010000))
                offset += size
                dts += duration
    return samples


def with_inband_parameter_sets(fragment: bytes, sequence: int, parameter_sets: list[bytes]) -> bytes | None:
    """The fragment with its parameter sets in front of every keyframe, so that a decoder set up from another
    init segment switches to this one (resolution or profile change inside one export). Frames
    before the fragment's first keyframe cannot be decoded after such a switch and are left out;
    None when no frame is left."""
    head = b"".join(len(nal).to_bytes(4, "big") + nal for nal in parameter_sets)
    samples = parse_fragment(fragment)
    first_key = next((i for i, s in enumerate(samples) if s.keyframe), None)
    if first_key is None:
        return None
    switched = [
        Sample(head + s.data, s.dts, s.duration, s.cts_offset, True) if s.keyframe else s for s in samples[first_key:]
    ]
    return build_fragment(sequence, switched)
