"""Backfill benchmark: Gapless backfill vs a raw HTTP copy of the same bytes, side by side.

A source recorder's archive is synthesised (a real 1280x720, 4 Mb/s, 25 fps, GOP 2 s H.264 loop cut
into fragments, written through the fragment store), then a target recorder backfills it through
the API. The baseline, in the same run, downloads the source's chunk files over HTTP into a
directory and fsyncs them: the physical limit of this machine's loopback and disk. Reports MB/s,
multiple of real time and the ratio to the raw copy. Writes its section of docs/benchmarks.md.

Usage: python bench/backfill.py [--minutes 60] [--many 16] [--many-minutes 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml
from aiohttp import web
from report import free_port, write_section  # bench/report.py (this script's directory is on sys.path)
from rich.console import Console
from rich.table import Table

from gapless.media.fmp4 import Sample, build_fragment, build_init_segment, us_to_ticks
from gapless.media.h264 import parse_sps, to_avcc
from gapless.sim.encoder import Profile, encode_loop
from gapless.storage.store import Fragment, FragmentStore, InitSegment

TOKEN = "bench-token-0123456789abcdef"
GAPLESS = [sys.executable, "-m", "gapless.cli"]
PROFILE = Profile(1280, 720, 25, 50, 4_000_000)
CONCURRENCY = 4


def synthesise(root: Path, cameras: list[str], seconds: int, start_us: int) -> int:
    """Write `seconds` of footage per camera into a fragment store; returns the bytes written."""
    loop = encode_loop(PROFILE)
    info = parse_sps(loop.sps)
    init = InitSegment.make(info.codec_string, info.width, info.height, build_init_segment(loop.sps, loop.pps, info))
    frame_us = 1_000_000 // PROFILE.fps
    gop = PROFILE.gop
    store = FragmentStore(root, "rec-b")
    total = 0
    for camera in cameras:
        batch = []
        for index in range(seconds * PROFILE.fps // gop):
            first = index * gop
            samples = []
            for n in range(first, first + gop):
                at = loop.frames[n % len(loop.frames)]
                dts = us_to_ticks(start_us + n * frame_us)
                samples.append(Sample(to_avcc(at), dts, us_to_ticks(frame_us), 0, loop.keyframes[n % len(loop.frames)]))
            payload = build_fragment(index + 1, samples)
            begin = start_us + first * frame_us
            batch.append(
                Fragment(camera, "bench-run", index + 1, begin, begin + gop * frame_us, gop, init, payload, "rec-b", 0)
            )
            total += len(payload)
            if len(batch) == 64:
                store.write(batch)
                batch = []
        if batch:
            store.write(batch)
    store.close()
    return total


def recorder(work: Path, name: str, cameras: list[str], extra: dict) -> tuple[subprocess.Popen, str]:
    port = free_port()
    config = {
        "recorder": {"id": name, "listen": f"127.0.0.1:{port}", "storage": str(work / name), "api_token": TOKEN},
        # Cameras nobody serves: the recorders only exercise their archives here.
        "cameras": [{"id": c, "url": "rtsp://127.0.0.1:1/none"} for c in cameras],
        **extra,
    }
    (work / f"{name}.yaml").write_text(yaml.safe_dump(config))
    log = (work / f"{name}.log").open("ab")
    proc = subprocess.Popen([*GAPLESS, "recorder", "--config", str(work / f"{name}.yaml")], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/api/v1/health", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{name} did not start; see {work / name}.log")


def run_backfill(target: str, cameras: list[str], start_us: int, end_us: int) -> float:
    """Seconds from queueing the jobs to the last one finishing."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=target, headers=headers, timeout=60) as api:
        began = time.monotonic()
        ids = []
        for camera in cameras:
            body = {"camera": camera, "source": "rec-b", "start": f"{start_us / 1e6}", "end": f"{end_us / 1e6}"}
            response = api.post("/api/v1/backfill", json=body)
            response.raise_for_status()
            ids.append(response.json()["id"])
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline:
            jobs = [api.get(f"/api/v1/backfill/{i}").json() for i in ids]
            if all(j["state"] in ("done", "partial") for j in jobs):
                elapsed = time.monotonic() - began
                if any(j["state"] != "done" or j["refused"] for j in jobs):
                    raise RuntimeError(f"backfill did not complete cleanly: {jobs}")
                return elapsed
            time.sleep(0.1)
    raise RuntimeError("backfill did not finish within an hour")


