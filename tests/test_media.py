"""Bitstream and container helpers on real encoder output."""

from gapless.media.fmp4 import Sample, build_fragment, build_init_segment, parse_fragment
from gapless.media.h264 import (
    FrameStamp,
    build_stamp_sei,
    find_stamp,
    parse_sps,
    split_annexb,
    split_avcc,
    to_annexb,
    to_avcc,
)
from gapless.sim.encoder import Profile, encode_loop


def test_sei_round_trip_survives_emulation_prevention():
    # capture time and frame number chosen to contain 0x000000/0x000001 byte runs
    stamp = FrameStamp("cam0", 0x0000_0001_0000_0000, 0x0000_0000_0100_0003)
    nal = build_stamp_sei(stamp)
    assert b"\x00\x00\x00" not in nal and b"\x00\x00\x01" not in nal
    assert find_stamp(split_annexb(to_annexb([nal]))) == stamp


def test_annexb_avcc_and_sps_on_encoder_output():
    loop = encode_loop(Profile(320, 240, 25, 10, 300_000), gops=1)
    info = parse_sps(loop.sps)
    assert (info.width, info.height) == (320, 240)
    nals = loop.frames[0]
    assert split_avcc(to_avcc(nals)) == nals
    assert split_annexb(to_annexb([loop.sps, loop.pps, *nals])) == [loop.sps, loop.pps, *nals]


def test_fragment_round_trip_keeps_samples_and_times():
    loop = encode_loop(Profile(320, 240, 25, 10, 300_000), gops=1)
    samples = [Sample(to_avcc(nals), 1_000_000 + i * 3600, 3600, 0, i == 0) for i, nals in enumerate(loop.frames)]
    parsed = parse_fragment(build_fragment(7, samples))
    assert parsed == samples
    init = build_init_segment(loop.sps, loop.pps, parse_sps(loop.sps))
    assert init[4:8] == b"ftyp" and b"avcC" in init


def test_a_gop_stored_in_pieces_is_one_segment_numbered_like_the_whole_gop():
    """Member A stored GOP 2 in two pieces (its own frames, then the backfilled rest, which does
    not start with a keyframe); member B stored it whole. Both must list the same segments with the
    same media sequence numbers, or a player switched between them by the gateway skips or repeats."""
    from dataclasses import dataclass

    from gapless.media.hls import playlist, segments

    @dataclass
    class Row:
        start_us: int
        end_us: int
        frames: int
        init: str = "i"
        keyframe_first: bool = True

    base = 1_700_000_000_000_000
    whole = [Row(base + k * 2_000_000, base + (k + 1) * 2_000_000, 50) for k in range(6)]
    split = [*whole[:2], Row(whole[2].start_us, whole[2].start_us + 1_240_000, 31)]
    split += [Row(whole[2].start_us + 1_240_000, whole[3].start_us, 19, keyframe_first=False), *whole[3:]]
    assert segments(split) == segments(whole)
    uris = {"segment_uri": lambda s: f"s/{s.start_us}", "init_uri": lambda i: f"i/{i}"}
    assert playlist(split, live=True, last=4, **uris) == playlist(whole, live=True, last=4, **uris)
