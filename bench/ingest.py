"""Ingest benchmark: one Gapless recorder vs one `ffmpeg -c copy -f segment` per camera.

Both record the same simulated cameras (720p, 2 Mb/s, 25 fps, GOP 2 s; H.264 and H.265 rows, and
rows with an audio track: AAC 16 kHz or G.711 PCMU) at the same time, so machine noise hits both
alike. Reports CPU seconds per camera-hour for each, their ratio, and whether the recorder stored
every frame (audit of SEI frame numbers) and every audio unit (audit: no audio gap). Writes
docs/benchmarks.md.

Usage: python bench/ingest.py [--cameras 4,8] [--codecs h264,h265,h264+aac,h264+pcmu] [--seconds 60]
(needs Debian's ffmpeg)
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml
from report import free_port, write_section  # bench/report.py (this script's directory is on sys.path)
from rich.console import Console
from rich.table import Table

from gapless.audit.audit import audit

TOKEN = "bench-token-0123456789abcdef"
GAPLESS = [sys.executable, "-m", "gapless.cli"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its reaped children, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(x) for x in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def wait_http(url: str, headers: dict | None = None, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, headers=headers or {}, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s")


def run_one(cameras: int, variant: str, seconds: float, work: Path) -> dict:
    """One row: `variant` is a video codec, optionally with audio (`h264+aac`, `h264+pcmu`)."""
    codec, _, audio = variant.partition("+")
    rtsp, control, api = free_port(), free_port(), free_port()
    sim = subprocess.Popen(
        [
            *GAPLESS,
            "camera-sim",
            "--cameras",
            str(cameras),
            "--port",
            str(rtsp),
            "--control-port",
            str(control),
            "--width",
            "1280",
            "--height",
            "720",
            "--fps",
            "25",
            "--gop",
            "50",
            "--bitrate",
            "2000",
            "--codec",
            codec,
            *(["--audio", audio] if audio else []),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    procs: list[subprocess.Popen] = [sim]
    try:
        wait_http(f"http://127.0.0.1:{control}/cameras")
        config = {
            "recorder": {"id": "bench", "listen": f"127.0.0.1:{api}", "storage": str(work / "rec"), "api_token": TOKEN},
            "cameras": [{"id": f"c{i}", "url": f"rtsp://127.0.0.1:{rtsp}/cam{i}"} for i in range(cameras)],
        }
        (work / "rec.yaml").write_text(yaml.safe_dump(config))
        recorder = subprocess.Popen(
            [*GAPLESS, "recorder", "--config", str(work / "rec.yaml")],
            stdout=subprocess.DEVNULL,
            stderr=(work / "rec.log").open("w"),
        )
        procs.append(recorder)
        ffmpegs = []
        for i in range(cameras):
            out = work / f"ff{i}"
            out.mkdir()
            ffmpegs.append(
                subprocess.Popen(
                    [
                        "ffmpeg",
                        "-nostdin",
                        "-loglevel",
                        "error",
                        "-rtsp_transport",
                        "tcp",
                        "-i",
                        f"rtsp://127.0.0.1:{rtsp}/cam{i}",
                        "-c",
                        "copy",
                        "-f",
                        "segment",
                        "-segment_time",
                        "60",
                        "-reset_timestamps",
                        "1",
                        # MP4 has no G.711 entry: ffmpeg's baseline writes those to Matroska
                        str(out / ("%05d.mkv" if audio == "pcmu" else "%05d.mp4")),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=(work / f"ff{i}.log").open("w"),
                )
            )
        procs.extend(ffmpegs)
        wait_http(f"http://127.0.0.1:{api}/api/v1/health", {"Authorization": f"Bearer {TOKEN}"})
        time.sleep(8)  # connect and first keyframe for everyone
        start_wall = time.time()
        rec_cpu0 = cpu_seconds(recorder.pid)
        ff_cpu0 = sum(cpu_seconds(p.pid) for p in ffmpegs)
        time.sleep(seconds)
        rec_cpu = cpu_seconds(recorder.pid) - rec_cpu0
        ff_cpu = sum(cpu_seconds(p.pid) for p in ffmpegs) - ff_cpu0
        end_wall = time.time()
        time.sleep(6)  # let the last GOP of the window reach storage
        lost = 0
        for i in range(cameras):
            report = audit(f"http://127.0.0.1:{api}", TOKEN, f"c{i}", str(start_wall), str(end_wall))
            lost += sum(b - a + 1 for a, b in report.missing) + report.gaps + len(report.audio_gaps)
            if audio and not report.audio_units:
                lost += 1  # the audio was not recorded at all
        camera_hours = cameras * (end_wall - start_wall) / 3600
        return {
            "cameras": cameras,
            "codec": variant,
            "recorder": rec_cpu / camera_hours,
            "ffmpeg": ff_cpu / camera_hours,
            "lost": lost,
        }
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cameras", default="2,6,12,24,48,96", help="comma-separated camera counts")
    parser.add_argument(
        "--codecs", default="h264,h265,h264+aac,h264+pcmu", help="comma-separated: h264, h265, h264+aac, h264+pcmu …"
    )
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    if shutil.which("ffmpeg") is None:
        raise SystemExit("ffmpeg not found: apt-get install --no-install-recommends ffmpeg")
    results = []
    for codec in args.codecs.split(","):
        for n in (int(x) for x in args.cameras.split(",")):
            with tempfile.TemporaryDirectory(prefix="gapless-bench-") as tmp:
                results.append(run_one(n, codec, args.seconds, Path(tmp)))
    table = Table(title=f"ingest: CPU seconds per camera-hour ({args.seconds:.0f} s per run, {os.cpu_count()} cores)")
    for col in ("codec", "cameras", "Gapless recorder", "ffmpeg -c copy (1/camera)", "ratio", "frames lost (Gapless)"):
        table.add_column(col, justify="right")
    rows = []
    for r in results:
        row = (
            r["codec"].upper().replace("H2", "H.2").replace("+", " + "),
            str(r["cameras"]),
            f"{r['recorder']:.1f}",
            f"{r['ffmpeg']:.1f}",
            f"{r['recorder'] / r['ffmpeg']:.2f}",
            str(r["lost"]),
        )
        table.add_row(*row)
        rows.append(row)
    Console().print(table)
    sustained = min(
        max((r["cameras"] for r in results if r["lost"] == 0 and r["codec"] == codec), default=0)
        for codec in args.codecs.split(",")
    )
    limit = (
        " (the largest count this run tried: the limit was not reached)"
        if sustained == max(r["cameras"] for r in results)
        else ""
    )
    md = [
        "## Ingest (`bench/ingest.py`)",
        "",
        f"Simulated 1280x720, 2 Mb/s, 25 fps, GOP 2 s cameras; {args.seconds:.0f} s measured per row; "
        "the Gapless recorder and one `ffmpeg -rtsp_transport tcp -c copy -f segment` per camera record "
        "the same cameras at the same time. CPU from /proc (user+system). Goal: ratio ≤ 0.5. Audio rows add "
        "AAC 16 kHz (RFC 3640) or G.711 PCMU 8 kHz beside the video; there, frames lost also counts audio "
        "gaps. ffmpeg writes the PCMU rows to Matroska (MP4 has no G.711 entry).",
        "",
        "| codec | cameras | Gapless recorder | ffmpeg -c copy | ratio | frames lost (Gapless) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *[f"| {' | '.join(row)} |" for row in rows],
        "",
        f"Largest camera count measured with zero lost frames in every codec: {sustained}{limit}. The simulator"
        " and one ffmpeg per camera run on the same machine meanwhile.",
        "",
    ]
    write_section("ingest", md)


if __name__ == "__main__":
    main()
