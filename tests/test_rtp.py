"""The recorder's RTP depacketizer (ingest/rtp.py) on interleaved streams built by the simulator's
packetizer: every access unit comes out whole, however the bytes are split, and damage is dropped
and counted, never stored half."""

import random
import struct

import pytest

from gapless.ingest.rtp import InterleavedRtp
from gapless.ingest.rtsp import CameraFault, RtspError
from gapless.media.h264 import to_avcc
from gapless.sim.rtp import packetize_h264, packetize_h265, rtp_header, sender_report

SPS = bytes([0x67, 0x64, 0x00, 0x1F]) + bytes(range(20))
PPS = bytes([0x68, 0xEE, 0x3C, 0x80])
FRAME_TICKS = 3600  # 25 fps on the 90 kHz clock
REPORT_US = 1_700_000_000_000_000


def access_units(count: int, seed: int = 7) -> list[list[bytes]]:
    """A GOP-like sequence: a keyframe (with parameter sets) every 10 frames, SEI on every frame."""
    rnd = random.Random(seed)
    units = []
    for i in range(count):
        sei = bytes([0x06, 0x05, 0x10]) + rnd.randbytes(16) + bytes([0x80])
        if i % 10 == 0:
            units.append([SPS, PPS, sei, bytes([0x65]) + rnd.randbytes(rnd.randint(3000, 20000))])
        else:
            units.append([sei, bytes([0x41]) + rnd.randbytes(rnd.randint(100, 4000))])
    return units


def interleave(channel: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0x24, channel, len(payload)) + payload


def rtp_packets(units: list[list[bytes]], first_ts: int = 1000, first_seq: int = 65000) -> list[bytes]:
    """Interleaved RTP packets of the units (sequence numbers wrap), a sender report first."""
    out = [interleave(1, sender_report(0x1234, REPORT_US, first_ts, 0, 0))]
    seq = first_seq
    for i, nals in enumerate(units):
        ts = (first_ts + i * FRAME_TICKS) & 0xFFFFFFFF
        for payload, marker in packetize_h264(nals):
            out.append(interleave(0, rtp_header(96, seq, ts, 0x1234, marker) + payload))
            seq += 1
    return out


def feed_in_pieces(depacketizer: InterleavedRtp, stream: bytes, seed: int) -> list:
    rnd = random.Random(seed)
    units, at = [], 0
    while at < len(stream):
        step = rnd.choice([1, 3, 7, 100, 1500, 40000])
        units += depacketizer.feed(memoryview(stream[at : at + step]))
        at += step
    return units


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_access_unit_comes_out_whole_however_the_bytes_are_split(seed):
    sent = access_units(30)
    reply = b"RTSP/1.0 200 OK\r\nCSeq: 9\r\nContent-Length: 5\r\n\r\nhello"  # a keep-alive reply
    packets = rtp_packets(sent)
    stream = b"".join(packets[:40]) + reply + b"".join(packets[40:])
    depacketizer = InterleavedRtp()
    got = feed_in_pieces(depacketizer, stream, seed)

    assert len(got) == len(sent)
    assert depacketizer.lost_packets == 0
    for i, (unit, nals) in enumerate(zip(got, sent, strict=True)):
        assert unit.avcc == to_avcc([n for n in nals if n[0] & 0x1F not in (7, 8)])
        assert unit.keyframe == (i % 10 == 0)
        assert unit.parameter_sets == ([SPS, PPS] if i % 10 == 0 else [])
        assert unit.rtp_ts == 1000 + i * FRAME_TICKS
        assert unit.ssrc == 0x1234
        assert unit.reports == ([(0x1234, REPORT_US, 1000)] if i == 0 else None)
        assert unit.malformed is None and not unit.seq_jump


def test_a_sequence_jump_is_a_discontinuity_not_loss():
    sent = access_units(12)
    first = rtp_packets(sent[:6], first_seq=100)
    second = rtp_packets(sent[6:], first_ts=1000 + 6 * FRAME_TICKS, first_seq=40000)[1:]
    depacketizer = InterleavedRtp()
    got = depacketizer.feed(b"".join(first + second))
    assert depacketizer.lost_packets == 0
    assert [u.seq_jump for u in got] == [False] * 6 + [True] + [False] * 5


def test_an_access_unit_that_never_ends_is_refused_in_words():
    depacketizer = InterleavedRtp()
    start = bytes([0x7C, 0x85]) + bytes(60000)  # FU-A start of an IDR slice, never ended
    middle = bytes([0x7C, 0x05]) + bytes(60000)
    packets = [interleave(0, rtp_header(96, 1, 0, 1, False) + start)]
    packets += [interleave(0, rtp_header(96, 2 + i, 0, 1, False) + middle) for i in range(200)]
    with pytest.raises(CameraFault, match="access unit over 8 MB"):
        for packet in packets:
            depacketizer.feed(packet)


