"""Retention on a real store with synthetic fragments (age and recorder-wide bytes, oldest first),
and a recorder whose disk fills up."""

import os
import subprocess
import time

import pytest
from conftest import TOKEN, wait_for

from gapless.audit.audit import audit
from gapless.config.recorder import RecorderConfig
from gapless.recorder.service import Recorder
from gapless.storage.store import Fragment, InitSegment

INIT = InitSegment.make("avc1.64001f", 640, 360, b"\x00" * 64)


def fragments(camera: str, start_us: int, count: int, size: int) -> list[Fragment]:
    return [
        Fragment(
            camera,
            "run",
            i,
            start_us + i * 1_000_000,
            start_us + (i + 1) * 1_000_000,
            25,
            INIT,
            bytes([i % 256]) * size,
            "rec-a",
            start_us,
        )
        for i in range(count)
    ]


def recorder(tmp_path, retention: dict, cameras: list[dict], chunk_duration: str = "2s") -> Recorder:
    config = RecorderConfig.model_validate(
        {
            "recorder": {
                "id": "rec-a",
                "storage": str(tmp_path),
                "api_token": "x" * 16,
                "retention": retention,
                "chunk": {"max_duration": chunk_duration},
            },
            "cameras": [{"url": "rtsp://127.0.0.1:1/x", **c} for c in cameras],
        }
    )
    return Recorder(config)


def test_recorder_byte_limit_deletes_the_oldest_chunks_across_cameras(tmp_path):
    rec = recorder(tmp_path, {"max_bytes": "150KB"}, [{"id": "a"}, {"id": "b"}])
    now = time.time_ns() // 1000
    rec.store.write(fragments("a", now - 100_000_000, 10, 10_000))  # older
    rec.store.write(fragments("b", now - 50_000_000, 10, 10_000))  # newer
    rec.store.close()
    assert rec.apply_retention() > 0
    left = rec.store.db().execute("SELECT camera, SUM(bytes) FROM chunks GROUP BY camera").fetchall()
    assert sum(size for _, size in left) <= 150_000
    # Only the older camera lost footage, and only its oldest: what is left of it is its newest.
    assert rec.store.deleted_until("b") is None and len(rec.store.fragments("b", 0, now)) == 10
    kept_a = rec.store.fragments("a", 0, now)
    assert 0 < len(kept_a) < 10 and kept_a[-1].end_us == now - 90_000_000
    assert rec.store.deleted_until("a") == kept_a[0].start_us


def test_age_limit_keeps_recent_chunks(tmp_path):
    rec = recorder(tmp_path, {"max_age": "1h"}, [{"id": "a"}, {"id": "b", "retention": {"max_age": "30s"}}])
    now = time.time_ns() // 1000
    rec.store.write(fragments("a", now - 7200_000_000, 4, 1000) + fragments("a", now - 10_000_000, 4, 1000))
    rec.store.write(fragments("b", now - 60_000_000, 4, 1000) + fragments("b", now - 10_000_000, 4, 1000))
    rec.store.close()
    rec.apply_retention()
    for camera in ("a", "b"):
        kept = rec.store.fragments(camera, 0, now + 1)
        assert kept and all(f.start_us >= now - 10_000_000 for f in kept), camera


def test_failed_write_leaves_no_torn_record_and_retry_stores_everything(tmp_path, monkeypatch):
    """Disk full in the middle of a batch (fsync fails): the batch is cut back, the retry stores it,
    and the chunk files still read end to end (what --reindex relies on)."""
    import errno
    import os

    rec = recorder(tmp_path, {}, [{"id": "a"}], chunk_duration="1h")  # both batches in one chunk
    now = time.time_ns() // 1000
    rec.store.write(fragments("a", now - 20_000_000, 3, 5000))
    second = fragments("a", now - 17_000_000, 3, 5000)

    def disk_full(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError) as failed:
        rec.store.write(second)
    assert failed.value.errno == errno.ENOSPC
    monkeypatch.undo()
    rec.store.write(second)
    rec.store.close()
    assert len(rec.store.fragments("a", 0, now)) == 6
    report = rec.store.reindex()
    assert report["recovered"] == 6 and report["truncated_bytes"] == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_disk_full_keeps_every_fragment_and_resumes(sim, make_recorder, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(disk)], check=True)
    rec = None
    try:
        ballast = disk / "ballast"
        ballast.write_bytes(b"\0" * 4_700_000)
        rec = make_recorder("rec-a", [{"id": "lobby", "url": sim.url("cam0")}], storage=str(disk / "rec-a")).start()
        rec.wait_fragments("lobby", 2)
        start = time.time()
        full = wait_for(lambda: (h := rec.health())["storage"]["last_error"] and h, 120, "the disk to fill up")
        assert "space" in full["storage"]["last_error"] or "full" in full["storage"]["last_error"]
        time.sleep(5)  # fragments keep arriving and wait in memory
        assert rec.health()["storage"]["queue_depth"] > 0
        assert "gapless_write_queue_depth" in rec.api.get("/metrics").text
        ballast.unlink()
        wait_for(
            lambda: (s := rec.health()["storage"])["last_error"] is None and s["queue_depth"] == 0,
            60,
            "the writer to catch up once space is back",
        )
        rec.wait_fragments("lobby", 2)
        report = audit(rec.url, TOKEN, "lobby", str(start), str(time.time() - 1))
        assert report.missing == [] and report.duplicates == [] and report.gaps == 0, report
        assert report.frames >= 25 * 10
    finally:
        if rec is not None:
            rec.close()  # before the unmount: its files live there
        subprocess.run(["umount", str(disk)], check=False)
