"""Retention: delete whole oldest chunks (docs/design/storage.md, Retention)."""

from __future__ import annotations

import logging
import time

from gapless.config.recorder import Retention
from gapless.storage.store import FragmentStore

log = logging.getLogger("gapless.retention")


def apply_retention(store: FragmentStore, cameras: dict[str, Retention], recorder: Retention) -> int:
    """Per camera by age (the camera's limit, else the recorder's) and by the camera's byte limit;
    then, across all cameras, the chunk that ends earliest while the recorder's byte limit is
    exceeded. The chunk being written is never deleted. Returns how many chunks were deleted."""
    deleted = 0
    now_us = time.time_ns() // 1000
    db = store.db()
    for camera_id, own in cameras.items():
        max_age, max_bytes = own.max_age or recorder.max_age, own.max_bytes
        rows = db.execute(
            "SELECT id, bytes, end_us, state FROM chunks WHERE camera=? ORDER BY id", (camera_id,)
        ).fetchall()
        total = sum(r[1] for r in rows)
        for chunk_id, size, end_us, state in rows:
            too_old = max_age is not None and end_us is not None and end_us < now_us - max_age * 1e6
            too_big = max_bytes is not None and total > max_bytes
            if not (too_old or too_big) or state == "open":
                break
            _delete(store, chunk_id, camera_id, size, "age" if too_old else "camera bytes")
            total -= size
            deleted += 1
    if recorder.max_bytes is not None:
        rows = db.execute("SELECT id, camera, bytes, state FROM chunks ORDER BY end_us, id").fetchall()
        total = sum(r[2] for r in rows)
        for chunk_id, camera_id, size, state in rows:
            if total <= recorder.max_bytes:
                break
            if state == "open":
                continue
            _delete(store, chunk_id, camera_id, size, "recorder bytes")
            total -= size
            deleted += 1
    return deleted


def _delete(store: FragmentStore, chunk_id: int, camera_id: str, size: int, why: str) -> None:
    store.delete_chunk(chunk_id)
    log.info("retention (%s): deleted chunk %d of %s (%d bytes)", why, chunk_id, camera_id, size)
