"""Live through a camera's own restart: how long does a live viewer wait when the camera restarts
its stream's timestamps?

gst-rtsp-server (tests/gst_camera.py, Debian's GStreamer) restarts a shared stream, and its RTP
timestamps, whenever another client PLAYs; an encoder or restreamer that restarts does the same. One
recorder records it. Two clients watch: a raw RTSP client on the camera itself, and a viewer of the
recorder's live protocol (`live.ws`). Every `--every` seconds another client PLAYs. Side by side
per restart: the camera's own pause (the raw client's wait between the last frame of the old
timeline and the first of the new) and the viewer's stall (its longest wait between two frames
around the restart). The difference is what the recorder adds: the wait to time the new timeline
(docs/design/storage.md, "Where a segment's base comes from").

Usage: python bench/camera_restart.py [--restarts 8] [--every 15]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
import yaml
from failover import TOKEN, spawn, stop_all, wait  # bench/failover.py
from live import FramesViewer  # bench/live.py
from report import ROOT, free_port, show, write_section

from gapless.ingest.rtp import InterleavedRtp
from gapless.ingest.rtsp import RtspClient

SYSTEM_PYTHON = "/usr/bin/python3"  # GStreamer's Python bindings come from Debian
CAMERA_SCRIPT = ROOT / "tests" / "gst_camera.py"


class RawClient(threading.Thread):
    """An RTSP client on the camera: (arrival of the old timeline's last frame, of the new one's
    first) at each restart of the RTP timestamps."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.pauses: list[tuple[float, float]] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        client = RtspClient(self.url, "gapless-bench")
        info = client.open()
        assert client.sock is not None
        rtp = InterleavedRtp(info.rtp_channel, info.rtcp_channel)
        last: tuple[int, float] | None = None
        try:
            while not self.stop_event.is_set():
                data = client.sock.recv(65536)
                if not data:
                    return
                arrived = time.time()
                for unit in rtp.feed(data):
                    if last is not None and unit.keyframe and unit.rtp_ts <= last[0]:
                        self.pauses.append((last[1], arrived))
                    last = unit.rtp_ts, arrived
        finally:
            client.close()

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=10)


def play_once(url: str) -> float:
    """Another client PLAYs (the camera restarts its stream), then leaves. Returns when it PLAYed."""
    client = RtspClient(url, "gapless-bench-trigger")
    client.open()
    played = time.time()
    time.sleep(1.0)
    client.close()
    return played


def longest_wait(arrivals: list[float], start: float, end: float) -> float:
    inside = [t for t in arrivals if start <= t <= end]
    return max((b - a for a, b in itertools.pairwise(inside)), default=float("nan"))


def bench(work: Path, restarts: int, every: float) -> list[tuple[float, float]]:
    procs: dict[str, subprocess.Popen] = {}
    camera_port, port = free_port(), free_port()
    log = (work / "camera.log").open("ab")
    procs["camera"] = subprocess.Popen(
        [SYSTEM_PYTHON, str(CAMERA_SCRIPT), str(camera_port)], stdout=log, stderr=subprocess.STDOUT
    )
    log.close()
    url = f"rtsp://127.0.0.1:{camera_port}/cam"
    config = {
        "recorder": {"id": "rec", "listen": f"127.0.0.1:{port}", "storage": str(work / "rec"), "api_token": TOKEN},
        "cameras": [{"id": "cam", "url": url}],
    }
    (work / "rec.yaml").write_text(yaml.safe_dump(config))
    raw, viewer = RawClient(url), FramesViewer(f"http://127.0.0.1:{port}", "cam")
    results = []
    try:
        wait(lambda: "ready" in (work / "camera.log").read_text(), 30, "the GStreamer camera")
        spawn(work, procs, "rec", ["recorder", "--config", str(work / "rec.yaml")])
        api = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {TOKEN}"})
        wait(lambda: api.get("/api/v1/health").json()["cameras"]["cam"]["fragments"] >= 2, 90, "recording")
        raw.start()  # its PLAY restarts the stream too: let the recorder's time settle again
        viewer.start()
        time.sleep(every)
        for _ in range(restarts):
            played = play_once(url)
            time.sleep(every)
            pauses = [b - a for a, b in raw.pauses if b >= played - 0.5]
            results.append(
                (pauses[0] if pauses else float("nan"), longest_wait(viewer.arrivals, played - 1, played + every - 1))
            )
        api.close()
    finally:
        viewer.stop()
        raw.stop()
        stop_all(procs)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--restarts", type=int, default=8)
    parser.add_argument("--every", type=float, default=15.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gapless-bench-") as tmp:
        results = bench(Path(tmp), args.restarts, args.every)
    rows = [
        [str(i + 1), f"{camera:.2f}", f"{live:.2f}", f"{live - camera:.2f}"] for i, (camera, live) in enumerate(results)
    ]
    cameras, lives = [c for c, _ in results], [v for _, v in results]
    rows.append(["median", f"{statistics.median(cameras):.2f}", f"{statistics.median(lives):.2f}", ""])
    rows.append(["max", f"{max(cameras):.2f}", f"{max(lives):.2f}", ""])
    table = show(
        "Live through a camera's timestamp restart (s)",
        ["restart", "camera's own pause", "live.ws viewer's stall", "added by the recorder"],
        rows,
    )
    write_section(
        "camera-restart",
        [
            "## Live through a camera's timestamp restart",
            "",
            f"`python bench/camera_restart.py --restarts {args.restarts} --every {args.every:g}`:"
            " gst-rtsp-server restarts its shared stream at another client's PLAY; the camera's own pause"
            " (a raw RTSP client on it) beside the stall of a `live.ws` viewer on the recorder. Seconds.",
            "",
            *table,
        ],
    )


if __name__ == "__main__":
    main()
