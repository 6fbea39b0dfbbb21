"""Per-camera re-route benchmark: a paired camera's feed is lost on its primary; how fast does the
gateway serve that camera from the secondary?

Two independent recorders record the same N simulated cameras (GOP 1 s), paired camera by camera
under one management server (whose gateway routes them). Each round blocks one camera's feed on
the primary only (the simulator refuses the primary's sessions for that camera) and measures, from
the block:
- block → route: until the gateway lists the camera on the secondary;
- block → live: until the gateway serves a live segment of that camera holding frames captured
  after the block.
Each round takes another camera, so the others keep recording on the primary meanwhile. Beside it,
in the same run, the symmetrical cluster's failover (bench/failover.py's kill → live, lease TTL 1 s,
embedded coordinator) on the same machine: the baseline a per-camera re-route should match.

Usage: python bench/reroute.py [--cameras 100] [--rounds 20] [--cluster-kills 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import yaml
from failover import Run as ClusterRun  # bench/failover.py
from failover import live_has_frames_after, percentile, spawn, stop_all, wait
from report import free_port, show, write_section

TOKEN = "bench-token-0123456789abcdef"
BLOCK_S = 30
#: Frames this long after a block are beyond anything the cut-off primary stored.
CUT_SLACK_US = 300_000


class Pairs:
    def __init__(self, work: Path, cameras: int) -> None:
        self.work, self.cameras = work, cameras
        self.rtsp, self.control, self.mgmt = free_port(), free_port(), free_port()
        self.ports = {"rec-a": free_port(), "rec-b": free_port()}
        self.procs: dict[str, subprocess.Popen] = {}
        names = {"rec-a": "a", "rec-b": "b"}
        recorders = []
        for recorder, port in self.ports.items():
            cams = [
                {"id": f"{names[recorder]}{n}", "url": f"rtsp://127.0.0.1:{self.rtsp}/cam{n}"} for n in range(cameras)
            ]
            recorders.append({"id": recorder, "url": f"http://127.0.0.1:{port}", "token": TOKEN, "cameras": cams})
        pairs = [
            {"a": {"recorder": "rec-a", "camera": f"a{n}"}, "b": {"recorder": "rec-b", "camera": f"b{n}"}}
            for n in range(cameras)
        ]
        config = {
            "management": {"listen": f"127.0.0.1:{self.mgmt}", "data": str(work / "mgmt"), "api_token": TOKEN},
            "recorders": recorders,
            "pairs": pairs,
        }
        (work / "mgmt.yaml").write_text(yaml.safe_dump(config))
        for recorder, port in self.ports.items():
            section = {
                "id": recorder,
                "listen": f"127.0.0.1:{port}",
                "storage": str(work / recorder),
                "api_token": TOKEN,
            }
            link = {"url": f"http://127.0.0.1:{self.mgmt}", "token": TOKEN}
            (work / f"{recorder}.yaml").write_text(yaml.safe_dump({"recorder": section, "management": link}))
        self.gateway = httpx.Client(
            base_url=f"http://127.0.0.1:{self.mgmt}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=3
        )

    def spawn(self, name: str, args: list[str]) -> None:
        spawn(self.work, self.procs, name, args)

    def start(self) -> None:
        self.spawn(
            "sim",
            [
                *("camera-sim", "--cameras", str(self.cameras), "--port", str(self.rtsp)),
                *("--control-port", str(self.control), "--width", "320", "--height", "180"),
                *("--gop", "25", "--bitrate", "300"),
            ],
        )
        wait(lambda: httpx.get(f"http://127.0.0.1:{self.control}/cameras").status_code == 200, 120, "camera-sim")
        self.spawn("mgmt", ["management", "--config", str(self.work / "mgmt.yaml")])
        wait(lambda: self.gateway.get("/api/v1/config").status_code == 200, 60, "management")
        for recorder in self.ports:
            self.spawn(recorder, ["recorder", "--config", str(self.work / f"{recorder}.yaml")])
        wait(lambda: all(r == "rec-a" for r in self.routed().values()) and self.routed(), 60, "routing to rec-a")
        for n in range(self.cameras):
            wait(lambda n=n: self.fresh_live(f"a{n}", time.time_ns() // 1000 - 3_000_000), 120, f"live a{n}")

        def settled() -> bool:  # every camera on the primary, twice 3 s apart (first fragments settle)
            if any(r != "rec-a" for r in self.routed().values()):
                return False
            time.sleep(3)
            return all(r == "rec-a" for r in self.routed().values())

        wait(settled, 120, "every camera routed to the primary, steadily")

    def routed(self) -> dict[str, str]:
        return {c["id"]: c["holder"] for c in self.gateway.get("/api/v1/cameras").json()["cameras"]}

    def fresh_live(self, camera: str, after_us: int) -> bool:
        """bench/failover.py's criterion. The primary, cut off at a block, keeps the GOP in progress
        up to the cut: rounds ask for frames CUT_SLACK_US after the block, which only the
        secondary has."""
        return live_has_frames_after(self.gateway, camera, after_us)

    def reroute_round(self, n: int) -> tuple[float, float, int]:
        camera = f"a{n}"
        blocked_at, blocked_us = time.monotonic(), time.time_ns() // 1000
        params = {"client": "(rec-a)", "seconds": BLOCK_S}
        httpx.post(f"http://127.0.0.1:{self.control}/cameras/cam{n}/block", params=params).raise_for_status()
        to_route = to_live = None
        deadline = time.monotonic() + 30
        while (to_route is None or to_live is None) and time.monotonic() < deadline:
            try:
                if to_route is None and self.routed().get(camera) == "rec-b":
                    to_route = time.monotonic() - blocked_at
                if to_live is None and self.fresh_live(camera, blocked_us + CUT_SLACK_US):
                    to_live = time.monotonic() - blocked_at
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
        if to_route is None or to_live is None:
            raise SystemExit(f"camera {camera} was not re-routed within 30 s")
        others = {c: r for c, r in self.routed().items() if c != camera and int(c[1:]) > n}
        return to_route, to_live, sum(r != "rec-a" for r in others.values())  # moved along: should be none

    def stop(self) -> None:
        self.gateway.close()
        stop_all(self.procs)


def summary(values: list[float]) -> tuple[str, str, str]:
    return f"{statistics.median(values):.2f}", f"{percentile(values, 99):.2f}", f"{max(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cameras", type=int, default=100, help="paired cameras recording")
    parser.add_argument("--rounds", type=int, default=20, help="re-routes (one camera each; at most --cameras)")
    parser.add_argument("--cluster-kills", type=int, default=5, help="cluster failovers beside them")
    args = parser.parse_args()
    rounds = min(args.rounds, args.cameras)
    routes, lives, cluster_lives = [], [], []
    moved_along = 0
    with tempfile.TemporaryDirectory(prefix="gapless-bench-reroute-") as tmp:
        (Path(tmp) / "pairs").mkdir()
        (Path(tmp) / "cluster").mkdir()
        pairs = Pairs(Path(tmp) / "pairs", args.cameras)
        cluster = ClusterRun(Path(tmp) / "cluster", "embedded", 1.0, [])
        try:
            pairs.start()
            cluster.start()
            for n in range(rounds):
                to_route, to_live, moved = pairs.reroute_round(n)
                moved_along += moved
                routes.append(to_route)
                lives.append(to_live)
                if n < args.cluster_kills:  # interleaved: both measured on the same machine state
                    cluster_lives.append(cluster.kill_round()[1])
        finally:
            pairs.stop()
            cluster.stop()
    header = ["what", "rounds", "p50 s", "p99 s", "max s"]
    rows = [
        ["pair: feed lost on the primary → gateway routes the camera to the secondary", str(rounds), *summary(routes)],
        [
            "pair: feed lost on the primary → frames from 0.3 s after it, live from the secondary",
            str(rounds),
            *summary(lives),
        ],
        ["cluster (TTL 1 s): holder SIGKILLed → fresh live segment", str(len(cluster_lives)), *summary(cluster_lives)],
    ]
    markdown = show(f"Per-camera re-route, {args.cameras} paired cameras", header, rows)
    write_section(
        "reroute",
        [
            "## Per-camera re-route (`bench/reroute.py`)",
            "",
            f"{args.cameras} paired cameras (320x180, GOP 1 s) on two independent recorders under one management"
            " server; each round blocks one camera's feed on the primary only. Beside it, in the same run, the"
            " symmetrical cluster's failover (lease TTL 1 s, embedded coordinator). Goal: re-route p99 ≤ 2 s.",
            "",
            *markdown,
            "",
            f"Cameras not blocked yet that were routed away from the primary along with a blocked one: {moved_along}.",
        ],
    )
    print(f"cameras moved along with a blocked one: {moved_along}")


if __name__ == "__main__":
    main()
