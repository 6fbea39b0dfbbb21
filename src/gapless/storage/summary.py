"""Coverage over long spans without reading every fragment row (a 30-day timeline is 2.6 million
one-second GOPs per camera): per camera and hour of camera time, the covered intervals of the
fragments that *start* in that hour, computed once and kept in the index (`coverage_hours`).

Triggers on `fragments` (store.SCHEMA) drop an hour's summary whenever a row of that hour is added,
removed or quarantined, whichever path does it (the writer, backfill, retention, recovery, the
scrub), so a kept summary is never stale. Summaries are kept only for hours that ended more than
SETTLED_US ago (the live hour changes with every fragment; it is read from its rows), and each is
computed and stored in one write transaction, so no fragment can land between the two.

Joining pieces across hours uses the threshold of each piece's first fragment, exactly as
`coverage.merged` joins fragment by fragment: the answer equals merged() over the rows.
"""

from __future__ import annotations

import json
import sqlite3
import time

from gapless.storage.coverage import REPORT_GAP_FRAMES
from gapless.storage.store import FragmentStore

HOUR_US = 3_600_000_000
SETTLED_US = HOUR_US
#: Fragments are never longer than this (ingest cuts at 10 s; backfill keeps the source's cut), so a
#: fragment reaching into a range starts at most this long before it.
LONGEST_FRAGMENT_US = 60_000_000

Piece = tuple[int, int, float]  # start, end, the gap a following piece may leave and still join


def _pieces(db: sqlite3.Connection, camera: str, hour: int) -> list[Piece]:
    rows = db.execute(
        "SELECT start_us, end_us, frames FROM fragments WHERE camera=? AND start_us >= ? AND start_us < ?"
        " AND corrupt=0 ORDER BY start_us, id",
        (camera, hour * HOUR_US, (hour + 1) * HOUR_US),
    )
    return _joined((start, end, REPORT_GAP_FRAMES * (end - start) / max(1, frames)) for start, end, frames in rows)


def _joined(pieces) -> list[Piece]:
    """Pieces in start order joined where the gap before one is within its own threshold."""
    out: list[list] = []
    for start, end, join in pieces:
        if out and start - out[-1][1] <= join:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end, join])
    return [(s, e, j) for s, e, j in out]


def _settled(db: sqlite3.Connection, camera: str, hour: int) -> list[Piece]:
    """An ended hour's pieces, summarised once: computed and stored in one write transaction."""
    db.execute("BEGIN IMMEDIATE")
    try:
        pieces = _pieces(db, camera, hour)
        db.execute(
            "INSERT OR REPLACE INTO coverage_hours VALUES (?, ?, ?)",
            (camera, hour, json.dumps(pieces, separators=(",", ":"))),
        )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return pieces


def covered(store: FragmentStore, camera: str, start_us: int, end_us: int) -> list[tuple[int, int]]:
    """The covered parts of [start_us, end_us): `merged()` of the camera's fragments (from early
    enough that a gap at start_us is judged as at any other time), clipped; from hour summaries
    where kept."""
    db = store.db()
    first, last = (start_us - LONGEST_FRAGMENT_US) // HOUR_US, (end_us - 1) // HOUR_US
    kept = dict(
        db.execute(
            "SELECT hour, intervals FROM coverage_hours WHERE camera=? AND hour BETWEEN ? AND ?", (camera, first, last)
        ).fetchall()
    )
    settled_before = (time.time_ns() // 1000 - SETTLED_US) // HOUR_US
    pieces: list[Piece] = []
    for hour in range(first, last + 1):
        if hour in kept:
            pieces += [(start, end, join) for start, end, join in json.loads(kept[hour])]
        elif hour < settled_before:
            pieces += _settled(db, camera, hour)
        else:
            pieces += _pieces(db, camera, hour)
    return [(max(s, start_us), min(e, end_us)) for s, e, _join in _joined(pieces) if e > start_us and s < end_us]
