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


def gop_fragment(count: int, keyframes: set[int]) -> bytes:
    base = T * 9 // 100
    return build_fragment(
        1, [Sample(bytes([0, 0, 0, 1, 0x41]), base + i * FRAME, FRAME, 0, i in keyframes) for i in range(count)]
    )


def test_a_run_beginning_mid_gop_is_kept_only_after_our_own_footage_of_the_same_stream():
    """We hold the first 3 frames (the keyframe and two after); the partner's frames 3-9 are ours to
    take. After our own footage of its stream they decode from frame 3; after another profile's (a
    sub-stream partner) only from its next keyframe, 6; with no keyframe left, not at all."""
    ours = [(T - 1_000_000, T + 3 * 40_000)]
    payload = gop_fragment(10, {0, 6})
    (same,) = missing_runs(payload, T, T + 400_000, 1, ours, continues=lambda _at: True)
    assert same.frames == 7 and not same.keyframe_first and same.start_us == T + 3 * 40_000
    (other,) = missing_runs(payload, T, T + 400_000, 1, ours, continues=lambda _at: False)
    assert other.frames == 4 and other.keyframe_first and other.start_us == T + 6 * 40_000
    assert parse_fragment(other.payload)[0].keyframe
    assert missing_runs(gop_fragment(10, {0}), T, T + 400_000, 1, ours, continues=lambda _at: False) == []
    (whole,) = missing_runs(payload, T, T + 400_000, 1, [], continues=lambda _at: False)  # starts with its keyframe
    assert whole.whole and whole.frames == 10
