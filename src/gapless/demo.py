"""`gapless demo`: simulated cameras and two partner recorders on loopback, URLs printed.

Both recorders record every camera; rec-a names rec-b as its partner, so whatever rec-a misses
(block its feed with the printed fault command) is backfilled from rec-b.

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

RTSP_PORT, CONTROL_PORT = 8554, 8555
RECORDER_PORTS = {"rec-a": 7101, "rec-b": 7102}


def _recorder_config(data: Path, name: str, cameras: int, token: str, partners: list[dict]) -> Path:
    config = {
        "recorder": {
            "id": name,
            "listen": f"127.0.0.1:{RECORDER_PORTS[name]}",
            "storage": str(data / name),
            "api_token": token,
            "retention": {"max_age": "1d", "max_bytes": "2GB"},
        },
        "partners": partners,
        "backfill": {"scan_interval": "15s"},
        "cameras": [{"id": f"camera{i}", "url": f"rtsp://127.0.0.1:{RTSP_PORT}/cam{i}"} for i in range(cameras)],
    }
    path = data / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def run_demo(data: Path, cameras: int) -> None:
    data.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    partner = {"id": "rec-b", "url": f"http://127.0.0.1:{RECORDER_PORTS['rec-b']}", "token": token}
    configs = [
        _recorder_config(data, "rec-a", cameras, token, [partner]),
        _recorder_config(data, "rec-b", cameras, token, []),
    ]
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
    recorders: list[subprocess.Popen] = []
    try:
        _wait(f"http://127.0.0.1:{CONTROL_PORT}/cameras", {}, "camera-sim")
        recorders = [subprocess.Popen([*gapless, "recorder", "--config", str(path)]) for path in configs]
        base, partner_base = (f"http://127.0.0.1:{port}" for port in RECORDER_PORTS.values())
        for url in (base, partner_base):
            _wait(f"{url}/api/v1/health", {"Authorization": f"Bearer {token}"}, "recorder")
        start = int(time.time())
        print(
            f"""
Gapless demo is running ({cameras} simulated cameras; recorders rec-a on {base} and its partner
rec-b on {partner_base} both record them all). Ctrl-C stops it.
  health:   curl -H 'Authorization: Bearer {token}' {base}/api/v1/health
  live:     ffplay '{base}/api/v1/cameras/camera0/live.m3u8?token={token}'
  camera:   ffplay rtsp://127.0.0.1:{RTSP_PORT}/cam0
  export:   curl -o camera0.mp4 '{base}/api/v1/cameras/camera0/export.mp4?start={start}&end={start + 60}&token={token}'
            (after a minute of recording; open camera0.mp4 with any player)
  audit:    gapless audit --recorder {base} --token {token} --camera camera0 --start {start} --end {start + 60}
  faults:   curl -X POST http://127.0.0.1:{CONTROL_PORT}/cameras/cam0/stop   (and /start, /drop, /stall?seconds=5)
  backfill: take camera0's feed from rec-a only, for 20 s; rec-a then copies what it missed from rec-b:
            curl -X POST 'http://127.0.0.1:{CONTROL_PORT}/cameras/cam0/block?client=(rec-a)&seconds=20'
            curl -H 'Authorization: Bearer {token}' {base}/api/v1/backfill
            gapless audit --recorder {base} --compare {partner_base} --token {token} --camera camera0 \\
              --start {start} --end {start + 120}     (after two minutes: nothing that rec-b has is missing)
""",
            flush=True,
        )
        while sim.poll() is None and all(proc.poll() is None for proc in recorders):
            time.sleep(1)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        for proc in (*recorders, sim):
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
