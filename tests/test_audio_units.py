"""Audio's pieces one by one: SDP audio tracks (AAC, G.711 static payload types, audio listed first,
codecs we do not record), RFC 3640 depacketization (several AUs per packet, one AU over packets,
malformed headers switching the audio off), the fragmenter's assignment of audio to fragments by
time, and backfill trimming audio with its video."""

from __future__ import annotations

import struct

import pytest

from gapless.backfill.trim import missing_runs
from gapless.ingest.clock import SessionClock
from gapless.ingest.fragmenter import AudioPacket, Fragmenter, Packet
from gapless.ingest.rtp_audio import AudioRtp
from gapless.ingest.rtsp import AudioTrack, parse_sdp
from gapless.media.audio import AudioFormat, audio_of_init, parse_audio_specific_config
from gapless.media.fmp4 import (
    AUDIO_TRACK_ID,
    TRACK_ID,
    Sample,
    build_fragment,
    build_init_segment,
    parse_tracks,
    video_only_init,
)
from gapless.media.h264 import parse_sps
from gapless.sim.encoder import Profile, encode_loop

AAC_16K_MONO = bytes.fromhex("1408")
VIDEO = "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:trackID=0\r\n"
AAC = (
    "m=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/16000/1\r\n"
    "a=fmtp:97 streamtype=5;profile-level-id=15;mode=AAC-hbr;config=1408;sizelength=13;indexlength=3;"
    "indexdeltalength=3\r\na=control:trackID=1\r\n"
)


def sdp(*sections: str) -> str:
    return "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=cam\r\nt=0 0\r\nm=" + "m=".join(s[2:] for s in sections)


def test_audio_first_aac_track_is_found_with_its_au_header_sizes():
    info, video_url = parse_sdp(sdp(AAC, VIDEO), "rtsp://cam/live/")
    assert video_url == "rtsp://cam/live/trackID=0"
    assert info.audio is not None and info.audio_problem == ""
    assert info.audio.format == AudioFormat("aac", 16000, 1, AAC_16K_MONO)
    assert (info.audio.control, info.audio.size_length, info.audio.index_length) == ("rtsp://cam/live/trackID=1", 13, 3)


def test_g711_static_payload_types_need_no_rtpmap():
    info, _ = parse_sdp(sdp(VIDEO, "m=audio 0 RTP/AVP 8\r\na=control:trackID=1\r\n"), "rtsp://cam/")
    assert info.audio is not None and info.audio.format == AudioFormat("pcma", 8000, 1)
    assert info.audio.format.describe() == "G.711 PCMA 8 kHz mono"


@pytest.mark.parametrize(
    ("section", "says"),
    [
        ("m=audio 0 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n", "audio codec opus is not recorded"),
        ("m=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/16000/1\r\na=fmtp:97 config=1408\r\n", "AAC in mode"),
        (AAC.replace("config=1408", "config=0808"), "AAC object type 1 is not recorded"),
        (AAC.replace("MPEG4-GENERIC/16000", "MPEG4-GENERIC/8000"), "config says 16000 Hz, the RTP clock 8000"),
    ],
)
def test_audio_we_cannot_record_is_named_and_the_video_still_records(section, says):
    info, _ = parse_sdp(sdp(VIDEO, section), "rtsp://cam/")
    assert info.audio is None and says in info.audio_problem and info.codec == "h264"


def test_audio_specific_config_and_init_segment_round_trip():
    config = bytes.fromhex("1190")  # AAC-LC 48 kHz stereo
    audio = parse_audio_specific_config(config)
    assert (audio.rate, audio.channels, audio.codec_string) == (48000, 2, "mp4a.40.2")
    loop = encode_loop(Profile(320, 240, 25, 25, 300_000))
    init = build_init_segment(loop.sps, loop.pps, parse_sps(loop.sps), audio)
    video_only = build_init_segment(loop.sps, loop.pps, parse_sps(loop.sps))
    assert audio_of_init(init) == audio
    assert audio_of_init(video_only) is None
    assert video_only_init(init) == video_only  # what HLS serves for a G.711 camera


def rtp(seq: int, ts: int, payload: bytes, marker: bool = True) -> bytes:
    return struct.pack(">BBHII", 0x80, (0x80 if marker else 0) | 97, seq, ts, 42) + payload


def aac_payload(*units: bytes) -> bytes:
    headers = b"".join((len(u) << 3).to_bytes(2, "big") for u in units)
    return (16 * len(units)).to_bytes(2, "big") + headers + b"".join(units)


def feed(parser: AudioRtp, packet: bytes) -> None:
    parser.packet(packet, 0, len(packet))


def track(codec: str = "aac") -> AudioTrack:
    rate = 16000 if codec == "aac" else 8000
    return AudioTrack(AudioFormat(codec, rate, 1, AAC_16K_MONO if codec == "aac" else b""), 97, "rtsp://cam/1")


