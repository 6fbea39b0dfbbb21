"""`gapless check --storage DIR`: verify a storage directory's index against its chunk files, read-only.

Safe while a recorder runs (the index is opened read-only; files are only read). Reports what
recovery would do at the next start and what is already quarantined, so an operator can see whether
an archive is whole without touching it.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from gapless.storage.records import scan_records


@dataclass
class CheckReport:
    chunks: int = 0
    fragments: int = 0
    bad_fragments: list[str] = field(default_factory=list)  # indexed, bytes fail their checksum
    missing_files: list[str] = field(default_factory=list)
    unknown_files: list[str] = field(default_factory=list)  # chunk files the index does not know
    unindexed_records: int = 0  # complete records past the indexed end (indexed at the next start)
    damaged_spans: list[str] = field(default_factory=list)  # found now, not yet quarantined
    quarantined: int = 0  # corrupt fragments and damaged spans already recorded in the index
    index_error: str = ""

    @property
    def problems(self) -> bool:
        return bool(
            self.bad_fragments or self.missing_files or self.unknown_files or self.damaged_spans or self.index_error
        )


def check_storage(root: Path) -> CheckReport:
    report = CheckReport()
    index = root / "index.sqlite3"
    if not index.exists():
        report.index_error = "no index.sqlite3 (the recorder rebuilds it from the chunk files at its next start)"
        report.unknown_files = [str(f.relative_to(root)) for f in sorted(root.glob("cameras/*/*.glc"))]
        return report
    try:
        db = sqlite3.connect(f"file:{index}?mode=ro", uri=True)
        chunks = db.execute("SELECT id, path FROM chunks WHERE state != 'deleting'").fetchall()
        has_damaged = db.execute("SELECT COUNT(*) FROM sqlite_master WHERE name='damaged'").fetchone()[0]
        columns = {row[1] for row in db.execute("PRAGMA table_info(fragments)")}
        corrupt = "corrupt" if "corrupt" in columns else "0"
        if has_damaged:
            report.quarantined += db.execute("SELECT COUNT(*) FROM damaged").fetchone()[0]
        if "corrupt" in columns:
            report.quarantined += db.execute("SELECT COUNT(*) FROM fragments WHERE corrupt=1").fetchone()[0]
        known = {path for _id, path in chunks}
        on_disk = [str(f.relative_to(root)) for f in sorted(root.glob("cameras/*/*.glc"))]
        report.unknown_files = [path for path in on_disk if path not in known]
        for chunk_id, path in chunks:
            report.chunks += 1
            file = root / path
            if not file.exists():
                report.missing_files.append(path)
                continue
            data = file.read_bytes()
            rows = db.execute(
                f"SELECT id, offset, length, sha256, {corrupt} FROM fragments WHERE chunk=?", (chunk_id,)
            ).fetchall()
            end = 0
            for fragment_id, offset, length, sha, quarantined in rows:
                end = max(end, offset + length)
                if quarantined:
                    continue
                report.fragments += 1
                if hashlib.sha256(data[offset : offset + length]).hexdigest() != sha:
                    report.bad_fragments.append(f"fragment {fragment_id} in {path} at {offset}")
            if has_damaged:
                (damaged_end,) = db.execute(
                    "SELECT COALESCE(MAX(offset + length), 0) FROM damaged WHERE chunk=?", (chunk_id,)
                ).fetchone()
                end = max(end, damaged_end)
            for record in scan_records(data, end):
                if record.valid:
                    report.unindexed_records += 1
                else:
                    report.damaged_spans.append(f"{path} at {record.offset}: {record.length} bytes, {record.reason}")
    except sqlite3.DatabaseError as exc:
        report.index_error = f"the index is unreadable ({exc}): the recorder rebuilds it at its next start"
    return report