async def raw_copy(source_root: Path, into: Path) -> float:
    """Serve the source's chunk files over HTTP and download them (4 at once), fsyncing each file."""
    files = sorted(source_root.glob("cameras/*/*.glc"))
    app = web.Application()
    app.router.add_static("/chunks/", source_root / "cameras")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    into.mkdir(parents=True, exist_ok=True)
    limit = asyncio.Semaphore(CONCURRENCY)

    async def fetch(client: httpx.AsyncClient, file: Path) -> None:
        async with limit, client.stream("GET", f"/chunks/{file.parent.name}/{file.name}") as response:
            response.raise_for_status()
            target = into / f"{file.parent.name}-{file.name}"
            with target.open("wb") as fh:
                async for block in response.aiter_bytes(1 << 20):
                    fh.write(block)
                fh.flush()
                os.fsync(fh.fileno())

    began = time.monotonic()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        await asyncio.gather(*(fetch(client, f) for f in files))
    elapsed = time.monotonic() - began
    await runner.cleanup()
    return elapsed


def measure(work: Path, label: str, cameras: list[str], seconds: int) -> dict:
    start_us = (int(time.time()) - 2 * 86400) * 1_000_000  # in the past, beyond any automatic scan
    end_us = start_us + seconds * 1_000_000
    source_root = work / "rec-b"
    size = synthesise(source_root, cameras, seconds, start_us)
    raw_s = asyncio.run(raw_copy(source_root, work / "raw"))
    source, source_url = recorder(work, "rec-b", cameras, {})
    partners = {"partners": [{"id": "rec-b", "url": source_url, "token": TOKEN}]}
    target, target_url = recorder(work, "rec-a", cameras, {**partners, "backfill": {"concurrency": CONCURRENCY}})
    try:
        ours_s = run_backfill(target_url, cameras, start_us, end_us)
    finally:
        for proc in (target, source):
            proc.terminate()
            proc.wait(timeout=60)
    footage_s = seconds * len(cameras)
    return {
        "label": label,
        "bytes": size,
        "ours_mb_s": size / ours_s / 1e6,
        "raw_mb_s": size / raw_s / 1e6,
        "ours_realtime": footage_s / ours_s,
        "ratio": raw_s / ours_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60, help="footage of the one-camera row")
    parser.add_argument("--many", type=int, default=16, help="cameras of the many-camera row")
    parser.add_argument("--many-minutes", type=float, default=10, help="footage per camera of that row")
    args = parser.parse_args()
    rows = []
    cases = [
        (f"1 camera, {args.minutes:g} min", ["cam0"], int(args.minutes * 60)),
        (
            f"{args.many} cameras at once, {args.many_minutes:g} min each",
            [f"cam{i}" for i in range(args.many)],
            int(args.many_minutes * 60),
        ),
    ]
    for label, cameras, seconds in cases:
        with tempfile.TemporaryDirectory(prefix="gapless-bench-") as tmp:
            rows.append(measure(Path(tmp), label, cameras, seconds))
    table = Table(title="backfill vs raw HTTP copy (loopback)")
    for col in ("case", "GB", "Gapless MB/s", "raw MB/s", "x real time", "ratio"):
        table.add_column(col, justify="right")
    md_rows = []
    for r in rows:
        cells = (
            r["label"],
            f"{r['bytes'] / 1e9:.2f}",
            f"{r['ours_mb_s']:.0f}",
            f"{r['raw_mb_s']:.0f}",
            f"{r['ours_realtime']:.0f}",
            f"{r['ratio']:.2f}",
        )
        table.add_row(*cells)
        md_rows.append(f"| {' | '.join(cells)} |")
    Console().print(table)
    write_section(
        "backfill",
        [
            "## Backfill (`bench/backfill.py`)",
            "",
            "A synthesised archive of 1280x720, 4 Mb/s, 25 fps, GOP 2 s footage on a source recorder; a target "
            "recorder backfills it through the API (checksum verified, trimmed against its own archive, fsynced, "
            f"indexed; {CONCURRENCY} jobs at once). In the same run the baseline downloads the source's chunk files "
            f"over HTTP ({CONCURRENCY} at once) and fsyncs them. Loopback, one machine, 2 cores. Goal: ratio ≥ 0.8.",
            "",
            "| case | GB | Gapless MB/s | raw HTTP copy MB/s | Gapless x real time | ratio |",
            "| ---: | ---: | ---: | ---: | ---: | ---: |",
            *md_rows,
            "",
        ],
    )


if __name__ == "__main__":
    main()
