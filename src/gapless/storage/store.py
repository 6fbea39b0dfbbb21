"""The fragment store: chunk files of self-describing records plus a SQLite (WAL) index.

A chunk file is a sequence of records; each record is
``b"GLR1" | kind (1 byte, I=init, F=fragment) | header length (u32) | payload length (u64) |
header JSON | payload``. The header names camera, run, sequence number, camera time and the
payload's SHA-256, so the index can be rebuilt from the chunk files alone (`--reindex`).

Write order (see docs/design/storage.md): chunk row committed before its file exists; records
appended and fsynced before their index rows are committed. At open, bytes past the last indexed
record are scanned: complete, checksummed records are indexed, a torn tail is cut.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import struct
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("gapless.storage")

MAGIC = b"GLR1"
_HEAD = struct.Struct(">4scIQ")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
  id INTEGER PRIMARY KEY, camera TEXT NOT NULL, path TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'open',
  bytes INTEGER NOT NULL DEFAULT 0, start_us INTEGER, end_us INTEGER, created_us INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS inits (
  id TEXT PRIMARY KEY, codec TEXT NOT NULL, width INTEGER, height INTEGER, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS fragments (
  id INTEGER PRIMARY KEY, camera TEXT NOT NULL, run TEXT NOT NULL, seq INTEGER NOT NULL,
  start_us INTEGER NOT NULL, end_us INTEGER NOT NULL, frames INTEGER NOT NULL, bytes INTEGER NOT NULL,
  chunk INTEGER NOT NULL REFERENCES chunks(id), offset INTEGER NOT NULL, length INTEGER NOT NULL,
  sha256 TEXT NOT NULL, init TEXT NOT NULL REFERENCES inits(id), origin TEXT NOT NULL, arrival_us INTEGER,
  keyframe_first INTEGER NOT NULL DEFAULT 1);
CREATE INDEX IF NOT EXISTS fragments_by_time ON fragments(camera, start_us);
CREATE INDEX IF NOT EXISTS fragments_by_chunk ON fragments(chunk);
"""


@dataclass(frozen=True, slots=True)
class InitSegment:
    id: str
    codec: str
    width: int
    height: int
    data: bytes

    @staticmethod
    def make(codec: str, width: int, height: int, data: bytes) -> InitSegment:
        return InitSegment(hashlib.sha256(data).hexdigest()[:32], codec, width, height, data)


@dataclass(frozen=True, slots=True)
class Fragment:
    """A GOP ready to store: payload is `moof+mdat`."""

    camera: str
    run: str
    seq: int
    start_us: int
    end_us: int
    frames: int
    init: InitSegment
    payload: bytes
    origin: str
    arrival_us: int
    #: The payload's SHA-256, from whoever built or verified the payload; the writer computes it if None.
    sha256: str | None = None
    #: False for the later pieces of a GOP (split at missing frames, or a backfilled remainder):
    #: playlists serve a GOP's pieces as one segment, so both members of a cluster number it alike.
    keyframe_first: bool = True


@dataclass(frozen=True, slots=True)
class FragmentRow:
    id: int
    camera: str
    run: str
    seq: int
    start_us: int
    end_us: int
    frames: int
    bytes: int
    chunk: int
    offset: int
    length: int
    sha256: str
    init: str
    origin: str
    keyframe_first: bool
    arrival_us: int | None

    def public(self) -> dict:
        return {
            "id": self.id,
            "camera": self.camera,
            "run": self.run,
            "seq": self.seq,
            "start_us": self.start_us,
            "end_us": self.end_us,
            "frames": self.frames,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "init": self.init,
            "origin": self.origin,
            "keyframe_first": bool(self.keyframe_first),
            "arrival_us": self.arrival_us,
        }


_ROW_COLUMNS = (
    "id, camera, run, seq, start_us, end_us, frames, bytes, chunk, offset, length, sha256, init, origin,"
    " keyframe_first, arrival_us"
)
_INSERT_FRAGMENT = f"INSERT INTO fragments ({_ROW_COLUMNS[4:]}) VALUES ({', '.join('?' * 15)})"


