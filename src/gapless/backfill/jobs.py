"""The durable backfill queue: one table in the recorder's index, shared by automatic and API jobs.

A job is (camera, source, time range). Progress is committed after each batch the storage writer
has made durable, so a job killed at any instant resumes from its cursor; what was stored after the
last committed cursor is found again as already held and not stored twice (see trim.py).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import get_args

from gapless.common.timeparse import iso
from gapless.contracts.recorder import JobInfo, JobState

SCHEMA = """
CREATE TABLE IF NOT EXISTS backfill_jobs (
  id INTEGER PRIMARY KEY, camera TEXT NOT NULL, source TEXT NOT NULL, source_url TEXT NOT NULL,
  source_token TEXT NOT NULL, source_camera TEXT NOT NULL, start_us INTEGER NOT NULL, end_us INTEGER NOT NULL,
  cursor_us INTEGER NOT NULL, state TEXT NOT NULL, automatic INTEGER NOT NULL,
  fragments_total INTEGER NOT NULL DEFAULT 0, fragments_done INTEGER NOT NULL DEFAULT 0,
  bytes_total INTEGER NOT NULL DEFAULT 0, bytes_done INTEGER NOT NULL DEFAULT 0,
  stored_fragments INTEGER NOT NULL DEFAULT 0, stored_frames INTEGER NOT NULL DEFAULT 0,
  refused INTEGER NOT NULL DEFAULT 0, errors TEXT NOT NULL DEFAULT '[]', attempts INTEGER NOT NULL DEFAULT 0,
  next_try_us INTEGER NOT NULL DEFAULT 0, active_s REAL NOT NULL DEFAULT 0,
  created_us INTEGER NOT NULL, finished_us INTEGER);
