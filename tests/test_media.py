"""Bitstream and container helpers on real encoder output; HLS playlists."""

import dataclasses
import itertools
import random
import re
from dataclasses import dataclass

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
from gapless.media.hls import LiveNumbering, live_playlist, segments
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


@dataclass
class Row:
    """A fragment listing row, as far as playlists read one."""

    start_us: int
    end_us: int
    frames: int
    init: str = "i"
    keyframe_first: bool = True


URIS = {"segment_uri": lambda s: f"s/{s.start_us}", "init_uri": lambda i: f"i/{i}"}
BASE_US = 1_795_000_000_000_000  # camera time in 2026


def gops(durations_ms: list[int], start_us: int = BASE_US, fps: int = 25) -> list[Row]:
    rows = []
    for ms in durations_ms:
        rows.append(Row(start_us, start_us + ms * 1000, ms * fps // 1000))
        start_us += ms * 1000
    return rows


def listed(text: str) -> list[tuple[int, str]]:
    """(media sequence number, URI) of every entry of a live playlist, gap entries included."""
    number = int(re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", text).group(1))
    entries = []
    for line in text.splitlines():
        if line and not line.startswith("#"):
            entries.append((number, line))
            number += 1
    return entries


def test_a_gop_stored_in_pieces_is_one_segment_numbered_like_the_whole_gop():
    """Member A stored GOP 2 in two pieces (its own frames, then the backfilled rest, which does
    not start with a keyframe); member B stored it whole. Both must list the same segments with the
    same media sequence numbers, or a player switched between them by the gateway skips or repeats."""
    whole = gops([2000] * 6)
    split = [*whole[:2], Row(whole[2].start_us, whole[2].start_us + 1_240_000, 31)]
    split += [Row(whole[2].start_us + 1_240_000, whole[3].start_us, 19, keyframe_first=False), *whole[3:]]
    assert segments(split) == segments(whole)
    numbering = LiveNumbering()
    assert live_playlist(split, numbering, last=4, **URIS) == live_playlist(whole, numbering, last=4, **URIS)


def test_live_numbers_hold_while_gop_lengths_vary():
    """A camera that puts keyframes at scene cuts (and one that loses frames under load) makes GOPs
    of every length: the typical one moves from window to window. A segment keeps its number in
    every later playlist and numbers rise by one per entry (numbers from camera time / typical GOP
    jumped by millions here). The GStreamer cluster test's live reader saw this happen."""
    rng = random.Random(7)
    rows = gops([rng.choice([400, 1040, 1080, 1120, 1160, 2000]) for _ in range(300)])
    numbering, seen = LiveNumbering(), {}
    for end in range(18, len(rows) + 1):  # a poll per new GOP, over the 18 newest (as recorders list)
        entries = listed(live_playlist(rows[end - 18 : end], numbering, **URIS))
        assert [b - a for (a, _), (b, _) in itertools.pairwise(entries)] == [1] * (len(entries) - 1)
        assert "gap.m4s" not in {uri for _, uri in entries}  # no GOP is missing
        for number, uri in entries:
            assert seen.setdefault(uri, number) == number, (uri, number, seen[uri])
    assert len(seen) == len(rows) - 12  # the first playlist's six, then each new one


def test_a_player_moved_to_the_other_member_goes_on_where_it_was():
    """The gateway numbers a camera's segments by start, whichever member's rows it lists: rec-b's
    rows continue rec-a's numbers, a GOP rec-b lacks is a gap entry under the number it had, and
    once rec-a has backfilled it, it is listed under that number."""
    rows = gops([1000, 1040, 960, 2000, 1500, 1000, 1000, 1200, 800, 1000, 1000, 1000])
    numbering = LiveNumbering()
    on_a = listed(live_playlist(rows[:8], numbering, **URIS))  # rec-a held the token, then died
    # rec-b lacks GOP 6 (its own feed hiccuped) and lists two newer ones; its sender reports put
    # every keyframe 12 µs later than rec-a's did (each recorder's reports are computed apart)
    on_b = listed(live_playlist([*rows[:6], *rows[7:10]], numbering, **URIS))
    numbers = {uri: number for number, uri in on_a}
    assert all(numbers[uri] == number for number, uri in on_b if uri in numbers)
    later = [dataclasses.replace(row, start_us=row.start_us + 12, end_us=row.end_us + 12) for row in rows]
    assert [n for n, _ in listed(live_playlist([*later[:6], *later[7:10]], numbering, **URIS))] == [n for n, _ in on_b]
    assert on_b[-4:] == [(numbers[f"s/{rows[6].start_us}"], "gap.m4s"), *on_b[-3:]]
    assert [n for n, _ in on_b] == list(range(on_b[0][0], on_b[0][0] + len(on_b)))
    # rec-a back, backfilled: GOP 6 is listed under the number its gap had
    back = listed(live_playlist(rows, numbering, last=10, **URIS))
    assert (numbers[f"s/{rows[6].start_us}"], f"s/{rows[6].start_us}") in back


def test_a_hole_in_the_recording_is_gap_entries_one_per_typical_gop():
    rows = gops([2000] * 6)
    after = gops([2000] * 3, start_us=rows[-1].end_us + 6_000_000)  # 3 GOPs never recorded
    numbering = LiveNumbering()
    first = listed(live_playlist(rows, numbering, **URIS))
    entries = listed(live_playlist([*rows, *after], numbering, last=9, **URIS))
    assert entries[:6] == first  # numbers kept
    assert [uri for _, uri in entries[6:9]] == ["gap.m4s"] * 3
    assert [n for n, _ in entries] == list(range(entries[0][0], entries[0][0] + 12))


def test_a_restarted_numbering_starts_above_every_number_given_before():
    """A gateway that restarts forgets its numbers; its players must move forward, never back."""
    rows = gops([400] * 400)  # the shortest GOPs a camera makes: numbers rise fastest
    before = LiveNumbering()
    for end in range(18, len(rows), 9):
        last_given = listed(live_playlist(rows[end - 18 : end], before, **URIS))[-1][0]
    after = listed(live_playlist(rows[-18:], LiveNumbering(), **URIS))
    assert after[0][0] > last_given


def test_a_segment_listed_late_between_two_numbered_ones_is_left_out():
    """Players are past it: there is no number left for it, and numbers never move. A segment
    older than every number remembered is left out too."""
    rows = gops([2000] * 3)
    numbering = LiveNumbering()
    first = listed(live_playlist(rows, numbering, **URIS))
    late = Row(rows[0].start_us + 1_000_000, rows[0].start_us + 1_900_000, 22)  # another member's cut
    assert listed(live_playlist([rows[0], late, *rows[1:]], numbering, **URIS)) == first
    many = gops([2000] * (LiveNumbering.KEEP + 10), start_us=rows[-1].end_us)
    for end in range(1, len(many) + 1):
        live_playlist(many[:end], numbering, last=1, **URIS)
    assert listed(live_playlist([rows[0], *many[-3:]], numbering, **URIS)) == listed(
        live_playlist(many[-3:], numbering, **URIS)
    )
