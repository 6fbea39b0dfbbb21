"""Hour summaries of coverage (storage/summary.py) on a real store: the same answer as merging every
fragment row, over random archives with gaps, backfilled fragments landing in settled hours, damaged
fragments quarantined and chunks deleted by retention."""

from __future__ import annotations

import random
import time

from gapless.storage.coverage import merged
from gapless.storage.store import Fragment, FragmentStore, InitSegment
from gapless.storage.summary import HOUR_US, LONGEST_FRAGMENT_US, covered

INIT = InitSegment.make("avc1.64001f", 640, 360, b"\x00" * 64)


def _fragment(start_us: int, length_us: int, frames: int = 25, seq: int = 0) -> Fragment:
    return Fragment("cam", "run", seq, start_us, start_us + length_us, frames, INIT, b"x" * 64, "rec-a", start_us)


def _kept_hours(store: FragmentStore) -> int:
    return store.db().execute("SELECT COUNT(*) FROM coverage_hours").fetchone()[0]


def test_hour_summaries_answer_as_the_rows_do(tmp_path):
    rng = random.Random(3)
    store = FragmentStore(tmp_path, "rec-a", chunk_max_us=4 * HOUR_US)
    now = time.time_ns() // 1000
    base = (now // HOUR_US - 6) * HOUR_US  # six settled hours, and the live one
    cursor, batch = base - 7_000_000, []
    while cursor < now - 5_000_000:
        length = rng.choice([1_000_000, 1_000_000, 2_000_000, 400_000])
        batch.append(_fragment(cursor, length, frames=max(1, length // 40_000), seq=len(batch)))
        cursor += length + rng.choice([0, 0, 0, 0, 30_000, 80_000, 5_000_000, 600_000_000])
    for i in range(0, len(batch), 500):
        store.write(batch[i : i + 500])
    store.close()

    def check(start: int, end: int) -> None:
        rows = store.fragments("cam", start - LONGEST_FRAGMENT_US, end)
        expected = [(max(a, start), min(b, end)) for a, b in merged(rows) if b > start and a < end]
        assert covered(store, "cam", start, end) == expected, (start, end)

    check(base, now)
    assert _kept_hours(store) >= 5  # settled hours are kept; the live hour is not
    edges = [edge for interval in merged(store.fragments("cam", base, now)) for edge in interval]
    for _ in range(60):  # random ranges, and ranges starting or ending near the edges of gaps
        a, b = sorted(rng.randrange(base - HOUR_US, now + HOUR_US) for _ in range(2))
        check(a, b + 1)
        edge = rng.choice(edges) + rng.randrange(-100_000, 100_000)
        check(edge, edge + rng.randrange(1, 3 * HOUR_US))
        check(edge - rng.randrange(1, 3 * HOUR_US), edge)
    check(base, now)  # from the kept summaries

    hole = next(b for a, b in merged(store.fragments("cam", base, base + 3 * HOUR_US))[:-1])
    before = _kept_hours(store)
    store.write([_fragment(hole + 40_000, 2_000_000, seq=10**6)])  # backfill lands in a settled hour
    store.close()
    assert _kept_hours(store) == before - 1
    check(base, now)
    assert any(a <= hole + 40_000 < b for a, b in covered(store, "cam", base, now))

    victim = store.fragments("cam", base + HOUR_US, base + 2 * HOUR_US)[3]
    store.mark_corrupt(victim)  # quarantined: a hole again
    check(base, now)
    chunk = store.db().execute("SELECT MIN(id) FROM chunks").fetchone()[0]
    store.delete_chunk(chunk)  # retention
    check(base - HOUR_US, now)
    store.close()
