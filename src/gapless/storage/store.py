"""The fragment store: chunk files of self-describing records (storage/records.py) plus a SQLite
(WAL) index, which is a cache of the chunk files: rebuilt from them when it is lost, unreadable or
not the one these files were last written with.

Write order (see docs/design/storage.md): chunk row committed before its file exists; records
appended and fsynced before their index rows are committed. At open, bytes past the last indexed
record are scanned: complete, checksummed records are indexed, damaged ones quarantined (kept, and
left out of every read), and only a torn tail of a chunk that was being written is cut. One process
owns a storage directory at a time (an exclusive lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from gapless.contracts.recorder import FragmentInfo
from gapless.storage.records import Record, record_head, scan_records

log = logging.getLogger("gapless.storage")

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
  keyframe_first INTEGER NOT NULL DEFAULT 1, corrupt INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS fragments_by_time ON fragments(camera, start_us);
CREATE INDEX IF NOT EXISTS fragments_by_chunk ON fragments(chunk);
CREATE TABLE IF NOT EXISTS coverage_hours (
  camera TEXT NOT NULL, hour INTEGER NOT NULL, intervals TEXT NOT NULL, PRIMARY KEY (camera, hour));
CREATE TRIGGER IF NOT EXISTS coverage_hours_insert AFTER INSERT ON fragments BEGIN
  DELETE FROM coverage_hours WHERE camera=NEW.camera AND hour=NEW.start_us / 3600000000; END;
CREATE TRIGGER IF NOT EXISTS coverage_hours_delete AFTER DELETE ON fragments BEGIN
  DELETE FROM coverage_hours WHERE camera=OLD.camera AND hour=OLD.start_us / 3600000000; END;
CREATE TRIGGER IF NOT EXISTS coverage_hours_update AFTER UPDATE ON fragments BEGIN
  DELETE FROM coverage_hours WHERE camera=OLD.camera AND hour=OLD.start_us / 3600000000;
  DELETE FROM coverage_hours WHERE camera=NEW.camera AND hour=NEW.start_us / 3600000000; END;
CREATE TABLE IF NOT EXISTS damaged (
  chunk INTEGER NOT NULL, offset INTEGER NOT NULL, length INTEGER NOT NULL, reason TEXT NOT NULL,
  camera TEXT, start_us INTEGER, end_us INTEGER, found_us INTEGER NOT NULL, PRIMARY KEY (chunk, offset));
"""
#: Ordered schema migrations: entry i brings an index from user_version i to i + 1. An index made
#: before versions were kept has user_version 0 and the tables of version 1 (maybe without
#: keyframe_first, which came first).
MIGRATIONS: tuple[tuple[str, str], ...] = (
    ("", ""),  # 0 -> 1: the tables as they were (SCHEMA creates what is missing)
    ("keyframe_first", "ALTER TABLE fragments ADD COLUMN keyframe_first INTEGER NOT NULL DEFAULT 1"),
    ("corrupt", "ALTER TABLE fragments ADD COLUMN corrupt INTEGER NOT NULL DEFAULT 0"),
)
SCHEMA_VERSION = len(MIGRATIONS)
_OPEN_ID_FILE = "index-open-id"


class StorageInUse(RuntimeError):
    """Another process owns the storage directory."""