def test_several_aac_units_in_one_packet_and_one_unit_over_three():
    parser = AudioRtp(track())
    feed(parser, rtp(1, 1000, aac_payload(b"A" * 10, b"B" * 20, b"C" * 5)))
    big = b"D" * 3000
    head = (16).to_bytes(2, "big") + (len(big) << 3).to_bytes(2, "big")
    for i, piece in enumerate((big[:1200], big[1200:2400], big[2400:])):
        feed(parser, rtp(2 + i, 4072, head + piece, marker=i == 2))
    units, _reports = parser.take()
    assert [(u.data[:1], len(u.data), u.rtp_ts) for u in units] == [
        (b"A", 10, 1000),
        (b"B", 20, 2024),
        (b"C", 5, 3048),
        (b"D", 3000, 4072),
    ]


def test_a_lost_packet_costs_only_its_units():
    parser = AudioRtp(track("pcmu"))
    feed(parser, rtp(1, 0, b"\x7f" * 160))
    feed(parser, rtp(3, 320, b"\x7f" * 160))
    units, _ = parser.take()
    assert [u.rtp_ts for u in units] == [0, 320] and parser.lost_packets == 1 and not parser.problem


def test_malformed_aac_switches_the_audio_off_in_words():
    parser = AudioRtp(track())
    for seq in range(30):
        feed(parser, rtp(seq, seq * 1024, b"\x00\x10\xff\xf8" + b"x" * 100))
    assert parser.problem.startswith("audio switched off: 20 of 20 packets malformed")
    assert "beyond the packet" in parser.problem or "AAC unit" in parser.problem
    assert parser.take()[0] == []


def test_fragments_carry_exactly_the_audio_of_their_time():
    """Audio before the first keyframe's fragment is counted, not stored; each fragment then holds the
    units that start in its span, and waits for them."""
    loop = encode_loop(Profile(320, 240, 25, 25, 300_000))
    video_clock, audio_clock = SessionClock(90_000), SessionClock(16_000)
    audio = AudioFormat("aac", 16000, 1, AAC_16K_MONO)
    frag = Fragmenter("cam", "rec", video_clock, audio=audio, audio_clock=audio_clock)
    frag.set_parameter_sets([loop.sps, loop.pps])
    t0 = 1_780_000_000_000_000
    for clock, rate in ((video_clock, 90_000), (audio_clock, 16_000)):
        clock.report(7, t0, 0)
        clock.report(7, t0 + 1_000_000, rate)
    done = []
    audio_ts = 0
    for n in range(100):  # 4 s of video (GOPs of 1 s) and the audio of that time
        capture = n * 40_000
        while audio_ts * 1_000_000 // 16000 <= capture:
            segment, media = audio_clock.frame(7, audio_ts - 8192, False, t0 + audio_ts * 62)
            done += frag.push_audio(AudioPacket(audio_ts.to_bytes(4, "big"), segment, media, t0 + capture))
            audio_ts += 1024
        segment, media = video_clock.frame(7, n * 3600, False, t0 + capture, n % 25 == 0)
        data = b"".join(len(nal).to_bytes(4, "big") + nal for nal in loop.frames[n % 25])
        done += frag.push(Packet(data, n % 25 == 0, [], segment, media, t0 + capture))
    done += frag.flush()
    assert len(done) == 4 and frag.audio_dropped == 8  # the 8 units (0.5 s) before the first frame
    for fragment in done:
        tracks = parse_tracks(fragment.payload)
        units = [s.dts * 1_000_000 // 16000 for s in tracks[AUDIO_TRACK_ID]]
        assert all(fragment.start_us <= t < fragment.end_us for t in units)
        assert len(tracks[TRACK_ID]) == 25
    stored = [s.data for f in done for s in parse_tracks(f.payload)[AUDIO_TRACK_ID]]
    assert len(stored) == len(set(stored)) == frag.audio_frames


def test_backfill_keeps_the_partners_audio_of_the_frames_we_lack():
    t = 1_780_000_000_000_000
    video = [Sample(b"\0\0\0\1\x41", t * 9 // 100 + i * 3600, 3600, 0, i == 0) for i in range(25)]
    audio = [Sample(bytes([i]), t * 16 // 1000 + i * 1024, 1024, 0, True) for i in range(16)]
    payload = build_fragment(1, video, audio)
    ours = [(t - 1_000_000, t + 400_000)]  # we hold the first 10 frames (0.4 s) already
    (run,) = missing_runs(payload, t, t + 1_000_000, 1, ours, audio_rate=16000)
    kept = parse_tracks(run.payload)
    assert run.start_us == t + 400_000 and len(kept[TRACK_ID]) == 15
    assert [s.data[0] for s in kept[AUDIO_TRACK_ID]] == list(range(7, 16))  # units from 0.448 s on
