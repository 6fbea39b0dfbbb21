"""Fragmented MP4 (ISO BMFF) writing and reading: one H.264 (`avc1`) or H.265 (`hvc1`) video track,
and the camera's audio track when it has one (media/audio.py).

Gapless stores each GOP as one `moof+mdat` fragment and each codec configuration as one init
segment (`ftyp+moov`). Timestamps are on a 90 kHz timescale and the fragment's
`baseMediaDecodeTime` is the camera time of its first frame, so fragments recorded by two
recorders of the same camera sit on one timeline and can be spliced without rewriting. The audio
track (track 2) is timed the same way on its sample rate: its decode time is camera time too.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from gapless.media import h265
from gapless.media.audio import SAMPLE_ENTRY, AudioFormat, audio_of_init
from gapless.media.h264 import SpsInfo, parse_sps

TIMESCALE = 90_000
TRACK_ID = 1
AUDIO_TRACK_ID = 2

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
    """(codec string, width, height) of an init segment, read from its parameter sets; the codec
    string names the audio too when there is any (`avc1.64001f,mp4a.40.2`)."""
    sets = init_parameter_sets(init)
    if b"hvcC" in init:
        sps = next((n for n in sets if h265.nal_type(n) == h265.NAL_SPS), b"")
        hevc = h265.parse_sps(sps)
        codec, width, height = hevc.codec_string, hevc.width, hevc.height
    else:
        avc = parse_sps(sets[0])
        codec, width, height = avc.codec_string, avc.width, avc.height
    audio = audio_of_init(init)
    return (f"{codec},{audio.codec_string}" if audio else codec), width, height


def build_init_segment(sps: bytes, pps: bytes, info: SpsInfo, audio: AudioFormat | None = None) -> bytes:
    """`ftyp+moov` for one H.264 track with an empty sample table (fragments carry the samples)."""
    return _init_segment(b"avc1", box(b"avcC", avcc_record(sps, pps, info)), info.width, info.height, audio)


def build_hevc_init_segment(
    vps: bytes, sps: bytes, pps: bytes, info: h265.HevcSpsInfo, audio: AudioFormat | None = None
) -> bytes:
    """`ftyp+moov` for one H.265 track (`hvc1`: parameter sets in the record and in band)."""
    config = box(b"hvcC", h265.hvcc_record(vps, sps, pps, info))
    return _init_segment(b"hvc1", config, info.width, info.height, audio)


def _stbl(sample_entry: bytes) -> bytes:
    return box(
        b"stbl",
        full_box(b"stsd", 0, 0, struct.pack(">I", 1), sample_entry),
        full_box(b"stts", 0, 0, struct.pack(">I", 0)),
        full_box(b"stsc", 0, 0, struct.pack(">I", 0)),
        full_box(b"stsz", 0, 0, struct.pack(">II", 0, 0)),
        full_box(b"stco", 0, 0, struct.pack(">I", 0)),
    )


_DINF = box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, 1)))


def _descriptor(tag: int, body: bytes) -> bytes:
    """An MPEG-4 descriptor (ISO/IEC 14496-1) with its length in the 4-byte form."""
    size = len(body)
    length = bytes([0x80 | (size >> 21) & 0x7F, 0x80 | (size >> 14) & 0x7F, 0x80 | (size >> 7) & 0x7F, size & 0x7F])
    return bytes([tag]) + length + body


def _audio_sample_entry(audio: AudioFormat) -> bytes:
    """The `stsd` entry: an ISO audio sample entry (which is also QuickTime's version-0 sound
    description, what `ulaw`/`alaw` need), with an `esds` for AAC."""
    head = (
        bytes(6)
        + struct.pack(">H", 1)
        + bytes(8)
        + struct.pack(">HHHHI", audio.channels, 16, 0, 0, (audio.rate if audio.rate < 65536 else 0) << 16)
    )
    if audio.codec != "aac":
        return box(SAMPLE_ENTRY[audio.codec], head)
    decoder_config = _descriptor(4, bytes([0x40, 0x15]) + bytes(11) + _descriptor(5, audio.config))
    es = _descriptor(3, struct.pack(">HB", 2, 0) + decoder_config + _descriptor(6, b"\x02"))
    return box(b"mp4a", head, full_box(b"esds", 0, 0, es))


def _tkhd(track: int, alternate_group: int, volume: int, width: int, height: int) -> bytes:
    """A track header (enabled, in movie), of no duration: fragments carry the samples."""
    return full_box(
        b"tkhd",
        0,
        3,
        struct.pack(">IIIII", 0, 0, track, 0, 0),
        bytes(8),
        struct.pack(">hhhH", 0, alternate_group, volume, 0),
        _MATRIX,
        struct.pack(">II", width << 16, height << 16),
    )


def _mdhd(timescale: int) -> bytes:
    return full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, timescale, 0, 0x55C4, 0))


def _audio_trak(audio: AudioFormat) -> bytes:
    tkhd = _tkhd(AUDIO_TRACK_ID, 1, 0x0100, 0, 0)
    mdhd = _mdhd(audio.rate)
    hdlr = full_box(b"hdlr", 0, 0, bytes(4), b"soun", bytes(12), b"Gapless audio\x00")
    smhd = full_box(b"smhd", 0, 0, bytes(4))
    return box(b"trak", tkhd, box(b"mdia", mdhd, hdlr, box(b"minf", smhd, _DINF, _stbl(_audio_sample_entry(audio)))))


def _trex(track: int) -> bytes:
    return full_box(b"trex", 0, 0, struct.pack(">IIIII", track, 1, 0, 0, 0))


def _init_segment(entry: bytes, config: bytes, width: int, height: int, audio: AudioFormat | None) -> bytes:
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
        struct.pack(">I", 3 if audio else 2),
    )
    tkhd = _tkhd(TRACK_ID, 0, 0, width, height)
    mdhd = _mdhd(TIMESCALE)
    hdlr = full_box(b"hdlr", 0, 0, bytes(4), b"vide", bytes(12), b"Gapless video\x00")
    vmhd = full_box(b"vmhd", 0, 1, bytes(8))
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
    trak = box(b"trak", tkhd, box(b"mdia", mdhd, hdlr, box(b"minf", vmhd, _DINF, _stbl(sample_entry))))
    if audio is None:
        return ftyp + box(b"moov", mvhd, trak, box(b"mvex", _trex(TRACK_ID)))
    mvex = box(b"mvex", _trex(TRACK_ID), _trex(AUDIO_TRACK_ID))
    return ftyp + box(b"moov", mvhd, trak, _audio_trak(audio), mvex)


@dataclass(frozen=True, slots=True)
class Sample:
    """One access unit: AVCC data, decode time and duration in 90 kHz ticks."""

    data: bytes
    dts: int
    duration: int
    cts_offset: int
    keyframe: bool


_VIDEO_TRUN_FLAGS = 0x000F01  # data offset; per sample: duration, size, flags, composition offset
_AUDIO_TRUN_FLAGS = 0x000301  # data offset; per sample: duration, size


def build_fragment(sequence: int, samples: list[Sample], audio: list[Sample] | None = None) -> bytes:
    """`moof+mdat` for the samples; the first sample's dts becomes the baseMediaDecodeTime. Audio
    samples (their dts on the audio track's timescale) follow the video in the mdat."""
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
    video_bytes = sum(len(s.data) for s in samples)

    def moof_with(data_offset: int) -> bytes:
        trafs = [
            box(
                b"traf",
                full_box(b"tfhd", 0, 0x020000, struct.pack(">I", TRACK_ID)),
                full_box(b"tfdt", 1, 0, struct.pack(">Q", samples[0].dts)),
                full_box(b"trun", 1, _VIDEO_TRUN_FLAGS, struct.pack(">Ii", len(samples), data_offset), entries),
            )
        ]
        if audio:
            audio_entries = b"".join(struct.pack(">II", s.duration, len(s.data)) for s in audio)
            head = struct.pack(">Ii", len(audio), data_offset + video_bytes)
            trafs.append(
                box(
                    b"traf",
                    full_box(b"tfhd", 0, 0x020000, struct.pack(">I", AUDIO_TRACK_ID)),
                    full_box(b"tfdt", 1, 0, struct.pack(">Q", audio[0].dts)),
                    full_box(b"trun", 0, _AUDIO_TRUN_FLAGS, head, audio_entries),
                )
            )
        return box(b"moof", full_box(b"mfhd", 0, 0, struct.pack(">I", sequence & 0xFFFFFFFF)), *trafs)

    moof_size = len(moof_with(0))
    audio = audio or []
    mdat_size = 8 + video_bytes + sum(len(s.data) for s in audio)
    return b"".join(
        [
            moof_with(moof_size + 8),
            struct.pack(">I", mdat_size),
            b"mdat",
            *(s.data for s in samples),
            *(s.data for s in audio),
        ]
    )


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


def parse_tracks(data: bytes) -> dict[int, list[Sample]]:
    """The samples of one `moof+mdat` fragment as written by :func:`build_fragment`, by track id."""
    moof = next((b for b in iter_boxes(data) if b[0] == b"moof"), None)
    if moof is None:
        raise ValueError("fragment has no moof")
    moof_start = moof[1] - 8
    tracks: dict[int, list[Sample]] = {}
    for kind, traf_start, traf_end in iter_boxes(data, moof[1], moof[2]):
        if kind != b"traf":
            continue
        track, base_dts = TRACK_ID, 0
        samples = tracks.setdefault(track, [])
        for kind, start, _end in iter_boxes(data, traf_start, traf_end):
            if kind == b"tfhd":
                track = struct.unpack_from(">I", data, start + 4)[0]
                samples = tracks.setdefault(track, [])
            elif kind == b"tfdt":
                version = data[start]
                base_dts = struct.unpack_from(">Q" if version == 1 else ">I", data, start + 4)[0]
            elif kind == b"trun":
                samples += _trun_samples(data, start, moof_start, base_dts)
    return tracks


def _trun_samples(data: bytes, start: int, moof_start: int, base_dts: int) -> list[Sample]:
    flags = int.from_bytes(data[start + 1 : start + 4], "big")
    if flags not in (_VIDEO_TRUN_FLAGS, _AUDIO_TRUN_FLAGS):
        raise ValueError(f"unsupported trun flags {flags:#x}")
    count, data_offset = struct.unpack_from(">Ii", data, start + 4)
    pos = start + 12
    offset = moof_start + data_offset
    dts = base_dts
    samples = []
    for _ in range(count):
        if flags == _VIDEO_TRUN_FLAGS:
            duration, size, sflags, cts = struct.unpack_from(">IIIi", data, pos)
            pos += 16
        else:
            (duration, size), sflags, cts = struct.unpack_from(">II", data, pos), 0, 0
            pos += 8
        if offset + size > len(data):
            raise ValueError("trun sample beyond the end of the mdat")
        samples.append(Sample(data[offset : offset + size], dts, duration, cts, not sflags & 0x00010000))
        offset += size
        dts += duration
    return samples


def parse_fragment(data: bytes) -> list[Sample]:
    """The video samples of one `moof+mdat` fragment as written by :func:`build_fragment`."""
    return parse_tracks(data).get(TRACK_ID, [])


def parse_audio(data: bytes) -> list[Sample]:
    """The audio samples of a fragment (none for a camera without audio)."""
    return parse_tracks(data).get(AUDIO_TRACK_ID, [])


def with_inband_parameter_sets(
    fragment: bytes, sequence: int, parameter_sets: list[bytes], keep_audio: bool = True
) -> bytes | None:
    """The fragment with its parameter sets in front of every keyframe, so that a decoder set up from another
    init segment switches to this one (resolution or profile change inside one export). Frames
    before the fragment's first keyframe cannot be decoded after such a switch and are left out;
    None when no frame is left."""
    head = b"".join(len(nal).to_bytes(4, "big") + nal for nal in parameter_sets)
    tracks = parse_tracks(fragment)
    samples = tracks.get(TRACK_ID, [])
    first_key = next((i for i, s in enumerate(samples) if s.keyframe), None)
    if first_key is None:
        return None
    switched = [
        Sample(head + s.data, s.dts, s.duration, s.cts_offset, True) if s.keyframe else s for s in samples[first_key:]
    ]
    return build_fragment(sequence, switched, tracks.get(AUDIO_TRACK_ID) if keep_audio else None)


def video_only_init(init: bytes) -> bytes:
    """The init segment without its audio track (for players that cannot play the audio)."""
    sets = init_parameter_sets(init)
    if b"hvcC" in init:
        vps, sps, pps = sets  # hvcC records are written with exactly these three (h265.hvcc_record)
        return build_hevc_init_segment(vps, sps, pps, h265.parse_sps(sps))
    return build_init_segment(sets[0], sets[1], parse_sps(sets[0]))


def without_audio(fragment: bytes) -> bytes:
    """The fragment's video alone (for players that cannot play its audio)."""
    tracks = parse_tracks(fragment)
    if AUDIO_TRACK_ID not in tracks:
        return fragment
    sequence = struct.unpack_from(">I", fragment, 20)[0]  # moof(8) mfhd(8 + 4)
    return build_fragment(sequence, tracks[TRACK_ID])