def record_head(kind: bytes, header: dict, payload_length: int) -> bytes:
    """Everything of a record before its payload; the payload is written after it unchanged (the
    writer never copies a fragment's bytes to frame them: each copy of the video costs CPU)."""
    head = json.dumps(header, separators=(",", ":")).encode()
    return _HEAD.pack(MAGIC, kind, len(head), payload_length) + head


def scan_records(data: bytes, start: int = 0):
    """Yield (offset, kind, header, payload_offset, payload_length) for complete, valid records.

    Stops at the first record that is torn or fails its checksum; the caller cuts there.
    """
    pos = start
    while pos + _HEAD.size <= len(data):
        magic, kind, hlen, plen = _HEAD.unpack_from(data, pos)
        body = pos + _HEAD.size
        if magic != MAGIC or kind not in (b"I", b"F") or body + hlen + plen > len(data):
            return
        try:
            header = json.loads(data[body : body + hlen])
        except ValueError:
            return
        payload_at = body + hlen
        if hashlib.sha256(data[payload_at : payload_at + plen]).hexdigest() != header.get("sha256"):
            return
        yield pos, kind, header, payload_at, plen
        pos = payload_at + plen


class StorageError(OSError):
    """Stored data that fails its checksum, or an index write that failed (disk full)."""


