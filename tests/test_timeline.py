"""The merged timeline's arithmetic: the primary wins wherever it has footage; the secondary fills
exactly the rest; nothing is shown twice or left out."""

from __future__ import annotations

import random

from gapless.gateway.timeline import merged, subtract


def test_subtract_cuts_exactly_the_covered_parts():
    assert subtract([(0, 100)], [(10, 20), (30, 40)]) == [(0, 10), (20, 30), (40, 100)]
    assert subtract([(0, 100)], [(-5, 5), (95, 200)]) == [(5, 95)]
    assert subtract([(0, 10), (20, 30)], [(5, 25)]) == [(0, 5), (25, 30)]
    assert subtract([(0, 10)], []) == [(0, 10)]
    assert subtract([(0, 10)], [(0, 10)]) == []


def test_the_primary_wins_and_the_secondary_fills_its_holes():
    primary = [(0, 50), (80, 100)]
    secondary = [(0, 70), (75, 120)]
    assert merged(primary, secondary, 0) == [(0, 50, 0), (50, 70, 1), (75, 80, 1), (80, 100, 0), (100, 120, 1)]


def test_slivers_of_the_secondary_at_the_primarys_edges_are_not_footage():
    """Two recorders' camera times of one edge differ by a few µs: that is not a frame to show."""
    primary = [(0, 1_000_000), (3_000_000, 5_000_000)]
    secondary = [(0, 1_000_025), (1_500_000, 5_000_040)]
    assert merged(primary, secondary) == [(0, 1_000_000, 0), (1_500_000, 3_000_000, 1), (3_000_000, 5_000_000, 0)]


def test_random_timelines_cover_the_union_once():
    rng = random.Random(7)

    def intervals() -> list[tuple[int, int]]:
        points = sorted(rng.sample(range(1000), 2 * rng.randint(0, 8)))
        return list(zip(points[::2], points[1::2], strict=True))

    for _ in range(500):
        primary, secondary = intervals(), intervals()
        result = merged(primary, secondary, 0)
        covered = {t for s, e, _side in result for t in range(s, e)}
        union = {t for s, e in primary + secondary for t in range(s, e)}
        assert covered == union
        assert sum(e - s for s, e, _side in result) == len(union)  # nothing twice
        assert {t for s, e, side in result if side == 0 for t in range(s, e)} == {
            t for s, e in primary for t in range(s, e)
        }
