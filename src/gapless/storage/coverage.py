"""Coverage arithmetic on camera-time intervals [start_us, end_us)."""

from __future__ import annotations

from collections.abc import Iterable

from gapless.storage.store import FragmentRow

#: Fragments further apart than this many frame intervals leave a gap between them.
GAP_FRAMES = 1.5


def merged(rows: Iterable[FragmentRow]) -> list[tuple[int, int]]:
    """Rows (ordered by start) joined into covered intervals; a hole under 1.5 frames is no gap."""
    intervals: list[list[int]] = []
    for row in rows:
        threshold = GAP_FRAMES * (row.end_us - row.start_us) / max(1, row.frames)
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