def test_a_lost_packet_drops_only_its_access_unit_and_is_counted():
    sent = access_units(20)
    packets = rtp_packets(sent)
    first_of_unit_3 = 1 + sum(len(packetize_h264(nals)) for nals in sent[:3])
    del packets[first_of_unit_3 + 1]  # its slice (its first packet is the SEI)
    depacketizer = InterleavedRtp()
    got = depacketizer.feed(b"".join(packets))
    assert depacketizer.lost_packets == 1
    numbers = [(u.rtp_ts - 1000) // FRAME_TICKS for u in got]
    assert numbers == [i for i in range(20) if i != 3]
    assert [u.avcc for u in got] == [to_avcc([n for n in sent[i] if n[0] & 0x1F not in (7, 8)]) for i in numbers]


def test_units_end_on_a_timestamp_change_when_the_sender_never_sets_the_marker():
    sent = access_units(8)
    stream = bytearray(b"".join(rtp_packets(sent)))
    at = 0
    while at < len(stream):  # clear every marker bit
        if stream[at + 1] == 0:
            stream[at + 5] &= 0x7F
        at += 4 + struct.unpack_from(">H", stream, at + 2)[0]
    got = InterleavedRtp().feed(bytes(stream))
    assert len(got) == 7  # the last one waits for the next timestamp
    assert [u.avcc for u in got] == [to_avcc([n for n in nals if n[0] & 0x1F not in (7, 8)]) for nals in sent[:7]]


def test_stap_a_aggregates_are_split_into_their_nal_units():
    idr = bytes([0x65]) + bytes(range(200))
    stap = bytes([0x18]) + b"".join(len(n).to_bytes(2, "big") + n for n in (SPS, PPS, idr))
    got = InterleavedRtp().feed(interleave(0, rtp_header(96, 1, 0, 1, True) + stap))
    assert len(got) == 1
    assert (got[0].parameter_sets, got[0].avcc, got[0].keyframe) == ([SPS, PPS], to_avcc([idr]), True)
    assert got[0].reports is None  # no sender report yet


def test_garbage_is_marked_malformed_and_lost_framing_is_an_error():
    forbidden = bytes([0xE5]) + bytes(50)  # forbidden_zero_bit set
    got = InterleavedRtp().feed(interleave(0, rtp_header(96, 1, 0, 1, True) + forbidden))
    assert got[0].malformed and "forbidden" in got[0].malformed
    reserved = bytes([0x1E]) + bytes(50)  # NAL unit type 30: no such packetization
    got = InterleavedRtp().feed(interleave(0, rtp_header(96, 1, 0, 1, True) + reserved))
    assert got[0].malformed and "30" in got[0].malformed
    with pytest.raises(RtspError, match="lost framing"):
        InterleavedRtp().feed(b"HTTP/1.1 200 OK\r\n\r\n")


def test_h265_single_nal_units_and_fragmentation_units_come_out_whole():
    """RFC 7798 packets from the simulator's H.265 packetizer: two-byte NAL headers, FU type 49."""
    vps, sps, pps = bytes([0x40, 0x01, 0x0C]), bytes([0x42, 0x01, 0x01, 0x60]), bytes([0x44, 0x01, 0xC1])
    rnd = random.Random(3)
    sent = []
    for i in range(12):
        kind = 19 if i % 6 == 0 else 1  # IDR_W_RADL, else TRAIL_R
        slice_nal = bytes([kind << 1, 0x01]) + rnd.randbytes(rnd.randint(500, 9000))
        sent.append([vps, sps, pps, slice_nal] if kind == 19 else [slice_nal])
    stream = bytearray(interleave(1, sender_report(0x55, REPORT_US, 0, 0, 0)))
    seq = 10
    for i, nals in enumerate(sent):
        for payload, marker in packetize_h265(nals):
            stream += interleave(0, rtp_header(96, seq, i * FRAME_TICKS, 0x55, marker) + payload)
            seq += 1
    got = feed_in_pieces(InterleavedRtp(codec="h265"), bytes(stream), 9)
    assert len(got) == len(sent)
    for i, (unit, nals) in enumerate(zip(got, sent, strict=True)):
        assert unit.keyframe == (i % 6 == 0) and unit.malformed is None
        assert unit.parameter_sets == ([vps, sps, pps] if i % 6 == 0 else [])
        assert unit.avcc == to_avcc(nals[-1:])
