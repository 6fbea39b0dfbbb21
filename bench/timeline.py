"""Merged-timeline benchmark: a paired camera's timeline over 30 days, from indexes synthesised at
one fragment (GOP) a second: 2.6 million rows on the primary, a week on the secondary, both with
daily outages.

Measured through the real processes (management server with its gateway, two recorders on the
synthesised storage): the gateway's merged timeline (`GET /api/v1/cameras/{id}/timeline`, both
recorders' coverage merged), and beside it the plain coverage query of the primary
(`GET /api/v1/cameras/{id}/coverage`), each cold (the first query after start: hour summaries
computed and kept) and warm (p50/p99 of the next ones). The baseline is the old path of the
coverage query, in the same run on the same index: every fragment row of the 30 days read and
merged (`merged(store.fragments(...))`). Goal: timeline query ≤ 50 ms.

Usage: python bench/timeline.py [--days 30] [--queries 50]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import httpx
import yaml
from failover import percentile, spawn, stop_all, wait  # bench/failover.py
from report import free_port, show, write_section

from gapless.storage.coverage import merged
from gapless.storage.store import Fragment, FragmentStore, InitSegment

TOKEN = "bench-token-0123456789abcdef"
DAY_US = 86_400_000_000
OUTAGE_US = 600_000_000  # ten minutes a day
INIT = InitSegment.make("avc1.64001f", 320, 180, b"\x00" * 64)


def in_child(function, *args):
    """Run in a process of its own: a store holds its directory's lock for its process's life."""
    with ProcessPoolExecutor(1) as pool:
        return pool.submit(function, *args).result()


def synthesise(root: Path, camera: str, origin: str, start_us: int, end_us: int, outage_at_us: int) -> int:
    """One-second fragments from start to end but a daily outage: one real fragment written through
    the store (its chunk and init), then index rows sharing its bytes (the timeline reads rows only)."""
    store = FragmentStore(root, origin)
    store.write([Fragment(camera, "synth", 0, start_us, start_us + 1_000_000, 25, INIT, b"\x00" * 256, origin, 0)])
    store.close()
    db = store.db()
    template = db.execute(
        "SELECT chunk, offset, length, sha256, init FROM fragments WHERE camera=?", (camera,)
    ).fetchone()

    def rows():
        for n, at in enumerate(range(start_us + 1_000_000, end_us, 1_000_000), start=1):
            if (at - outage_at_us) % DAY_US < OUTAGE_US:
                continue
            yield (camera, "synth", n, at, at + 1_000_000, 25, template[2], *template, origin, 1, at)

    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO fragments (camera, run, seq, start_us, end_us, frames, bytes, chunk, offset, length, sha256,"
        " init, origin, keyframe_first, arrival_us) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        rows(),
    )
    db.execute("COMMIT")
    db.execute("UPDATE chunks SET start_us=?, end_us=? WHERE camera=?", (start_us, end_us, camera))
    (count,) = db.execute("SELECT COUNT(*) FROM fragments").fetchone()
    return count


def old_path(root: Path, camera: str, start_us: int, end_us: int) -> float:
    """Seconds for the coverage query as it was: every row read and merged."""
    store = FragmentStore(root, "bench")
    began = time.perf_counter()
    merged(store.fragments(camera, start_us, end_us))
    seconds = time.perf_counter() - began
    store.close()
    return seconds


def timed(client: httpx.Client, path: str, params: dict, queries: int) -> tuple[float, list[float]]:
    """The first query's seconds, and the next ones'."""
    times = []
    for _ in range(queries + 1):
        began = time.perf_counter()
        reply = client.get(path, params=params)
        times.append(time.perf_counter() - began)
        reply.raise_for_status()
    return times[0], times[1:]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=30, help="days of footage on the primary")
    parser.add_argument("--queries", type=int, default=50, help="warm queries of each kind")
    args = parser.parse_args()
    now = time.time_ns() // 1000
    start = now - args.days * DAY_US
    procs: dict[str, subprocess.Popen] = {}
    with tempfile.TemporaryDirectory(prefix="gapless-bench-timeline-") as tmp:
        work = Path(tmp)
        began = time.perf_counter()
        rows_a = in_child(synthesise, work / "rec-a", "lobby", "rec-a", start, now - 60_000_000, now - 3 * DAY_US)
        week = now - 7 * DAY_US
        rows_b = in_child(synthesise, work / "rec-b", "entrance", "rec-b", week, now - 60_000_000, now - DAY_US)
        print(f"synthesised {rows_a} + {rows_b} rows in {time.perf_counter() - began:.0f} s")
        baseline = [in_child(old_path, work / "rec-a", "lobby", start, now) for _ in range(3)]

        mgmt, ports, camera_port = free_port(), {"rec-a": free_port(), "rec-b": free_port()}, free_port()
        cameras = {"rec-a": "lobby", "rec-b": "entrance"}
        recorders = [
            {
                "id": name,
                "url": f"http://127.0.0.1:{port}",
                "token": TOKEN,
                "cameras": [{"id": cameras[name], "url": f"rtsp://127.0.0.1:{camera_port}/none"}],
            }
            for name, port in ports.items()
        ]
        pair = {"a": {"recorder": "rec-a", "camera": "lobby"}, "b": {"recorder": "rec-b", "camera": "entrance"}}
        config = {
            "management": {"listen": f"127.0.0.1:{mgmt}", "data": str(work / "mgmt"), "api_token": TOKEN},
            "recorders": recorders,
            "pairs": [pair],
        }
        (work / "mgmt.yaml").write_text(yaml.safe_dump(config))
        for name, port in ports.items():
            section = {
                "id": name,
                "listen": f"127.0.0.1:{port}",
                "storage": str(work / name),
                "api_token": TOKEN,
                "scrub_rate": 0,  # the synthesised rows share one fragment's bytes
            }
            link = {"url": f"http://127.0.0.1:{mgmt}", "token": TOKEN}
            (work / f"{name}.yaml").write_text(yaml.safe_dump({"recorder": section, "management": link}))
        headers = {"Authorization": f"Bearer {TOKEN}"}
        gateway = httpx.Client(base_url=f"http://127.0.0.1:{mgmt}", headers=headers, timeout=30)
        primary = httpx.Client(base_url=f"http://127.0.0.1:{ports['rec-a']}", headers=headers, timeout=30)
        try:
            spawn(work, procs, "mgmt", ["management", "--config", str(work / "mgmt.yaml")])
            wait(lambda: gateway.get("/api/v1/config").status_code == 200, 60, "management")
            for name in ports:
                spawn(work, procs, name, ["recorder", "--config", str(work / f"{name}.yaml")])
            wait(lambda: primary.get("/api/v1/health").status_code == 200, 120, "rec-a")
            wait(lambda: gateway.get("/api/v1/cameras").status_code == 200, 60, "gateway")
            span = {"start": f"{start / 1e6:.3f}", "end": f"{now / 1e6:.3f}"}
            cold_coverage, coverage = timed(primary, "/api/v1/cameras/lobby/coverage", span, args.queries)
            cold_timeline, timeline = timed(gateway, "/api/v1/cameras/lobby/timeline", span, args.queries)
            intervals = len(gateway.get("/api/v1/cameras/lobby/timeline", params=span).json()["intervals"])
        finally:
            gateway.close()
            primary.close()
            stop_all(procs)

    def ms(seconds: float) -> str:
        return f"{seconds * 1000:.1f}"

    header = ["query (30 days, one camera)", "first ms", "p50 ms", "p99 ms"]
    rows = [
        ["merged timeline of the pair (gateway: both recorders' coverage and finished backfill jobs, merged)",
         ms(cold_timeline),
         ms(statistics.median(timeline)), ms(percentile(timeline, 99))],
        ["plain coverage of the primary (recorder, hour summaries)", ms(cold_coverage),
         ms(statistics.median(coverage)), ms(percentile(coverage, 99))],
        ["baseline: every row read and merged (the old coverage path, in process)", ms(baseline[0]),
         ms(statistics.median(baseline)), ms(max(baseline))],
    ]  # fmt: skip
    markdown = show(
        f"Timeline over {args.days} days ({rows_a} + {rows_b} fragments, {intervals} intervals)", header, rows
    )
    write_section(
        "timeline",
        [
            "## Merged timeline over 30 days (`bench/timeline.py`)",
            "",
            f"A paired camera: {rows_a} one-second fragments on the primary ({args.days} days), {rows_b} on the"
            f" secondary (7 days), each with a ten-minute outage a day; the merged timeline has {intervals}"
            f" intervals. {args.queries} warm queries of each kind after the first. Goal: timeline ≤ 50 ms.",
            "",
            *markdown,
            "",
            "The first query after a start computes each ended hour's summary once (and keeps it in the index;"
            " a write into that hour drops it); later ones read 720 summaries and the live hour's rows. The"
            " coverage query ran first: the timeline's first query found the primary's summaries kept and"
            " computed the secondary's week.",
        ],
    )


if __name__ == "__main__":
    main()