class FragmentStore:
    """Owns one recorder's storage directory. Writes come from one thread; reads from any."""

    def __init__(
        self, root: Path, origin: str, chunk_max_bytes: int = 64 << 20, chunk_max_us: int = 600_000_000
    ) -> None:
        self.root = Path(root)
        self.origin = origin
        self.chunk_max_bytes = chunk_max_bytes
        self.chunk_max_us = chunk_max_us
        self.root.mkdir(parents=True, exist_ok=True)
        self.db_path = self.root / "index.sqlite3"
        self._local = threading.local()
        self._open_chunks: dict[str, tuple[int, object, set[str], int]] = {}
        db = self.db()
        db.executescript(SCHEMA)
        columns = {row[1] for row in db.execute("PRAGMA table_info(fragments)")}
        if "keyframe_first" not in columns:  # an index from before the column existed
            db.execute("ALTER TABLE fragments ADD COLUMN keyframe_first INTEGER NOT NULL DEFAULT 1")
        db.execute("INSERT OR IGNORE INTO meta VALUES ('created', ?)", (str(time.time()),))
        db.execute("INSERT OR REPLACE INTO meta VALUES ('open_id', ?)", (uuid.uuid4().hex,))
        db.commit()

    def db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
        return conn

    # ---- recovery -------------------------------------------------------------------------
    def recover(self) -> dict:
        """Make the index match the chunk files: index complete records past the indexed end,
        cut torn tails, finish interrupted deletions. Returns what it did."""
        db = self.db()
        report = {"recovered": 0, "truncated_bytes": 0, "dropped_rows": 0, "deleted_chunks": 0}
        for chunk_id, path in db.execute("SELECT id, path FROM chunks WHERE state='deleting'").fetchall():
            self._finish_delete(chunk_id, self.root / path)
            report["deleted_chunks"] += 1
        for chunk_id, camera, path in db.execute("SELECT id, camera, path FROM chunks").fetchall():
            file = self.root / path
            data = file.read_bytes() if file.exists() else b""
            (indexed_end,) = db.execute(
                "SELECT COALESCE(MAX(offset + length), 0) FROM fragments WHERE chunk=?", (chunk_id,)
            ).fetchone()
            if indexed_end > len(data):
                # Rows whose bytes never reached the disk (should not happen: fsync precedes commit).
                cur = db.execute("DELETE FROM fragments WHERE chunk=? AND offset + length > ?", (chunk_id, len(data)))
                report["dropped_rows"] += cur.rowcount
                log.error("chunk %s: %d index rows pointed past the file end; removed", path, cur.rowcount)
                (indexed_end,) = db.execute(
                    "SELECT COALESCE(MAX(offset + length), 0) FROM fragments WHERE chunk=?", (chunk_id,)
                ).fetchone()
            good_end = self._index_records(camera, chunk_id, data, indexed_end, report)
            if good_end < len(data):
                report["truncated_bytes"] += len(data) - good_end
                log.warning("chunk %s: cut a torn tail of %d bytes at %d", path, len(data) - good_end, good_end)
                with open(file, "r+b") as fh:
                    fh.truncate(good_end)
                    os.fsync(fh.fileno())
            db.execute("UPDATE chunks SET state='closed', bytes=? WHERE id=?", (good_end, chunk_id))
        self._refresh_chunk_bounds()
        return report

    def reindex(self) -> dict:
        """Rebuild the index from the chunk files alone (the old index is kept beside it)."""
        self.close()
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        stamp = time.strftime("%Y%m%dT%H%M%S")
        for suffix in ("", "-wal", "-shm"):
            old = Path(f"{self.db_path}{suffix}")
            if old.exists():
                old.rename(f"{self.db_path}.before-reindex-{stamp}{suffix}")
        db = self.db()
        db.executescript(SCHEMA)
        db.execute("INSERT INTO meta VALUES ('open_id', ?)", (uuid.uuid4().hex,))
        report = {"chunks": 0, "recovered": 0, "truncated_bytes": 0}
        for file in sorted((self.root / "cameras").glob("*/*.glc")):
            chunk_id = int(file.stem)
            camera = file.parent.name
            db.execute(
                "INSERT INTO chunks (id, camera, path, state, created_us) VALUES (?,?,?,'closed',?)",
                (chunk_id, camera, str(file.relative_to(self.root)), int(file.stat().st_mtime * 1e6)),
            )
            data = file.read_bytes()
            good_end = self._index_records(camera, chunk_id, data, 0, report)
            if good_end < len(data):
                report["truncated_bytes"] += len(data) - good_end
                with open(file, "r+b") as fh:
                    fh.truncate(good_end)
                    os.fsync(fh.fileno())
            db.execute("UPDATE chunks SET bytes=? WHERE id=?", (good_end, chunk_id))
            report["chunks"] += 1
        self._refresh_chunk_bounds()
        return report

    def _index_records(self, camera: str, chunk_id: int, data: bytes, start: int, report: dict) -> int:
        """Index the valid records of data[start:], return where valid data ends."""
        db = self.db()
        end = start
        db.execute("BEGIN")
        for _offset, kind, header, payload_at, plen in scan_records(data, start):
            if kind == b"I":
                db.execute(
                    "INSERT OR IGNORE INTO inits VALUES (?,?,?,?,?)",
                    (
                        header["init"],
                        header["codec"],
                        header["width"],
                        header["height"],
                        data[payload_at : payload_at + plen],
                    ),
                )
            else:
                db.execute(
                    _INSERT_FRAGMENT,
                    (
                        header["camera"],
                        header["run"],
                        header["seq"],
                        header["start_us"],
                        header["end_us"],
                        header["frames"],
                        plen,
                        chunk_id,
                        payload_at,
                        plen,
                        header["sha256"],
                        header["init"],
                        header["origin"],
                        int(header.get("keyframe_first", True)),
                        header.get("arrival_us"),
                    ),
                )
                report["recovered"] += 1
            end = payload_at + plen
        db.execute("COMMIT")
        return end

    def _refresh_chunk_bounds(self) -> None:
        self.db().execute(
            "UPDATE chunks SET start_us=(SELECT MIN(start_us) FROM fragments WHERE chunk=chunks.id),"
            " end_us=(SELECT MAX(end_us) FROM fragments WHERE chunk=chunks.id)"
        )

    # ---- writing (one thread) -------------------------------------------------------------
    def write(self, fragments: list[Fragment]) -> list[int]:
        """Append fragments to their cameras' chunks, fsync, then index them in one transaction.

        On a write error (disk full) every touched chunk is cut back to its size before the batch and
        closed, so a retry never leaves a torn record in the middle of a chunk."""
        sizes_before: dict[int, tuple[str, int]] = {}
        try:
            return self._write(fragments, sizes_before)
        except (OSError, sqlite3.Error) as exc:
            db = self.db()
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            self._undo(sizes_before)
            if isinstance(exc, sqlite3.Error):  # e.g. "database or disk is full": callers see one kind
                raise StorageError(f"index: {exc}") from exc
            raise

    def _undo(self, sizes_before: dict[int, tuple[str, int]]) -> None:
        for camera in [c for c, (cid, *_rest) in self._open_chunks.items() if cid in sizes_before]:
            _chunk_id, fh, _inits, _first = self._open_chunks.pop(camera)
            with contextlib.suppress(OSError):
                fh.close()
        for chunk_id, (camera, size) in sizes_before.items():
            path = self.root / f"cameras/{camera}/{chunk_id:010d}.glc"
            with contextlib.suppress(OSError), open(path, "r+b") as fh:
                fh.truncate(size)
                os.fsync(fh.fileno())
            with contextlib.suppress(sqlite3.Error):
                self.db().execute("UPDATE chunks SET state='closed' WHERE id=?", (chunk_id,))

    def _write(self, fragments: list[Fragment], sizes_before: dict[int, tuple[str, int]]) -> list[int]:
        db = self.db()
        planned: list[tuple[Fragment, int, int, int]] = []
        new_inits: dict[str, InitSegment] = {}
        touched: dict[int, object] = {}
        for frag in fragments:
            chunk_id, fh, inits_in_chunk = self._chunk_for(frag)
            sizes_before.setdefault(chunk_id, (frag.camera, fh.tell()))
            if frag.init.id not in inits_in_chunk:
                init = frag.init
                header = {
                    "init": init.id,
                    "codec": init.codec,
                    "width": init.width,
                    "height": init.height,
                    "sha256": hashlib.sha256(init.data).hexdigest(),
                }
                fh.write(record_head(b"I", header, len(init.data)))
                fh.write(init.data)
                inits_in_chunk.add(init.id)
                new_inits[init.id] = init
            header = {
                "camera": frag.camera,
                "run": frag.run,
                "seq": frag.seq,
                "start_us": frag.start_us,
                "end_us": frag.end_us,
                "frames": frag.frames,
                "init": frag.init.id,
                "origin": frag.origin,
                "arrival_us": frag.arrival_us,
                "sha256": frag.sha256 or hashlib.sha256(frag.payload).hexdigest(),
                "keyframe_first": frag.keyframe_first,
            }
            fh.write(record_head(b"F", header, len(frag.payload)))
            payload_at = fh.tell()
            fh.write(frag.payload)
            planned.append((frag, chunk_id, payload_at, header))
            touched[chunk_id] = fh
        for fh in touched.values():
            if not fh.closed:  # a chunk rolled during this batch was fsynced when it was closed
                fh.flush()
                os.fsync(fh.fileno())
        ids: list[int] = []
        db.execute("BEGIN")
        for init in new_inits.values():
            db.execute(
                "INSERT OR IGNORE INTO inits VALUES (?,?,?,?,?)",
                (init.id, init.codec, init.width, init.height, init.data),
            )
        for frag, chunk_id, payload_at, header in planned:
            cur = db.execute(
                _INSERT_FRAGMENT,
                (
                    frag.camera,
                    frag.run,
                    frag.seq,
                    frag.start_us,
                    frag.end_us,
                    frag.frames,
                    len(frag.payload),
                    chunk_id,
                    payload_at,
                    len(frag.payload),
                    header["sha256"],
                    frag.init.id,
                    frag.origin,
                    int(frag.keyframe_first),
                    frag.arrival_us,
                ),
            )
            ids.append(cur.lastrowid)
            db.execute(
                "UPDATE chunks SET bytes=?, start_us=COALESCE(start_us, ?), end_us=MAX(COALESCE(end_us, 0), ?)"
                " WHERE id=?",
                (payload_at + len(frag.payload), frag.start_us, frag.end_us, chunk_id),
            )
        db.execute("COMMIT")
        return ids

    def _chunk_for(self, frag: Fragment):
        current = self._open_chunks.get(frag.camera)
        if current is not None:
            chunk_id, fh, inits, first_us = current
            if fh.tell() < self.chunk_max_bytes and frag.end_us - first_us < self.chunk_max_us:
                return chunk_id, fh, inits
            self.close_chunk(frag.camera)
        db = self.db()
        (next_id,) = db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM chunks").fetchone()
        rel = f"cameras/{frag.camera}/{next_id:010d}.glc"
        db.execute(
            "INSERT INTO chunks (id, camera, path, created_us) VALUES (?,?,?,?)",
            (next_id, frag.camera, rel, time.time_ns() // 1000),
        )
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "ab")  # noqa: SIM115 - kept open while the chunk is being written
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self._open_chunks[frag.camera] = (next_id, fh, set(), frag.start_us)
        return next_id, fh, self._open_chunks[frag.camera][2]

    def close_chunk(self, camera: str) -> None:
        current = self._open_chunks.pop(camera, None)
        if current is not None:
            chunk_id, fh, _inits, _first = current
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
            self.db().execute("UPDATE chunks SET state='closed' WHERE id=?", (chunk_id,))

    def close(self) -> None:
        for camera in list(self._open_chunks):
            self.close_chunk(camera)

    # ---- retention --------------------------------------------------------------------------
    def delete_chunk(self, chunk_id: int) -> None:
        db = self.db()
        row = db.execute("SELECT path, camera, end_us FROM chunks WHERE id=?", (chunk_id,)).fetchone()
        if row is None:
            return
        db.execute("BEGIN")
        db.execute("UPDATE chunks SET state='deleting' WHERE id=?", (chunk_id,))
        db.execute("DELETE FROM fragments WHERE chunk=?", (chunk_id,))
        db.execute(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=MAX(CAST(value AS INTEGER), ?)",
            (f"deleted_until:{row[1]}", str(row[2] or 0), row[2] or 0),
        )
        db.execute("COMMIT")
        self._finish_delete(chunk_id, self.root / row[0])

    def _finish_delete(self, chunk_id: int, file: Path) -> None:
        file.unlink(missing_ok=True)
        self.db().execute("DELETE FROM chunks WHERE id=?", (chunk_id,))

    # ---- reading ---------------------------------------------------------------------------
    def fragments(self, camera: str, start_us: int, end_us: int) -> list[FragmentRow]:
        rows = (
            self.db()
            .execute(
                f"SELECT {_ROW_COLUMNS} FROM fragments WHERE camera=? AND end_us > ? AND start_us < ?"
                " ORDER BY start_us, id",
                (camera, start_us, end_us),
            )
            .fetchall()
        )
        return [FragmentRow(*r) for r in rows]

    def fragment(self, fragment_id: int) -> FragmentRow | None:
        row = self.db().execute(f"SELECT {_ROW_COLUMNS} FROM fragments WHERE id=?", (fragment_id,)).fetchone()
        return FragmentRow(*row) if row else None

    def read_payload(self, row: FragmentRow) -> bytes:
        (path,) = self.db().execute("SELECT path FROM chunks WHERE id=?", (row.chunk,)).fetchone()
        with open(self.root / path, "rb") as fh:
            fh.seek(row.offset)
            data = fh.read(row.length)
        if len(data) != row.length or hashlib.sha256(data).hexdigest() != row.sha256:
            raise StorageError(f"fragment {row.id}: stored bytes fail their checksum")
        return data

    def init(self, init_id: str) -> InitSegment | None:
        row = self.db().execute("SELECT id, codec, width, height, data FROM inits WHERE id=?", (init_id,)).fetchone()
        return InitSegment(*row) if row else None

    def recent_fragments(self, camera: str, count: int) -> list[FragmentRow]:
        rows = (
            self.db()
            .execute(
                f"SELECT {_ROW_COLUMNS} FROM fragments WHERE camera=? ORDER BY start_us DESC LIMIT ?", (camera, count)
            )
            .fetchall()
        )
        return [FragmentRow(*r) for r in reversed(rows)]

    def deleted_until(self, camera: str) -> int | None:
        row = self.db().execute("SELECT value FROM meta WHERE key=?", (f"deleted_until:{camera}",)).fetchone()
        return int(row[0]) if row else None
