"""The archive keeps what it holds whatever happens to its files: a flipped byte costs one fragment
(quarantined, replaced from the partner), a lost or damaged index is rebuilt from the chunk files,
two recorders never share a storage directory, and an export across a damaged fragment completes."""

from __future__ import annotations

import io
import itertools
import json
import sqlite3
import subprocess
import time

import av
from conftest import GAPLESS, TOKEN, audit_clean, wait_for

from gapless.audit.audit import audit

KEY = ("run", "seq", "start_us", "end_us", "frames", "bytes", "sha256", "init", "origin")


def fragments(rec, since: float) -> list[dict]:
    reply = rec.api.get("/api/v1/cameras/cam/fragments", params={"start": since, "end": time.time() + 60})
    return reply.json()["fragments"]


def flip_a_byte_in(rec, index: int) -> dict:
    """Flip one byte in the middle of the index-th fragment's payload (recorder stopped)."""
    db = sqlite3.connect(f"file:{rec.storage / 'index.sqlite3'}?mode=ro", uri=True)
    row = db.execute(
        "SELECT f.id, c.path, f.offset, f.length, f.start_us FROM fragments f JOIN chunks c ON f.chunk = c.id"
        " ORDER BY f.start_us LIMIT 1 OFFSET ?",
        (index,),
    ).fetchone()
    db.close()
    fragment_id, path, offset, length, start_us = row
    with open(rec.storage / path, "r+b") as fh:
        fh.seek(offset + length // 2)
        byte = fh.read(1)
        fh.seek(offset + length // 2)
        fh.write(bytes([byte[0] ^ 0x40]))
    return {"id": fragment_id, "path": path, "start_us": start_us}


def test_a_flipped_byte_costs_one_fragment_which_the_partner_replaces(sim, make_recorder):
    cams = [{"id": "cam", "url": sim.url("cam0")}]
    b = make_recorder("rec-b", cams).start()
    extra = {"partners": [{"id": "rec-b", "url": b.url, "token": TOKEN}], "backfill": {"scan_interval": "5s"}}
    a = make_recorder("rec-a", cams, extra, chunk={"max_duration": "3s"}).start()
    started = time.time()
    a.wait_fragments("cam", 8)
    a.proc.stop()
    before = fragments(b, started - 60)  # rec-a's API is down; its listing is read again below
    damaged = flip_a_byte_in(a, 3)
    a.start()
    kept = fragments(a, started - 60)
    read = a.api.get(f"/api/v1/fragments/{damaged['id']}")
    assert read.status_code == 500 and read.json()["corrupt"], read.text
    health = a.health()["storage"]
    assert health["corrupt_fragments"] == 1, health
    assert damaged["id"] not in {f["id"] for f in fragments(a, started - 60)}  # quarantined: never served
    assert len(before) >= 8
    end = time.time() - 2
    audit_clean(a, "cam", kept[0]["start_us"] / 1e6, end)  # the partner's copy fills the hole
    a.proc.stop()
    listing = sorted(tuple(f[k] for k in KEY) for f in fragments_offline(a, kept[0]["start_us"] / 1e6))
    reindex = subprocess.run(
        [*GAPLESS, "recorder", "--config", str(a.config_path), "--reindex"], capture_output=True, text=True, timeout=120
    )
    assert reindex.returncode == 0, reindex.stderr
    assert "'damaged': 1" in reindex.stdout and "'truncated_bytes': 0" in reindex.stdout, reindex.stdout
    a.start()
    after = sorted(tuple(f[k] for k in KEY) for f in fragments(a, kept[0]["start_us"] / 1e6))
    after = [f for f in after if f[3] <= end * 1e6]
    assert [f for f in listing if f[3] <= end * 1e6] == after, "--reindex lost a valid fragment"


def test_the_scrubber_finds_damage_nobody_read(sim, make_recorder):
    rec = make_recorder("rec-a", [{"id": "cam", "url": sim.url("cam0")}], chunk={"max_duration": "3s"}).start()
    rec.wait_fragments("cam", 6)
    rec.proc.stop()
    damaged = flip_a_byte_in(rec, 2)
    rec.start()
    wait_for(lambda: rec.health()["storage"]["corrupt_fragments"] == 1, 90, "the scrubber to find the damage")
    assert damaged["id"] not in {f["id"] for f in fragments(rec, damaged["start_us"] / 1e6 - 60)}


def fragments_offline(rec, since: float) -> list[dict]:
    """The fragment rows of a stopped recorder's index, as the API lists them."""
    db = sqlite3.connect(f"file:{rec.storage / 'index.sqlite3'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    rows = db.execute(
        "SELECT run, seq, start_us, end_us, frames, bytes, sha256, init, origin FROM fragments"
        " WHERE camera='cam' AND corrupt=0 AND end_us > ? ORDER BY start_us",
        (int(since * 1e6),),
    ).fetchall()
    db.close()
    return [dict(r) for r in rows]


def test_a_lost_index_is_rebuilt_from_the_chunk_files(sim, make_recorder):
    rec = make_recorder("rec-a", [{"id": "cam", "url": sim.url("cam0")}], chunk={"max_duration": "3s"}).start()
    started = time.time()
    rec.wait_fragments("cam", 6)
    rec.proc.stop()
    before = fragments_offline(rec, started - 60)
    for suffix in ("", "-wal", "-shm"):
        (rec.storage / f"index.sqlite3{suffix}").unlink(missing_ok=True)
    rec.start()
    assert rec.health()["storage"]["index_rebuilt"]["why"].startswith("lost"), rec.health()["storage"]
    after = fragments(rec, started - 60)
    assert [tuple(f[k] for k in KEY) for f in after[: len(before)]] == [tuple(f[k] for k in KEY) for f in before]
    rec.wait_fragments("cam", 2)  # recording resumes, in chunks whose ids collide with none on disk
    report = audit(rec.url, TOKEN, "cam", str(before[0]["start_us"] / 1e6), str(before[-1]["end_us"] / 1e6))
    assert not report.lost, report


def test_an_index_truncated_while_recording_is_rebuilt_and_nothing_is_lost(sim, make_recorder):
    cams = [{"id": "cam", "url": sim.url("cam0")}]
    b = make_recorder("rec-b", cams).start()
    extra = {"partners": [{"id": "rec-b", "url": b.url, "token": TOKEN}], "backfill": {"scan_interval": "5s"}}
    a = make_recorder("rec-a", cams, extra).start()
    started = time.time()
    a.wait_fragments("cam", 4)
    pid = a.proc.popen.pid
    with open(a.storage / "index.sqlite3", "r+b") as fh:
        fh.truncate(0)
    rebuilt = wait_for(
        lambda: a.health()["storage"]["index_rebuilt"], 60, "the recorder to rebuild its index while recording"
    )
    assert "while recording" in rebuilt["why"], rebuilt
    a.wait_fragments("cam", 3)
    assert a.proc.popen.pid == pid and a.proc.popen.poll() is None, "the recorder restarted or died"
    audit_clean(a, "cam", started + 2, time.time() - 2)


def test_two_recorders_never_share_a_storage_directory(sim, make_recorder, tmp_path):
    cams = [{"id": "cam", "url": sim.url("cam0")}]
    first = make_recorder("rec-a", cams).start()
    first.wait_fragments("cam", 1)
    second = make_recorder("rec-a2", cams, storage=str(first.storage))
    result = subprocess.run(
        [*GAPLESS, "recorder", "--config", str(second.config_path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "is in use by pid" in result.stderr, result.stderr
    reindex = subprocess.run(
        [*GAPLESS, "recorder", "--config", str(first.config_path), "--reindex"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert reindex.returncode == 2 and "one recorder (or --reindex) at a time" in reindex.stderr
    first.wait_fragments("cam", 2)  # the owner records on


def test_an_export_across_a_damaged_fragment_completes_and_says_what_it_left_out(sim, make_recorder):
    rec = make_recorder("rec-a", [{"id": "cam", "url": sim.url("cam0")}], chunk={"max_duration": "3s"}).start()
    started = time.time()
    rec.wait_fragments("cam", 7)
    rec.proc.stop()
    rows = fragments_offline(rec, started - 60)
    damaged = flip_a_byte_in(rec, 3)
    found = check(rec)
    assert found.returncode == 1 and len(json.loads(found.stdout)["bad_fragments"]) == 1, found.stdout
    rec.start()
    start, end = rows[0]["start_us"] / 1e6, rows[6]["end_us"] / 1e6
    body = rec.api.get("/api/v1/cameras/cam/export.mp4", params={"start": start, "end": end})
    assert body.status_code == 200
    tail = body.content[body.content.rindex(b"free") + 4 :]
    left_out = json.loads(tail)["gapless_left_out"]
    assert len(left_out) == 1 and "checksum" in left_out[0]["why"], left_out
    with av.open(io.BytesIO(body.content)) as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream) if p.dts is not None]
        pts = [p.pts for p in packets]
        frames = sum(len(p.decode()) for p in packets)
    hole = max(b - a for a, b in itertools.pairwise(pts))
    assert hole >= 20 * 3600, "the left-out GOP shows as a gap in time"
    assert len(pts) == sum(r["frames"] for r in rows[:7]) - 25  # one GOP (25 frames) left out
    assert frames >= len(pts) - 25  # the GOP after the hole decodes from its own keyframe
    progressive = rec.api.get(
        "/api/v1/cameras/cam/export.mp4", params={"start": start, "end": end, "layout": "progressive"}
    )
    assert progressive.status_code == 200
    assert json.loads(progressive.headers["x-gapless-left-out"])[0]["start"], progressive.headers
    assert damaged["start_us"] >= rows[0]["start_us"]
    after = check(rec)  # read-only, beside the running recorder: the damage is quarantined now
    assert after.returncode == 0 and json.loads(after.stdout)["quarantined"] == 1, after.stdout


def check(rec) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*GAPLESS, "check", "--storage", str(rec.storage), "--json"], capture_output=True, text=True, timeout=60
    )
