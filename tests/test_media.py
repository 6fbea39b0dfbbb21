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
