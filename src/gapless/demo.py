"""`gapless demo`: simulated cameras, a management server (with its gateway and the embedded
coordinator) and a symmetrical cluster of two recorders on loopback, URLs printed.

Runs the real processes (`gapless camera-sim`, `gapless management`, `gapless recorder`) as
children and stops them, by PID, on Ctrl-C. A recorder that dies (try `kill -9` on the holder) is
started again 10 s later, so the token's round trip can be watched: failover, backfill, failback.
"""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

RTSP_PORT, CONTROL_PORT, MANAGEMENT_PORT = 8554, 8555, 7000
RECORDER_PORTS = {"rec-a": 7101, "rec-b": 7102}
RESTART_AFTER_S = 10


def _write(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


@dataclass(frozen=True)
class Secrets:
    """Least privilege in the demo too: an admin token, each recorder's API token and its own
    management credential, and a viewer's token for the player."""

    admin: str
    viewer: str
    recorder_api: dict[str, str]
    recorder_credential: dict[str, str]

    @classmethod
    def new(cls) -> Secrets:
        def token() -> str:
            return secrets.token_urlsafe(24)

        return cls(token(), token(), {n: token() for n in RECORDER_PORTS}, {n: token() for n in RECORDER_PORTS})


def _configs(data: Path, cameras: int, keys: Secrets) -> tuple[Path, dict[str, Path]]:
    management = _write(
        data / "management.yaml",
        {
            "management": {
                "listen": f"127.0.0.1:{MANAGEMENT_PORT}",
                "data": str(data / "mgmt"),
                "api_token": keys.admin,
            },
            "coordinator": {"backend": "embedded"},
            "recorders": [
                {"id": name, "url": f"http://127.0.0.1:{port}", "token": keys.recorder_api[name]}
                for name, port in RECORDER_PORTS.items()
            ],
            "clusters": [
                {
                    "id": "main",
                    "members": list(RECORDER_PORTS),
                    "lease_ttl": "1s",
                    "failback": "auto",
                    "retention": {"max_age": "1d", "max_bytes": "2GB"},
                    "backfill": {"scan_interval": "15s"},
                    "cameras": [
                        {"id": f"camera{i}", "url": f"rtsp://127.0.0.1:{RTSP_PORT}/cam{i}"} for i in range(cameras)
                    ],
                }
            ],
            "credentials": [
                *(
                    {"id": f"{name}-key", "role": "recorder", "recorder": name, "token": token}
                    for name, token in keys.recorder_credential.items()
                ),
                {"id": "operators", "role": "viewer", "token": keys.viewer},
            ],
        },
    )
    recorders = {}
    for name, port in RECORDER_PORTS.items():
        token_file = data / f"{name}.credential"
        token_file.write_text(keys.recorder_credential[name] + "\n")
        token_file.chmod(0o600)
        recorders[name] = _write(
            data / f"{name}.yaml",
            {
                "recorder": {
                    "id": name,
                    "listen": f"127.0.0.1:{port}",
                    "storage": str(data / name),
                    "api_token": keys.recorder_api[name],
                },
                "management": {"url": f"http://127.0.0.1:{MANAGEMENT_PORT}", "token_file": str(token_file)},
            },
        )
    return management, recorders


def run_demo(data: Path, cameras: int) -> None:
    data.mkdir(parents=True, exist_ok=True)
    keys = Secrets.new()
    management_config, recorder_configs = _configs(data, cameras, keys)
    gapless = [sys.executable, "-m", "gapless.cli"]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # run the cleanup below on SIGTERM too
    sim_args = ["camera-sim", "--cameras", str(cameras), "--port", str(RTSP_PORT), "--control-port", str(CONTROL_PORT)]
    procs: dict[str, subprocess.Popen] = {"sim": subprocess.Popen([*gapless, *sim_args])}
    try:
        _wait(f"http://127.0.0.1:{CONTROL_PORT}/cameras", {}, "camera-sim")
        procs["management"] = subprocess.Popen([*gapless, "management", "--config", str(management_config)])
        gateway = f"http://127.0.0.1:{MANAGEMENT_PORT}"
        _wait(f"{gateway}/api/v1/config", {"Authorization": f"Bearer {keys.admin}"}, "management server")
        for name, path in recorder_configs.items():
            procs[name] = subprocess.Popen([*gapless, "recorder", "--config", str(path)])
        rec_a, rec_b = (f"http://127.0.0.1:{port}" for port in RECORDER_PORTS.values())
        for name, url in zip(RECORDER_PORTS, (rec_a, rec_b), strict=True):
            _wait(f"{url}/api/v1/health", {"Authorization": f"Bearer {keys.recorder_api[name]}"}, "recorder")
        start = int(time.time())
        rec_a_token = keys.recorder_api["rec-a"]
        window = f"--start {start} --end {start + 120}"
        print(
            f"""
Gapless demo is running: {cameras} simulated cameras, recorded by the cluster "main" (rec-a on
{rec_a}, the primary, and rec-b on {rec_b}); the management server and its gateway on
{gateway}. Ctrl-C stops it. Each process has its own credential (files in {data}).
  live (gateway): ffplay '{gateway}/api/v1/cameras/camera0/live.m3u8?token={keys.viewer}'
  cluster:        curl -H 'Authorization: Bearer {keys.viewer}' {gateway}/api/v1/clusters/main
  failover:       kill -9 <rec-a's PID, printed below>: the player keeps going (rec-b takes the token);
                  the demo starts rec-a again {RESTART_AFTER_S} s later; it backfills from rec-b,
                  then takes the token back
  switchover:     gapless cluster switchover --management {gateway} --token {keys.admin} --cluster main
  audit:          gapless audit --recorder {rec_a} --token {rec_a_token} --camera camera0 {window}
                  (after two minutes, and after a failover: nothing missing)
  export:         curl -o camera0.mp4 \\
                    '{rec_a}/api/v1/cameras/camera0/export.mp4?start={start}&end={start + 60}&token={rec_a_token}'
  faults:         curl -X POST http://127.0.0.1:{CONTROL_PORT}/cameras/cam0/stop   (and /start, /drop, /stall?seconds=5)
""",
            flush=True,
        )
        _supervise(procs, recorder_configs, gapless)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        for proc in reversed(list(procs.values())):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)


def _supervise(procs: dict[str, subprocess.Popen], recorder_configs: dict[str, Path], gapless: list[str]) -> None:
    """Print the recorders' PIDs; start a recorder again RESTART_AFTER_S after it died."""
    for name in recorder_configs:
        print(f"  {name}: PID {procs[name].pid}", flush=True)
    died: dict[str, float] = {}
    while procs["sim"].poll() is None and procs["management"].poll() is None:
        for name, path in recorder_configs.items():
            if procs[name].poll() is None:
                continue
            if name not in died:
                died[name] = time.monotonic()
                print(f"  {name} exited; starting it again in {RESTART_AFTER_S} s", flush=True)
            elif time.monotonic() - died[name] >= RESTART_AFTER_S:
                del died[name]
                procs[name] = subprocess.Popen([*gapless, "recorder", "--config", str(path)])
                print(f"  {name}: started again, PID {procs[name].pid}", flush=True)
        time.sleep(0.5)


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
