"""Backfill's edge trimming (backfill/trim.py): a partner's frames that we lack are kept, and fitted
between what we hold, so that one camera's archive never overlaps itself."""

import itertools

from gapless.backfill.trim import missing_runs
from gapless.media.fmp4 import Sample, build_fragment, parse_fragment, ticks_to_us

T = 1_780_000_000_000_000
FRAME = 3600  # ticks: 40 ms


def fragment(count: int) -> bytes:
    base = T * 9 // 100
    return build_fragment(
        1, [Sample(bytes([0, 0, 0, 1, 0x41]), base + i * FRAME, FRAME, 0, i == 0) for i in range(count)]
    )


def spans(payload: bytes) -> list[tuple[int, int]]:
    return [(ticks_to_us(s.dts), ticks_to_us(s.dts + s.duration)) for s in parse_fragment(payload)]


def test_a_partners_fragment_we_lack_entirely_is_kept_whole():
    (run,) = missing_runs(fragment(5), T, T + 200_000, 1, [(T - 1_000_000, T - 500_000)])
    assert run.whole and run.frames == 5


def test_frames_overlapping_our_neighbours_by_less_than_half_a_frame_give_way():
    """Our fragment before ends 12 ms into the partner's first frame; ours after starts 18 ms before
    the partner's last frame would end: the kept frames move and shrink, ours stay."""
    ours = [(T - 1_000_000, T + 12_000), (T + 182_000, T + 1_000_000)]
    (run,) = missing_runs(fragment(5), T, T + 200_000, 1, ours)
    assert not run.whole and run.frames == 5
    assert (run.start_us, run.end_us) == (T + 12_000, T + 182_000)
    frames = spans(run.payload)
    assert frames[0][0] >= T + 12_000 and frames[-1][1] <= T + 182_000
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(frames))
