"""`gapless demo`: simulated cameras, a management server (with its gateway and the embedded
coordinator), a symmetrical cluster of two recorders, and an asymmetrical pair (two independent
recorders: one records a camera's main stream, the other its 10 fps sub-stream for an hour) on
loopback, URLs printed.

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

RESTART_AFTER_S = 10
CLUSTER = ("rec-a", "rec-b")
PAIR = ("rec-c", "rec-d")
PAIRED_CAMERA, PAIRED_CAMERA_SUB = "entrance", "entrance-sub"


@dataclass(frozen=True)
class Ports:
    management: int
    rtsp: int
    control: int
    recorders: dict[str, int]

    @classmethod
    def of(cls, base: int | None) -> Ports:
        """The usual ports (7000, recorders 7101…, RTSP 8554), or seven from `base` on (tests)."""
        if base is None:
            return cls(7000, 8554, 8555, {name: 7101 + i for i, name in enumerate(CLUSTER + PAIR)})
        return cls(base, base + 1, base + 2, {name: base + 3 + i for i, name in enumerate(CLUSTER + PAIR)})


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

        names = CLUSTER + PAIR
        return cls(token(), token(), {n: token() for n in names}, {n: token() for n in names})


def _configs(data: Path, cameras: int, keys: Secrets, ports: Ports) -> tuple[Path, dict[str, Path]]:
    """The cluster records cam0…camN-1; the pair records camN: rec-c its main stream, rec-d its
    sub-stream (kept an hour), rec-c the primary, viewers back to it once it has backfilled."""
    rtsp = f"rtsp://127.0.0.1:{ports.rtsp}"
    paired = {
        "rec-c": [{"id": PAIRED_CAMERA, "url": f"{rtsp}/cam{cameras}"}],
        "rec-d": [{"id": PAIRED_CAMERA_SUB, "url": f"{rtsp}/cam{cameras}-sub", "retention": {"max_age": "1h"}}],
    }
    management = _write(
        data / "management.yaml",
        {
            "management": {
                "listen": f"127.0.0.1:{ports.management}",
                "data": str(data / "mgmt"),
                "api_token": keys.admin,
            },
            "coordinator": {"backend": "embedded"},
            "recorders": [
                {
                    "id": name,
                    "url": f"http://127.0.0.1:{port}",
                    "token": keys.recorder_api[name],
                    **({"cameras": paired[name]} if name in paired else {}),
                }
                for name, port in ports.recorders.items()
            ],
            "pairs": [
                {
                    "a": {"recorder": "rec-c", "camera": PAIRED_CAMERA},
                    "b": {"recorder": "rec-d", "camera": PAIRED_CAMERA_SUB},
                    "failback": "backfilled",
                }
            ],
            "clusters": [
                {
                    "id": "main",
                    "members": list(CLUSTER),
                    "lease_ttl": "1s",
                    "failback": "auto",
                    "retention": {"max_age": "1d", "max_bytes": "2GB"},
                    "backfill": {"scan_interval": "15s"},
                    "cameras": [{"id": f"camera{i}", "url": f"{rtsp}/cam{i}"} for i in range(cameras)],
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
    for name, port in ports.recorders.items():
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
                "management": {"url": f"http://127.0.0.1:{ports.management}", "token_file": str(token_file)},
            },
        )
    return management, recorders


def run_demo(data: Path, cameras: int, port_base: int | None = None) -> None:
    data.mkdir(parents=True, exist_ok=True)
    keys, ports = Secrets.new(), Ports.of(port_base)
    management_config, recorder_configs = _configs(data, cameras, keys, ports)
    gapless = [sys.executable, "-m", "gapless.cli"]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # run the cleanup below on SIGTERM too
    sim_args = [
        *("camera-sim", "--cameras", str(cameras + 1), "--substream", "320x180@10"),
        *("--port", str(ports.rtsp), "--control-port", str(ports.control)),
    ]
    procs: dict[str, subprocess.Popen] = {"sim": subprocess.Popen([*gapless, *sim_args])}
    try:
        _wait(f"http://127.0.0.1:{ports.control}/cameras", {}, "camera-sim")
        procs["management"] = subprocess.Popen([*gapless, "management", "--config", str(management_config)])
        gateway = f"http://127.0.0.1:{ports.management}"
        _wait(f"{gateway}/api/v1/config", {"Authorization": f"Bearer {keys.admin}"}, "management server")
        login = _console_user(gateway, keys.admin, data / "console-admin.password")
        for name, path in recorder_configs.items():
            procs[name] = subprocess.Popen([*gapless, "recorder", "--config", str(path)])
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.recorders.items()}
        for name, url in urls.items():
            _wait(f"{url}/api/v1/health", {"Authorization": f"Bearer {keys.recorder_api[name]}"}, "recorder")
        start = int(time.time())
        rec_a, rec_b, rec_c, rec_d = (urls[name] for name in CLUSTER + PAIR)
        rec_a_token = keys.recorder_api["rec-a"]
        window = f"--start {start} --end {start + 120}"
        viewer = f"-H 'Authorization: Bearer {keys.viewer}'"
        block = f"http://127.0.0.1:{ports.control}/cameras/cam{cameras}/block?client=(rec-c)&seconds=20"
        print(
            f"""
