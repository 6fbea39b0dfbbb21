"""A paired camera's merged timeline: what its primary holds, and what the secondary holds where the
primary has nothing, each interval marked with the recorder it comes from (docs/design/identity.md).
Pure arithmetic on camera-time intervals (µs), so the gateway answers from two coverage queries."""

from __future__ import annotations

from collections.abc import Sequence

Interval = tuple[int, int]


def subtract(intervals: Sequence[Interval], taken: Sequence[Interval]) -> list[Interval]:
    """`intervals` minus every part that `taken` covers (both sorted, each without overlaps)."""
    out: list[Interval] = []
    j = 0
    for start, end in intervals:
        cursor = start
        while j < len(taken) and taken[j][1] <= cursor:
            j += 1
        k = j
        while k < len(taken) and taken[k][0] < end:
            if taken[k][0] > cursor:
                out.append((cursor, taken[k][0]))
            cursor = max(cursor, taken[k][1])
            k += 1
        if cursor < end:
            out.append((cursor, end))
    return out


#: A piece of the secondary shorter than this, where the primary has nothing, is the two recorders'
#: rounding at an edge (a few µs of camera time), not a frame: it is not shown.
MIN_FILL_US = 10_000


def merged(
    primary: Sequence[Interval], secondary: Sequence[Interval], min_fill_us: int = MIN_FILL_US
) -> list[tuple[int, int, int]]:
    """(start, end, side) sorted by start: side 0 for the primary's intervals, 1 for the
    secondary's where the primary has nothing (pieces of at least min_fill_us)."""
    fills = [(s, e, 1) for s, e in subtract(secondary, primary) if e - s >= min_fill_us]
    return sorted([(s, e, 0) for s, e in primary] + fills)


def coverage_of(spans: Sequence[Interval]) -> list[Interval]:
    """Spans (fragments) joined where they touch or overlap, sorted."""
    out: list[Interval] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out
