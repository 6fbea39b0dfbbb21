"""Versioned storage of the cluster configuration (SQLite): every accepted change is a new version."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from pathlib import Path

from gapless.config.cluster import ClusterDocument


class ConfigStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o700)  # the configuration holds recorder tokens and camera passwords
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for suffix in ("", "-wal", "-shm"):  # a store made before files were private
            with contextlib.suppress(FileNotFoundError):
                Path(f"{path}{suffix}").chmod(0o600)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS versions (version INTEGER PRIMARY KEY, created_us INTEGER NOT NULL,"
            " document TEXT NOT NULL)"
        )

    def latest(self) -> tuple[int, ClusterDocument] | None:
        row = self.db.execute("SELECT version, document FROM versions ORDER BY version DESC LIMIT 1").fetchone()
        return None if row is None else (row[0], ClusterDocument.model_validate(json.loads(row[1])))

    def save(self, document: ClusterDocument, expected_version: int | None = None) -> int | None:
        """Store a validated document as the next version; None if expected_version is stale."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            (current,) = self.db.execute("SELECT COALESCE(MAX(version), 0) FROM versions").fetchone()
            if expected_version is not None and expected_version != current:
                return None
            self.db.execute(
                "INSERT INTO versions VALUES (?, ?, ?)",
                (current + 1, time.time_ns() // 1000, document.model_dump_json()),
            )
            return current + 1

    def close(self) -> None:
        self.db.close()