CREATE INDEX IF NOT EXISTS backfill_jobs_by_state ON backfill_jobs(state, camera);
"""

#: waiting: runnable now or after next_try; running: a worker has it; done: every source fragment was
#: handled; partial: done, but some fragments were refused (checksum) and are listed in errors.
STATES: tuple[JobState, ...] = get_args(JobState)
OPEN_STATES = ("waiting", "running")
MAX_ERRORS_KEPT = 20


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass
class Job:
    id: int
    camera: str
    source: str
    source_url: str
    source_token: str
    source_camera: str
    start_us: int
    end_us: int
    cursor_us: int
    state: str
    automatic: int
    fragments_total: int
    fragments_done: int
    bytes_total: int
    bytes_done: int
    stored_fragments: int
    stored_frames: int
    refused: int
    errors: str
    attempts: int
    next_try_us: int
    active_s: float
    created_us: int
    finished_us: int | None

    def public(self) -> JobInfo:
        """The job as the API shows it: its source token left out."""
        data = asdict(self)
        del data["source_token"]
        rate = self.bytes_done / self.active_s if self.active_s > 0 else None
        left = max(0, self.bytes_total - self.bytes_done)
        data.update(
            automatic=bool(self.automatic),
            errors=json.loads(self.errors),
            start=iso(self.start_us),
            end=iso(self.end_us),
            cursor=iso(self.cursor_us),
            rate_bytes_per_s=round(rate) if rate else None,
            eta_s=round(left / rate, 1) if rate and self.state in OPEN_STATES else None,
            next_try=iso(self.next_try_us) if self.state == "waiting" and self.next_try_us > now_us() else None,
        )
        return JobInfo.model_validate(data)


_COLUMNS = ", ".join(Job.__dataclass_fields__)


class JobStore:
    """Backfill jobs in the recorder's SQLite index. `db` returns the calling thread's connection."""

    def __init__(self, db) -> None:
        self._db = db
        self._db().executescript(SCHEMA)
        # A job that was running when the process died runs again.
        self._db().execute("UPDATE backfill_jobs SET state='waiting' WHERE state='running'")

    def all_rows(self) -> list[tuple]:
        """Every job as stored: carried over when the index is rebuilt under a running recorder."""
        return self._db().execute("SELECT * FROM backfill_jobs").fetchall()

    def reinstate(self, rows: list[tuple]) -> None:
        """Recreate the jobs table in a rebuilt index, with the jobs it held (running ones run again)."""
        db = self._db()
        db.executescript(SCHEMA)
        if rows:
            marks = ", ".join("?" * len(rows[0]))
            with db:
                db.executemany(f"INSERT OR REPLACE INTO backfill_jobs VALUES ({marks})", rows)
        db.execute("UPDATE backfill_jobs SET state='waiting' WHERE state='running'")

    def create(
        self,
        camera: str,
        source: str,
        source_url: str,
        source_token: str,
        source_camera: str,
        start_us: int,
        end_us: int,
        automatic: bool,
    ) -> Job:
        cur = self._db().execute(
            "INSERT INTO backfill_jobs (camera, source, source_url, source_token, source_camera, start_us, end_us,"
            " cursor_us, state, automatic, created_us) VALUES (?,?,?,?,?,?,?,?,'waiting',?,?)",
            (
                camera,
                source,
                source_url,
                source_token,
                source_camera,
                start_us,
                end_us,
                start_us,
                int(automatic),
                now_us(),
            ),
        )
        assert cur.lastrowid is not None  # an INSERT always sets it
        job = self.get(cur.lastrowid)
        assert job is not None  # just inserted
        return job

    def get(self, job_id: int) -> Job | None:
        row = self._db().execute(f"SELECT {_COLUMNS} FROM backfill_jobs WHERE id=?", (job_id,)).fetchone()
        return Job(*row) if row else None

    def recent(self, limit: int = 200, state: str | None = None) -> list[Job]:
        where, args = ("WHERE state=?", (state,)) if state else ("", ())
        rows = (
            self._db()
            .execute(f"SELECT {_COLUMNS} FROM backfill_jobs {where} ORDER BY id DESC LIMIT ?", (*args, limit))
            .fetchall()
        )
        return [Job(*r) for r in rows]

    def runnable(self, newest_first: bool, exclude: set[int]) -> list[Job]:
        order = "DESC" if newest_first else "ASC"
        rows = (
            self._db()
            .execute(
                f"SELECT {_COLUMNS} FROM backfill_jobs WHERE state IN ('waiting', 'running') AND next_try_us <= ?"
                f" ORDER BY start_us {order}, id",
                (now_us(),),
            )
            .fetchall()
        )
        return [Job(*r) for r in rows if r[0] not in exclude]

    def next_try_us(self) -> int | None:
        """When the earliest open job that is not runnable yet (waiting out a retry delay) becomes so."""
        row = (
            self._db()
            .execute(
                "SELECT MIN(next_try_us) FROM backfill_jobs WHERE state IN ('waiting', 'running') AND next_try_us > ?",
                (now_us(),),
            )
            .fetchone()
        )
        return row[0]

    def claims(self, camera: str, source: str) -> list[tuple[int, int]]:
        """Time already taken care of with this source: what open jobs have yet to do, the whole
        range of partial jobs (what they refused would only be refused again), and of done jobs that
        found nothing there (the source's coverage joins fragments up to 1.5 frames apart, so a
        pause of the camera's between two of them looks held: asked again, it holds nothing again)."""
        rows = (
            self._db()
            .execute(
                "SELECT state, start_us, cursor_us, end_us FROM backfill_jobs WHERE camera=? AND source=?"
                " AND (state IN ('waiting', 'running', 'partial') OR (state='done' AND fragments_total=0))",
                (camera, source),
            )
            .fetchall()
        )
        return [(cursor if state in ("waiting", "running") else start, end) for state, start, cursor, end in rows]

    def open_by_camera(self) -> dict[str, int]:
        """Per camera, its waiting and running jobs (a camera with none is left out)."""
        marks = ", ".join("?" for _ in OPEN_STATES)
        rows = self._db().execute(
            f"SELECT camera, COUNT(*) FROM backfill_jobs WHERE state IN ({marks}) GROUP BY camera", OPEN_STATES
        )
        return dict(rows.fetchall())

    def counts(self) -> dict[JobState, int]:
        rows = self._db().execute("SELECT state, COUNT(*) FROM backfill_jobs GROUP BY state").fetchall()
        return {state: 0 for state in STATES} | dict(rows)

    def update(self, job_id: int, **fields) -> None:
        sets = ", ".join(f"{name}=?" for name in fields)
        self._db().execute(f"UPDATE backfill_jobs SET {sets} WHERE id=?", (*fields.values(), job_id))

    def add_error(self, job: Job, message: str) -> None:
        errors = [*json.loads(job.errors)[-(MAX_ERRORS_KEPT - 1) :], f"{iso(now_us())} {message}"]
        job.errors = json.dumps(errors)
        self.update(job.id, errors=job.errors)
