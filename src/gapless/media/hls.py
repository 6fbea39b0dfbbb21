"""HLS playlists (fMP4 segments = stored fragments), their media URIs signed.

Media sequence numbers come from camera time (`round(start / nominal GOP duration)`), so two
recorders of one camera number the same fragment alike and their live playlists line up; a
missing fragment becomes an `EXT-X-GAP` entry rather than a renumbering.
"""

from __future__ import annotations

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


def playlist(
    rows: list,
    *,
    live: bool,
    segment_uri: Callable[[Segment], str],
    init_uri: Callable[[str], str],
    last: int | None = None,
) -> str:
    """A playlist of stored fragments, grouped into segments (see `segments`); `last` keeps only
    the newest that many segments (live). Media sequence numbers come from camera time over the
    nominal GOP duration of all the rows given, so give the same window on every recorder."""
    entries = segments(rows)
    nominal_us = nominal_duration_us(entries)
    if last is not None:
        entries = entries[-last:]
    target = max(1, math.ceil(max((e.end_us - e.start_us for e in entries), default=nominal_us) / 1e6))
    lines = ["#EXTM3U", "#EXT-X-VERSION:9" if live else "#EXT-X-VERSION:7", f"#EXT-X-TARGETDURATION:{target}"]
    if not live:
        lines.append("#EXT-X-PLAYLIST-TYPE:VOD")
    first_msn = round(entries[0].start_us / nominal_us) if entries else 0
    lines.append(f"#EXT-X-MEDIA-SEQUENCE:{first_msn}")
    msn = first_msn - 1
    init = None
    prev_end = None
    for entry in entries:
        want = max(msn + 1, round(entry.start_us / nominal_us))
        frame_us = (entry.end_us - entry.start_us) / max(1, entry.frames)
        gap = prev_end is not None and entry.start_us - prev_end > 1.5 * frame_us
        if live:
            for _ in range(want - msn - 1):  # segments this recorder does not have
                lines += ["#EXT-X-GAP", f"#EXTINF:{nominal_us / 1e6:.3f},", "gap.m4s"]
            msn = want
        else:
            msn += 1
        if gap or (init is not None and entry.init != init):
            lines.append("#EXT-X-DISCONTINUITY")
        if entry.init != init:
            lines.append(f'#EXT-X-MAP:URI="{init_uri(entry.init)}"')
            init = entry.init
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{iso(entry.start_us)}")
        lines.append(f"#EXTINF:{(entry.end_us - entry.start_us) / 1e6:.6f},")
        lines.append(segment_uri(entry))
        prev_end = entry.end_us
    if not live:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"
