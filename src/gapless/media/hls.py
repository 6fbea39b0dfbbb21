"""HLS playlists (fMP4 segments = stored fragments), their media URIs signed.

A live playlist numbers its segments with a `LiveNumbering` kept between requests: a segment is
known by its start (camera time, the same on every recorder of the camera within SAME_GOP_US),
keeps the number it was first given, and a new one continues from the newest numbered before it;
missing GOPs become `EXT-X-GAP` entries rather than a renumbering. So a player switched from one
recorder's rows to the other's (the gateway, invariant 8 of ha.md) sees numbers that neither skip
nor repeat, whatever the camera's GOP lengths do.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypedDict

from gapless.common.signing import signed
from gapless.common.timeparse import iso

LIVE_SEGMENTS = 6


def nominal_duration_us(rows: list) -> int:
    durations = [r.end_us - r.start_us for r in rows] or [2_000_000]
    return max(1000, round(statistics.median(durations), -3))


#: A GOP's later pieces join the segment of its first piece only if they start this soon after it.
MAX_GOP_US = 10_000_000

#: Two recorders' times of one keyframe differ by less than this (each timed by the camera's sender
#: reports: within ~12 ms with gst-rtsp-server; by its own arrival estimate: tens of ms), and no
#: camera makes GOPs this short: a segment start this close to another names the same GOP.
SAME_GOP_US = 100_000


def same_gop(start_us: int, other_start_us: int) -> bool:
    """Whether two segment starts (of one camera, maybe from two recorders) name one GOP."""
    return abs(start_us - other_start_us) < SAME_GOP_US


@dataclass(frozen=True, slots=True)
class Segment:
    """One playlist entry: a GOP, made of one stored fragment or of several pieces of it."""

    start_us: int
    end_us: int
    frames: int
    init: str
    source: str = ""  # the recorder its first fragment was listed by, where rows say (the gateway's)


def continues_gop(segment_start_us: int, segment_init: str, row) -> bool:
    """Whether a fragment is a later piece of the GOP whose segment starts at segment_start_us:
    it does not start with a keyframe (a GOP split at missing frames, or the backfilled rest of a
    GOP), has the same init segment, and starts within MAX_GOP_US."""
    return not row.keyframe_first and row.init == segment_init and row.start_us - segment_start_us < MAX_GOP_US


def segments(rows: list) -> list[Segment]:
    """Group rows (sorted by start; anything with start_us, end_us, frames, init, keyframe_first)
    into segments, one per GOP (see continues_gop). Two recorders of one camera therefore list a
    GOP as the same segment, starting at its keyframe's camera time, however each stores it."""
    out: list[Segment] = []
    for row in rows:
        last = out[-1] if out else None
        if last is not None and continues_gop(last.start_us, last.init, row):
            out[-1] = Segment(
                last.start_us, max(last.end_us, row.end_us), last.frames + row.frames, last.init, last.source
            )
        else:
            out.append(Segment(row.start_us, row.end_us, row.frames, row.init, getattr(row, "source", "")))
    return out


def segment_path(camera: str, start_us: int) -> str:
    """Where a segment is fetched, on a recorder and on the gateway alike."""
    return f"/api/v1/cameras/{camera}/segments/{start_us}.m4s"


def side_segment_path(camera: str, recorder: str, start_us: int) -> str:
    """A paired camera's segment on the gateway, from the recorder that listed it."""
    return f"/api/v1/cameras/{camera}/recorders/{recorder}/segments/{start_us}.m4s"


class MediaUris(TypedDict):
    """How a playlist names its segments and init segments."""

    segment_uri: Callable[[Segment], str]
    init_uri: Callable[[str], str]


def signed_uris(token: str, camera: str, ttl: float) -> MediaUris:
    """Segment and init URIs for playlists: signed, so players need no header."""
    return {
        "segment_uri": lambda segment: signed(token, segment_path(camera, segment.start_us), ttl),
        "init_uri": lambda init: signed(token, f"/api/v1/cameras/{camera}/inits/{init}.mp4", ttl),
    }


#: A fresh numbering starts at its first segment's camera time in tenths of a second (SAME_GOP_US):
#: no camera makes GOPs that short, so a numbering started again later (a restarted gateway) starts
#: above every number the earlier one gave, and its players move forward, never back.
FRESH_START_UNIT_US = SAME_GOP_US


@dataclass(slots=True)
class _Given:
    start_us: int
    end_us: int
    number: int