def _lock_directory(root: Path) -> int:
    """Take the storage directory's exclusive lock for this process's life (released by the kernel
    when it exits, however it exits); StorageInUse if another process holds it."""
    fd = os.open(root / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise StorageInUse(
            f"storage directory {root} is in use by {holder}: one recorder (or --reindex) at a time"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()}".encode())
    return fd


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

    def public(self) -> FragmentInfo:
        return FragmentInfo(
            id=self.id,
            camera=self.camera,
            run=self.run,
            seq=self.seq,
            start_us=self.start_us,
            end_us=self.end_us,
            frames=self.frames,
            bytes=self.bytes,
            sha256=self.sha256,
            init=self.init,
            origin=self.origin,
            keyframe_first=bool(self.keyframe_first),
            arrival_us=self.arrival_us,
        )


_ROW_COLUMNS = (
    "id, camera, run, seq, start_us, end_us, frames, bytes, chunk, offset, length, sha256, init, origin,"
    " keyframe_first, arrival_us"
)
_INSERT_FRAGMENT = f"INSERT INTO fragments ({_ROW_COLUMNS[4:]}) VALUES ({', '.join('?' * 15)})"


class StorageError(OSError):
    """Stored data that fails its checksum, or an index write that failed (disk full)."""

    @property
    def index_damaged(self) -> bool:
        """The index itself is damaged (SQLite's CORRUPT or NOTADB: truncated, overwritten), not
        merely unwritable for now (disk full, I/O error): rebuilding it from the chunks is the cure."""
        cause = self.__cause__
        return isinstance(cause, sqlite3.DatabaseError) and not isinstance(cause, sqlite3.OperationalError)


@dataclass
class OpenChunk:
    """The chunk a camera's fragments are appended to now."""

    id: int
    file: BinaryIO
    inits: set[str]  # init segments already written into it
    first_us: int


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
        self.root.chmod(0o700)  # the index holds backfill sources' tokens
        self._lock = _lock_directory(self.root)
        self.db_path = self.root / "index.sqlite3"
        self._local = threading.local()
        self._generation = 0  # bumped when the index file is replaced: every thread reconnects
        self._open_id = ""
        self._open_chunks: dict[str, OpenChunk] = {}
        self._next_chunk = 1
        #: Set when the index had to be rebuilt from the chunk files at open (why, and what it found).
        self.rebuilt: dict | None = None
        try:
            stale = self._open_index()
        except sqlite3.DatabaseError as exc:
            stale = f"unreadable ({exc})"
        if stale:
            log.error("index %s is %s: moved aside, rebuilding it from the chunk files", self.db_path, stale)
            self.rebuilt = {"why": stale, **self.reindex()}
        self._next_chunk = self._first_free_chunk_id()

    def _open_index(self) -> str:
        """Open (or create) the index and bring its schema up to date; returns why it cannot be
        trusted as a cache of these chunk files ("" when it can)."""
        db = self.db()
        for suffix in ("", "-wal", "-shm"):  # an index made before files were private
            with contextlib.suppress(FileNotFoundError):
                Path(f"{self.db_path}{suffix}").chmod(0o600)
        (version,) = db.execute("PRAGMA user_version").fetchone()
        fresh = db.execute("SELECT COUNT(*) FROM sqlite_master WHERE name='fragments'").fetchone()[0] == 0
        db.executescript(SCHEMA)
        if fresh:
            version = SCHEMA_VERSION
        columns = {row[1] for row in db.execute("PRAGMA table_info(fragments)")}
        for column, statement in MIGRATIONS[version:]:
            if statement and column not in columns:  # an unversioned index may have some already
                db.execute(statement)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        db.execute("INSERT OR IGNORE INTO meta VALUES ('created', ?)", (str(time.time()),))
        row = db.execute("SELECT value FROM meta WHERE key='open_id'").fetchone()
        recorded = self.root / _OPEN_ID_FILE
        expected = recorded.read_text().strip() if recorded.exists() else None
        if expected is not None and (row is None or row[0] != expected):
            return "lost, or not the one these chunk files were last written with (restored or swapped)"
        self._new_open_id()
        return ""

    def _new_open_id(self) -> None:
        """A new id per open, in the index and beside it: a restored or swapped index shows at the next open."""
        open_id = self._open_id = uuid.uuid4().hex
        self.db().execute("INSERT OR REPLACE INTO meta VALUES ('open_id', ?)", (open_id,))
        tmp = self.root / f".{_OPEN_ID_FILE}.tmp"
        tmp.write_text(open_id)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        tmp.replace(self.root / _OPEN_ID_FILE)

    def index_problem(self) -> str | None:
        """What is wrong with the index file on disk, as a new connection finds it (None: nothing).
        A connection open for long works from its cached pages and never notices the file truncated,
        replaced or deleted under it; a new one does. Reads only the open id and the last fragment
        id (a few pages, however large the index)."""
        try:
            conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5)
            try:
                row = conn.execute("SELECT value FROM meta WHERE key='open_id'").fetchone()
                conn.execute("SELECT MAX(id) FROM fragments").fetchone()
            finally:
                conn.close()
        except sqlite3.OperationalError as exc:
            return None if "locked" in str(exc) or "busy" in str(exc) else str(exc)
        except sqlite3.DatabaseError as exc:
            return str(exc)
        if row is None or row[0] != self._open_id:
            return "it no longer holds the open id it was opened with (replaced or truncated)"
        return None

    def db(self) -> sqlite3.Connection:
        """This thread's connection to the current index (a new one after a rebuild replaced it)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.generation != self._generation:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
            conn = None
        if conn is None:
            conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn, self._local.generation = conn, self._generation
        return conn

    # ---- recovery -------------------------------------------------------------------------
    def recover(self) -> dict:
        """Make the index match the chunk files: index chunk files it does not know, index complete
        records past the indexed end, quarantine damaged ones, cut torn tails of chunks that were
        being written, finish interrupted deletions. Returns what it did."""
        db = self.db()
        report = {"recovered": 0, "truncated_bytes": 0, "dropped_rows": 0, "deleted_chunks": 0, "damaged": 0}
        for chunk_id, path in db.execute("SELECT id, path FROM chunks WHERE state='deleting'").fetchall():
            self._finish_delete(chunk_id, self.root / path)
            report["deleted_chunks"] += 1
        self._adopt_unknown_files(report)
        for chunk_id, camera, path, state in db.execute("SELECT id, camera, path, state FROM chunks").fetchall():
            file = self.root / path
            data = file.read_bytes() if file.exists() else b""
            indexed_end = self._indexed_end(chunk_id)
            if indexed_end > len(data):
                # Rows whose bytes never reached the disk (should not happen: fsync precedes commit).
                cur = db.execute("DELETE FROM fragments WHERE chunk=? AND offset + length > ?", (chunk_id, len(data)))
                report["dropped_rows"] += cur.rowcount
                log.error("chunk %s: %d index rows pointed past the file end; removed", path, cur.rowcount)
                indexed_end = self._indexed_end(chunk_id)
            keep = self._index_records(camera, chunk_id, data, indexed_end, report, may_cut=state == "open")
            self._cut(file, data, keep, report)
            db.execute("UPDATE chunks SET state='closed', bytes=? WHERE id=?", (keep, chunk_id))
        self._refresh_chunk_bounds()
        self._next_chunk = self._first_free_chunk_id()
        return report

    def _indexed_end(self, chunk_id: int) -> int:
        (end,) = (
            self.db()
            .execute(
                "SELECT MAX(COALESCE((SELECT MAX(offset + length) FROM fragments WHERE chunk=?), 0),"
                " COALESCE((SELECT MAX(offset + length) FROM damaged WHERE chunk=?), 0))",
                (chunk_id, chunk_id),
            )
            .fetchone()
        )
        return end

    def _chunk_files(self) -> list[Path]:
        return sorted((self.root / "cameras").glob("*/*.glc"))

    def _first_free_chunk_id(self) -> int:
        """Chunk ids never collide, across cameras and restarts: above every id in the index and on disk."""
        (indexed,) = self.db().execute("SELECT COALESCE(MAX(id), 0) FROM chunks").fetchone()
        on_disk = max((int(f.stem) for f in self._chunk_files() if f.stem.isdigit()), default=0)
        return max(indexed, on_disk) + 1

    def _adopt_unknown_files(self, report: dict) -> None:
        """Chunk files the index does not know (an index restored from before them, or rebuilt) are
        indexed, never orphaned: each becomes a closed chunk whose records are scanned in full."""
        db = self.db()
        known = {row[0] for row in db.execute("SELECT path FROM chunks")}
        unknown = [f for f in self._chunk_files() if str(f.relative_to(self.root)) not in known]
        newest = {f.parent.name: f for f in unknown}  # files sort by id: the last per camera is its newest
        spare = self._first_free_chunk_id()  # above every id on disk: never a later file's own number
        for file in unknown:
            if file.stem.isdigit() and not db.execute("SELECT 1 FROM chunks WHERE id=?", (int(file.stem),)).fetchone():
                chunk_id = int(file.stem)
            else:  # a number another camera's chunk took (the old allocation's collision)
                chunk_id, spare = spare, spare + 1
            camera = file.parent.name
            db.execute(
                "INSERT INTO chunks (id, camera, path, state, created_us) VALUES (?,?,?,'closed',?)",
                (chunk_id, camera, str(file.relative_to(self.root)), int(file.stat().st_mtime * 1e6)),
            )
            data = file.read_bytes()
            keep = self._index_records(camera, chunk_id, data, 0, report, may_cut=newest[camera] == file)
            self._cut(file, data, keep, report)
            db.execute("UPDATE chunks SET bytes=? WHERE id=?", (keep, chunk_id))
            report["chunks"] = report.get("chunks", 0) + 1
            log.info("indexed chunk file %s, which the index did not know", file)

    @staticmethod
    def _cut(file: Path, data: bytes, keep: int, report: dict) -> None:
        if keep < len(data):
            report["truncated_bytes"] += len(data) - keep
            log.warning("chunk %s: cut a torn tail of %d bytes at %d", file, len(data) - keep, keep)
            with open(file, "r+b") as fh:
                fh.truncate(keep)
                os.fsync(fh.fileno())

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
        (self.root / _OPEN_ID_FILE).unlink(missing_ok=True)
        self._generation += 1
        self._open_index()
        report = {"chunks": 0, "recovered": 0, "truncated_bytes": 0, "damaged": 0}
        self._adopt_unknown_files(report)
        self._refresh_chunk_bounds()
        self._next_chunk = self._first_free_chunk_id()
        return report

    def _index_records(self, camera: str, chunk_id: int, data: bytes, start: int, report: dict, may_cut: bool) -> int:
        """Index the records of data[start:] (damaged ones quarantined); returns where the file's
        kept bytes end: before a torn tail if `may_cut` (a chunk that was being written), else its end."""
        db = self.db()
        end = start
        db.execute("BEGIN")
        for record in scan_records(data, start):
            if record.valid and record.kind == b"I":
                assert record.header is not None
                header = record.header
                payload = data[record.payload_at : record.end]
                db.execute(
                    "INSERT OR IGNORE INTO inits VALUES (?,?,?,?,?)",
                    (header["init"], header["codec"], header["width"], header["height"], payload),
                )
            elif record.valid and self._insert_scanned(chunk_id, record):
                report["recovered"] += 1
            else:
                self._quarantine(chunk_id, record, camera)
                report["damaged"] += 1
            end = record.end
        db.execute("COMMIT")
        return end if may_cut else len(data)

    def _insert_scanned(self, chunk_id: int, record: Record) -> bool:
        """Index a valid fragment record; False when its header lacks what a row needs."""
        header = record.header or {}
        try:
            values = (
                header["camera"],
                header["run"],
                header["seq"],
                header["start_us"],
                header["end_us"],
                header["frames"],
                record.length,
                chunk_id,
                record.payload_at,
                record.length,
                header["sha256"],
                header["init"],
                header["origin"],
                int(header.get("keyframe_first", True)),
                header.get("arrival_us"),
            )
            self.db().execute(_INSERT_FRAGMENT, values)
        except (KeyError, sqlite3.IntegrityError):  # a header without its fields, or an unknown init
            return False
        return True

    def _quarantine(self, chunk_id: int, record: Record, camera: str) -> None:
        """Keep a damaged record's bytes where they are and remember them (never served, never cut)."""
        header = record.header or {}
        self.db().execute(
            "INSERT OR REPLACE INTO damaged VALUES (?,?,?,?,?,?,?,?)",
            (
                chunk_id,
                record.offset,
                record.end - record.offset,
                record.reason or "record header lacks its fields",
                header.get("camera", camera),
                header.get("start_us"),
                header.get("end_us"),
                time.time_ns() // 1000,
            ),
        )
        log.error(
            "chunk %d: damaged record at %d (%d bytes, %s): quarantined%s",
            chunk_id,
            record.offset,
            record.end - record.offset,
            record.reason,
            f", camera {header['camera']} at {header.get('start_us')}" if "camera" in header else "",
        )

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
        for camera in [c for c, chunk in self._open_chunks.items() if chunk.id in sizes_before]:
            with contextlib.suppress(OSError):
                self._open_chunks.pop(camera).file.close()
        for chunk_id, (camera, size) in sizes_before.items():
            path = self.root / f"cameras/{camera}/{chunk_id:010d}.glc"
            with contextlib.suppress(OSError), open(path, "r+b") as fh:
                fh.truncate(size)
                os.fsync(fh.fileno())
            with contextlib.suppress(sqlite3.Error):
                self.db().execute("UPDATE chunks SET state='closed' WHERE id=?", (chunk_id,))

    def _write(self, fragments: list[Fragment], sizes_before: dict[int, tuple[str, int]]) -> list[int]:
        db = self.db()
        planned: list[tuple[Fragment, int, int, dict[str, object]]] = []
        new_inits: dict[str, InitSegment] = {}
        touched: dict[int, BinaryIO] = {}
        for frag in fragments:
            chunk = self._chunk_for(frag)
            chunk_id, fh, inits_in_chunk = chunk.id, chunk.file, chunk.inits
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
            assert cur.lastrowid is not None  # an INSERT always sets it
            ids.append(cur.lastrowid)
            db.execute(
                "UPDATE chunks SET bytes=?, start_us=COALESCE(start_us, ?), end_us=MAX(COALESCE(end_us, 0), ?)"
                " WHERE id=?",
                (payload_at + len(frag.payload), frag.start_us, frag.end_us, chunk_id),
            )
        db.execute("COMMIT")
        return ids

    def _chunk_for(self, frag: Fragment) -> OpenChunk:
        current = self._open_chunks.get(frag.camera)
        if current is not None:
            if current.file.tell() < self.chunk_max_bytes and frag.end_us - current.first_us < self.chunk_max_us:
                return current
            self.close_chunk(frag.camera)
        db = self.db()
        next_id, self._next_chunk = self._next_chunk, self._next_chunk + 1
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
        chunk = self._open_chunks[frag.camera] = OpenChunk(next_id, fh, set(), frag.start_us)
        return chunk

    def close_chunk(self, camera: str) -> None:
        current = self._open_chunks.pop(camera, None)
        if current is not None:
            current.file.flush()
            os.fsync(current.file.fileno())
            current.file.close()
            self.db().execute("UPDATE chunks SET state='closed' WHERE id=?", (current.id,))

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
                " AND corrupt=0 ORDER BY start_us, id",
                (camera, start_us, end_us),
            )
            .fetchall()
        )
        return [FragmentRow(*r) for r in rows]

    def quarantined(self, camera: str, start_us: int, end_us: int) -> list[tuple[int, int]]:
        """(start, end) of the camera's fragments in the range whose bytes failed their checksum."""
        rows = self.db().execute(
            "SELECT start_us, end_us FROM fragments WHERE camera=? AND end_us > ? AND start_us < ? AND corrupt=1"
            " ORDER BY start_us",
            (camera, start_us, end_us),
        )
        return [(a, b) for a, b in rows]

    def fragment(self, fragment_id: int) -> FragmentRow | None:
        row = self.db().execute(f"SELECT {_ROW_COLUMNS} FROM fragments WHERE id=?", (fragment_id,)).fetchone()
        return FragmentRow(*row) if row else None

    def read_payload(self, row: FragmentRow) -> bytes:
        (path,) = self.db().execute("SELECT path FROM chunks WHERE id=?", (row.chunk,)).fetchone()
        with open(self.root / path, "rb") as fh:
            fh.seek(row.offset)
            data = fh.read(row.length)
        if len(data) != row.length or hashlib.sha256(data).hexdigest() != row.sha256:
            self.mark_corrupt(row)
            raise StorageError(f"fragment {row.id}: stored bytes fail their checksum")
        return data

    def scrub(self, after_id: int, budget_bytes: int) -> tuple[int, int]:
        """Verify stored fragments after `after_id`, in id order, until `budget_bytes` are read: a
        fragment whose bytes fail their checksum is quarantined (as at any read), so its time is
        backfilled before anyone needs it. Returns (the last id verified, 0 to start over; how many
        were found damaged)."""
        damaged = 0
        last = after_id
        while budget_bytes > 0:
            rows = (
                self.db()
                .execute(
                    f"SELECT {_ROW_COLUMNS} FROM fragments WHERE id > ? AND corrupt=0 ORDER BY id LIMIT 64", (last,)
                )
                .fetchall()
            )
            if not rows:
                return 0, damaged
            for values in rows:
                row = FragmentRow(*values)
                last = row.id
                budget_bytes -= row.length
                try:
                    self.read_payload(row)
                except StorageError:
                    damaged += 1
                except OSError as exc:  # a chunk deleted by retention meanwhile, or unreadable
                    log.warning("scrub: fragment %d: %s", row.id, exc)
                if budget_bytes <= 0:
                    break
        return last, damaged

    def mark_corrupt(self, row: FragmentRow) -> None:
        """A fragment whose bytes went bad on disk: quarantined (left out of every read, so the gap
        scanner sees a hole a partner can fill), its bytes kept for inspection."""
        log.error(
            "fragment %d of %s at %d: stored bytes fail their checksum; quarantined", row.id, row.camera, row.start_us
        )
        with contextlib.suppress(sqlite3.Error):
            self.db().execute("UPDATE fragments SET corrupt=1 WHERE id=?", (row.id,))

    def damage(self) -> dict:
        """What is quarantined: corrupt fragments and damaged spans, for health and `gapless check`."""
        db = self.db()
        (fragments,) = db.execute("SELECT COUNT(*) FROM fragments WHERE corrupt=1").fetchone()
        spans, size = db.execute("SELECT COUNT(*), COALESCE(SUM(length), 0) FROM damaged").fetchone()
        return {"corrupt_fragments": fragments, "damaged_spans": spans, "damaged_bytes": size}

    def init(self, init_id: str) -> InitSegment | None:
        row = self.db().execute("SELECT id, codec, width, height, data FROM inits WHERE id=?", (init_id,)).fetchone()
        return InitSegment(*row) if row else None

    def recent_fragments(self, camera: str, count: int) -> list[FragmentRow]:
        rows = (
            self.db()
            .execute(
                f"SELECT {_ROW_COLUMNS} FROM fragments WHERE camera=? AND corrupt=0 ORDER BY start_us DESC LIMIT ?",
                (camera, count),
            )
            .fetchall()
        )
        return [FragmentRow(*r) for r in reversed(rows)]

    def deleted_until(self, camera: str) -> int | None:
        row = self.db().execute("SELECT value FROM meta WHERE key=?", (f"deleted_until:{camera}",)).fetchone()
        return int(row[0]) if row else None