Gapless demo is running. Console: {gateway}/?token={login}
  console:        the link above signs "admin" in once (15 minutes); then sign in as admin with the
                  password in {data / "console-admin.password"}; more users: gapless users add NAME
                  --role viewer|operator|admin --management {gateway} --token {keys.admin}
  gateway:        {gateway} (one URL per camera)
  cameras:        curl {viewer} {gateway}/api/v1/cameras
  live (gateway): ffplay '{gateway}/api/v1/cameras/camera0/live.m3u8?token={keys.viewer}'

{cameras} simulated cameras recorded by the cluster "main" (rec-a on {rec_a}, the primary, and rec-b
on {rec_b}); one more, "{PAIRED_CAMERA}", by an asymmetrical pair: rec-c ({rec_c}) records its main
stream, rec-d ({rec_d}) its 10 fps sub-stream for an hour. Ctrl-C stops it all. Each process has its
own credential (files in {data}).
  cluster:        curl {viewer} {gateway}/api/v1/clusters/main
  failover:       kill -9 <rec-a's PID, printed below>: the player keeps going (rec-b takes the token);
                  the demo starts rec-a again {RESTART_AFTER_S} s later; it backfills from rec-b,
                  then takes the token back
  switchover:     gapless cluster switchover --management {gateway} --token {keys.admin} --cluster main
  audit:          gapless audit --recorder {rec_a} --token {rec_a_token} --camera camera0 {window}
                  (after two minutes, and after a failover: nothing missing)
  export:         curl -o camera0.mp4 \\
                    '{gateway}/api/v1/cameras/camera0/export.mp4?start={start}&end={start + 60}&token={keys.viewer}'
  pair re-route:  curl -X POST '{block}'
                  ({PAIRED_CAMERA} alone goes to rec-d's sub-stream, back to rec-c once it has backfilled)
  pair timeline:  curl {viewer} '{gateway}/api/v1/cameras/{PAIRED_CAMERA}/timeline?start={start}&end={start + 3600}'
  pairs:          gapless pairs list --management {gateway} --token {keys.admin}
  faults:         curl -X POST http://127.0.0.1:{ports.control}/cameras/cam0/stop
                  (and /start, /drop, /stall?seconds=5, /block?client=…&seconds=…)
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


def _console_user(management: str, admin_token: str, password_file: Path) -> str:
    """The console's user "admin" (added, or given a new password on a later run), its password
    kept in a private file, and a one-time login link's token for it."""
    password = secrets.token_urlsafe(12)
    password_file.touch(mode=0o600)
    password_file.write_text(password + "\n")
    with httpx.Client(base_url=management, headers={"Authorization": f"Bearer {admin_token}"}, timeout=30) as api:
        added = api.post("/api/v1/users", json={"name": "admin", "role": "admin", "password": password})
        if added.status_code == 409:
            added = api.patch("/api/v1/users/admin", json={"password": password})
        added.raise_for_status()
        link = api.post("/api/v1/users/admin/link")
        link.raise_for_status()
        return str(link.json()["link"])


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
