"""`make demo` as a new user runs it (`gapless demo`, on ports of this test's own): the console's
one-time login link printed first (it signs the console's admin user in once), the cluster's camera
and the pair's camera listed and playing live through it, the pair's merged timeline answered, and
every process it started gone after SIGTERM."""

from __future__ import annotations

import re
import socket
import time

import httpx
from conftest import GAPLESS, Proc, free_ports, wait_for


def _free(port: int) -> bool:
    """Nothing listens there (connections the servers closed may linger in TIME_WAIT: ignored)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_the_demo_runs_a_cluster_and_a_pair_and_stops_everything(tmp_path):
    base = free_ports(7)
    log = tmp_path / "demo.log"
    demo = Proc([*GAPLESS, "demo", "--data", str(tmp_path / "demo"), "--cameras", "1", "--port-base", str(base)], log)
    demo.start()
    try:
        wait_for(lambda: "Gapless demo is running" in log.read_text(), 180, "the demo to start")
        text = log.read_text()
        banner = text[text.index("Gapless demo is running") :]
        first = banner.splitlines()[0]  # the console's login link first
        found = re.search(rf"Console: http://127\.0\.0\.1:{base}/\?token=([\w-]+)$", first)
        assert found, banner
        viewer = httpx.Client(base_url=f"http://127.0.0.1:{base}", timeout=10)  # as the browser opening the link
        assert viewer.post("/api/v1/session", json={"token": found[1]}).status_code == 200
        assert viewer.get("/api/v1/whoami").json()["role"] == "admin"
        again = httpx.post(f"http://127.0.0.1:{base}/api/v1/session", json={"token": found[1]}, timeout=10)
        assert again.status_code == 401  # the link signs in once

        def routed() -> dict[str, str]:
            return {c["id"]: c["holder"] for c in viewer.get("/api/v1/cameras").json()["cameras"]}

        wait_for(lambda: routed() == {"camera0": "rec-a", "entrance": "rec-c"}, 120, "both cameras routed")
        for camera in ("camera0", "entrance"):

            def plays(camera: str = camera) -> bool:
                live = viewer.get(f"/api/v1/cameras/{camera}/live.m3u8")
                uris = [line for line in live.text.splitlines() if line and not line.startswith("#")]
                return live.status_code == 200 and bool(uris) and viewer.get(uris[-1]).status_code == 200

            wait_for(plays, 90, f"{camera} to play live")
        hour = {"start": f"{time.time() - 3600:.0f}", "end": f"{time.time() + 60:.0f}"}
        timeline = viewer.get("/api/v1/cameras/entrance/timeline", params=hour)
        assert timeline.status_code == 200 and timeline.json()["intervals"], timeline.text
        viewer.close()
    finally:
        demo.stop()
    assert demo.popen is not None and demo.popen.returncode == 0, log.read_text()[-3000:]
    wait_for(lambda: all(_free(port) for port in range(base, base + 7)), 30, "every demo process to be gone")
