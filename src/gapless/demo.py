"""`gapless demo`: simulated cameras and one recorder on loopback, URLs printed.

Runs the real processes (`gapless camera-sim`, `gapless recorder`) as children and stops them,
by PID, on Ctrl-C.
"""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

RTSP_PORT, CONTROL_PORT, RECORDER_PORT = 8554, 8555, 7101


def run_demo(data: Path, cameras: int) -> None:
    data.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    config = {
        "recorder": {
            "id": "rec-a",
            "listen": f"127.0.0.1:{RECORDER_PORT}",
            "storage": str(data / "rec-a"),
            "api_token": token,
            "retention": {"max_age": "1d", "max_bytes": "2GB"},
        },
        "cameras": [{"id": f"camera{i}", "url": f"rtsp://127.0.0.1:{RTSP_PORT}/cam{i}"} for i in range(cameras)],
    }
    config_path = data / "rec-a.yaml"
    config_path.write_text(yaml.safe_dump(config))
    config_path.chmod(0o600)
    gapless = [sys.executable, "-m", "gapless.cli"]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # run the cleanup below on SIGTERM too
    sim = subprocess.Popen(
        [
            *gapless,
            "camera-sim",
            "--cameras",
            str(cameras),
            "--port",
            str(RTSP_PORT),
            "--control-port",
            str(CONTROL_PORT),
        ]
    )
    recorder = None
    try:
        _wait(f"http://127.0.0.1:{CONTROL_PORT}/cameras", {}, "camera-sim")
        recorder = subprocess.Popen([*gapless, "recorder", "--config", str(config_path)])
        base = f"http://127.0.0.1:{RECORDER_PORT}"
        _wait(f"{base}/api/v1/health", {"Authorization": f"Bearer {token}"}, "recorder")
        start = int(time.time())
        print(
            f"""
Gapless demo is running ({cameras} simulated cameras, one recorder). Ctrl-C stops it.
  health:   curl -H 'Authorization: Bearer {token}' {base}/api/v1/health
  live:     ffplay '{base}/api/v1/cameras/camera0/live.m3u8?token={token}'
  camera:   ffplay rtsp://127.0.0.1:{RTSP_PORT}/cam0
  export:   curl -o camera0.mp4 '{base}/api/v1/cameras/camera0/export.mp4?start={start}&end={start + 60}&token={token}'
            (after a minute of recording; open camera0.mp4 with any player)
  audit:    gapless audit --recorder {base} --token {token} --camera camera0 --start {start} --end {start + 60}
  faults:   curl -X POST http://127.0.0.1:{CONTROL_PORT}/cameras/cam0/stop   (and /start, /drop, /stall?seconds=5)
""",
            flush=True,
        )
        while sim.poll() is None and recorder.poll() is None:
            time.sleep(1)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        for proc in (recorder, sim):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)


def _wait(url: str, headers: dict, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, headers=headers, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"error: {what} did not start within {timeout:.0f} s")
