"""`gapless audit` checks time itself: what in a fragment listing cannot be true."""

from gapless.audit.audit import ARRIVAL_SLACK_US, time_problems
from gapless.contracts.recorder import FragmentInfo

T = 1_780_000_000_000_000


def row(fid: int, start: int, end: int, frames: int = 25, arrival: int | None = None) -> FragmentInfo:
    return FragmentInfo(
        id=fid,
        camera="cam",
        run="r",
        seq=fid,
        start_us=start,
        end_us=end,
        frames=frames,
        bytes=1000,
        sha256="0" * 64,
        init="i",
        origin="rec-a",
        arrival_us=start if arrival is None else arrival,
    )


def test_a_true_listing_has_no_time_problem():
    assert time_problems([row(1, T, T + 1_000_000), row(2, T + 1_000_000, T + 2_000_000, arrival=T + 1_400_000)]) == []


def test_overlaps_compressed_fragments_and_untrue_times_are_each_named():
    problems = time_problems(
        [
            row(1, T, T + 1_000_000),
            row(2, T + 900_000, T + 1_900_000),  # overlaps 1
            row(3, T + 2_000_000, T + 2_000_024, frames=24),  # 24 frames in 24 µs
            row(4, T + 3_000_000, T + 4_000_000, arrival=T + 3_000_000 + ARRIVAL_SLACK_US + 1),
        ]
    )
    assert len(problems) == 3, problems
    assert "overlap by 100000 µs" in problems[0]
    assert "24 frames in 24 µs" in problems[1]
    assert "arrived +" in problems[2]
