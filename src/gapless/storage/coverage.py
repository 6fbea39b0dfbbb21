"""Coverage arithmetic on camera-time intervals [start_us, end_us)."""

from __future__ import annotations

from collections.abc import Iterable

from gapless.storage.store import FragmentRow

#: Coverage as the API reports it: fragments further apart than 1.5 frame intervals leave a gap.
REPORT_GAP_FRAMES = 1.5
#: Coverage as backfill sees it: a hole of one missing frame (one interval between a fragment's end
#: and the next one's start) is a gap; half an interval is rounding.
FRAME_GAP_FRAMES = 0.5


def merged(rows: Iterable[FragmentRow], gap_frames: float = REPORT_GAP_FRAMES) -> list[tuple[int, int]]:
    """Rows (ordered by start) joined into covered intervals; holes up to gap_frames intervals are
    not gaps."""
    intervals: list[list[int]] = []
    for row in rows:
        threshold = gap_frames * (row.end_us - row.start_us) / max(1, row.frames)
        if intervals and row.start_us - intervals[-1][1] <= threshold:
            intervals[-1][1] = max(intervals[-1][1], row.end_us)
        else:
            intervals.append([row.start_us, row.end_us])
    return [(a, b) for a, b in intervals]


def holes(covered: list[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    """The parts of [lo, hi) that no interval of `covered` (sorted, disjoint) spans."""
    found = []
    cursor = lo
    for start, end in covered:
        if end <= cursor:
            continue
        if start >= hi:
            break
        if start > cursor:
            found.append((cursor, start))
        cursor = max(cursor, end)
    if cursor < hi:
        found.append((cursor, hi))
    return found


def intersect(first: list[tuple[int, int]], second: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Intervals covered by both lists (each sorted and disjoint)."""
    out = []
    i = j = 0
    while i < len(first) and j < len(second):
        start = max(first[i][0], second[j][0])
        end = min(first[i][1], second[j][1])
        if start < end:
            out.append((start, end))
        if first[i][1] < second[j][1]:
            i += 1
        else:
            j += 1
    return out