class LiveNumbering:
    """Media sequence numbers for one camera's live playlists, kept between requests.

    HLS requires a listed segment to keep its number in every later playlist, one number per entry.
    Numbers computed from camera time alone (`start / typical GOP`) break that as soon as GOP lengths
    vary (keyframes at scene cuts, "smart" codecs, frames lost under load): the typical duration
    moves and every number with it, by millions at today's camera times. So a segment is numbered
    once, by its start; a new segment continues from the one numbered just before it, after one
    gap number per typical GOP missing between them."""

    KEEP = 64  # numbers remembered per camera: ten live windows

    def __init__(self) -> None:
        self._given: list[_Given] = []  # ascending by start, and so by number

    def number(self, entries: list[Segment], nominal_us: int) -> list[tuple[int, Segment]]:
        """Each entry (ascending by start) with its number, ascending. Left out: an entry older than
        anything numbered, or one that falls between two numbered segments with no number left
        between them (a GOP listed late, which players have passed)."""
        numbered = []
        for entry in entries:
            number = self._number_of(entry, nominal_us)
            if number is not None:
                numbered.append((number, entry))
        del self._given[: max(0, len(self._given) - self.KEEP)]
        return numbered

    def _number_of(self, entry: Segment, nominal_us: int) -> int | None:
        at = bisect.bisect_left(self._given, entry.start_us, key=lambda given: given.start_us)
        before = self._given[at - 1] if at > 0 else None
        after = self._given[at] if at < len(self._given) else None
        same = next((g for g in (after, before) if g is not None and same_gop(g.start_us, entry.start_us)), None)
        if same is not None:  # numbered already, from this member's rows or the other's
            same.end_us = max(same.end_us, entry.end_us)  # a GOP completed since (backfill)
            return same.number
        if before is None:
            if after is not None:
                return None
            number = entry.start_us // FRESH_START_UNIT_US
        else:
            number = before.number + 1 + _missing(before.end_us, entry.start_us, nominal_us)
            if after is not None and number >= after.number:
                number = before.number + 1  # fewer gap entries than the time suggests: the numbers left
                if number >= after.number:
                    return None
        self._given.insert(at, _Given(entry.start_us, entry.end_us, number))
        return number


def _missing(previous_end_us: int, start_us: int, nominal_us: int) -> int:
    """Typical GOPs missing between one segment's end and the next one's start."""
    return max(0, round((start_us - previous_end_us) / nominal_us))


def live_playlist(
    rows: list,
    numbering: LiveNumbering,
    *,
    segment_uri: Callable[[Segment], str],
    init_uri: Callable[[str], str],
    last: int = LIVE_SEGMENTS,
) -> str:
    """The newest `last` segments of the rows (see `segments`), numbered by the camera's
    `numbering`; a number with no segment (a GOP this recorder lacks) is an `EXT-X-GAP` entry."""
    entries = segments(rows)
    nominal_us = nominal_duration_us(entries)
    numbered = numbering.number(entries, nominal_us)[-last:]
    lines = ["#EXTM3U", "#EXT-X-VERSION:9", _target_duration([entry for _, entry in numbered], nominal_us)]
    lines.append(f"#EXT-X-MEDIA-SEQUENCE:{numbered[0][0] if numbered else 0}")
    previous: tuple[int, Segment] | None = None
    for number, entry in numbered:
        if previous is not None:
            lines += ["#EXT-X-GAP", f"#EXTINF:{nominal_us / 1e6:.3f},", "gap.m4s"] * (number - previous[0] - 1)
        lines += _entry_lines(entry, previous[1] if previous else None, segment_uri, init_uri)
        previous = number, entry
    return "\n".join(lines) + "\n"


def vod_playlist(rows: list, *, segment_uri: Callable[[Segment], str], init_uri: Callable[[str], str]) -> str:
    """Every segment of the rows (see `segments`), numbered from 0."""
    entries = segments(rows)
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", _target_duration(entries, nominal_duration_us(entries))]
    lines += ["#EXT-X-PLAYLIST-TYPE:VOD", "#EXT-X-MEDIA-SEQUENCE:0"]
    for at, entry in enumerate(entries):
        lines += _entry_lines(entry, entries[at - 1] if at else None, segment_uri, init_uri)
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def _target_duration(entries: list[Segment], nominal_us: int) -> str:
    longest_us = max((e.end_us - e.start_us for e in entries), default=nominal_us)
    return f"#EXT-X-TARGETDURATION:{max(1, math.ceil(longest_us / 1e6))}"


def _entry_lines(
    entry: Segment,
    previous: Segment | None,
    segment_uri: Callable[[Segment], str],
    init_uri: Callable[[str], str],
) -> list[str]:
    """One segment's lines: a discontinuity after a hole in time or at a new init segment (then
    its map), its camera time, duration and URI."""
    lines = []
    frame_us = (entry.end_us - entry.start_us) / max(1, entry.frames)
    new_init = previous is None or entry.init != previous.init
    if previous is not None and (entry.start_us - previous.end_us > 1.5 * frame_us or new_init):
        lines.append("#EXT-X-DISCONTINUITY")
    if new_init:
        lines.append(f'#EXT-X-MAP:URI="{init_uri(entry.init)}"')
    lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{iso(entry.start_us)}")
    lines.append(f"#EXTINF:{(entry.end_us - entry.start_us) / 1e6:.6f},")
    lines.append(segment_uri(entry))
    return lines
