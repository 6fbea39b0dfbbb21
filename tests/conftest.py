"""Real processes on loopback: `gapless camera-sim` and `gapless recorder`, stopped by PID."""

from __future__ import annotations

import io
import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import av
import httpx
import pytest
import yaml

TOKEN = "test-token-0123456789abcdef"
GAPLESS = [sys.executable, "-m", "gapless.cli"]


#: Each test's time in the last run that stored them (`pytest --store-durations`): the suite runs
#: the longest first, so no long test starts late and holds the run's end while the other workers
#: are idle (`--dist loadgroup` hands each worker the next test as it runs low).
DURATIONS = Path(__file__).with_name("durations.json")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--store-durations", action="store_true", help=f"write each test's time to {DURATIONS.name}")


def _test_id(nodeid: str) -> str:
    """A test's id without the "@group" that `--dist loadgroup` appends to it."""
    return nodeid.rpartition("@")[0] if nodeid.rfind("@") > nodeid.rfind("]") else nodeid


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    known = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
    unknown = statistics.median(known.values()) if known else 0.0  # a new test: a typical one
    items.sort(key=lambda item: -known.get(_test_id(item.nodeid), unknown))  # stable: the same order on every worker


_measured: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Setup, call and teardown of each test (under xdist, the controller sees every worker's)."""
    test = _test_id(report.nodeid)
    _measured[test] = _measured.get(test, 0.0) + report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    if session.config.getoption("store_durations") and not os.environ.get("PYTEST_XDIST_WORKER"):
        stored = {nodeid: round(seconds, 2) for nodeid, seconds in sorted(_measured.items())}
        DURATIONS.write_text(json.dumps(stored, indent=0) + "\n")


#: Ports for test servers: a block per xdist worker, below the kernel's ephemeral range (32768+),
#: so no other worker's server and no outgoing connection can take a port between the moment a
#: test picks it and the moment its process binds it.
PORTS_PER_WORKER = 2000  # up to eight workers: 15000-31000
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
_next_ports = itertools.count(15000 + PORTS_PER_WORKER * _WORKER)


def free_port() -> int:
    for port in _next_ports:
        if port >= 15000 + PORTS_PER_WORKER * (_WORKER + 1):
            break
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # taken (a server left over by another run): the next one
            return port
    raise RuntimeError("this test worker used up its port block")


def free_ports(count: int) -> int:
    """The first of `count` consecutive free ports (servers that listen on a base port plus k)."""
    for _attempt in range(50):
        first = free_port()
        following = [free_port() for _ in range(count - 1)]
        if following == list(range(first + 1, first + count)):
            return first
    raise RuntimeError(f"no {count} consecutive free ports in this worker's block")


def wait_for(predicate, timeout: float, what: str, interval: float = 0.25):
    """Poll until predicate() is truthy; fail the test (never hang) after timeout seconds."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (httpx.HTTPError, OSError, KeyError) as exc:
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last_exc})")


def exported(rec, camera: str, start_us: int, end_us: int) -> tuple[list[int], int]:
    """Presentation times (90 kHz) of every frame of a recorder's MP4 export, in file order, and how
    many frames decode (the decoder flushed); fails unless decode times strictly increase."""
    body = rec.api.get(f"/api/v1/cameras/{camera}/export.mp4", params={"start": start_us / 1e6, "end": end_us / 1e6})
    assert body.status_code == 200, body.text
    with av.open(io.BytesIO(body.content)) as container:
        stream = container.streams.video[0]
        pts, dts, decoded = [], [], 0
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            pts.append(packet.pts)
            dts.append(packet.dts)
            decoded += len(packet.decode())
        decoded += len(stream.codec_context.decode(None))
    assert all(b > a for a, b in itertools.pairwise(dts)), "export decode timestamps go backwards"
    return pts, decoded


def audit_clean(rec, camera: str, start: float, end: float, audio: bool = False, arrival: bool = True):
    """Wait (bounded) until the recorder's audit of the window is clean, audio included when asked
    for: backfill may still be closing a hole. Returns the clean report; fails with the last one.
    `arrival=False` for a recorder that was stopped (SIGSTOP): it read the camera's backlog late, which
    the audit rightly reports as arrival far from camera time, though every time is true."""
    from gapless.audit.audit import audit

    last: list = []

    def clean() -> bool:
        last[:] = [audit(rec.url, TOKEN, camera, str(start), str(end))]
        report = last[0]
        problems = [p for p in report.time_problems if arrival or " arrived " not in p]
        return not report.lost and not problems and (report.audio_units > 0 or not audio)

    try:
        wait_for(clean, 120, "a complete archive" + (", audio included" if audio else ""))
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last audit: {last}") from None
    return last[0]


def recorder_with_partner(make_recorder, camera_url: str):
    """rec-b records the camera "cam"; rec-a records it too, with rec-b as its backfill partner
    (gap scans every 5 s). Returns (rec-a, rec-b), both started."""
    cameras = [{"id": "cam", "url": camera_url}]
    b = make_recorder("rec-b", cameras).start()
    extra = {"partners": [{"id": "rec-b", "url": b.url, "token": TOKEN}], "backfill": {"scan_interval": "5s"}}
    return make_recorder("rec-a", cameras, extra).start(), b


def kill_and_restart(rec, down_s: float = 5) -> float:
    """SIGKILL the recorder once it records, start it again after `down_s`; returns when the window
    that must come out whole (after backfill) begins."""
    rec.wait_fragments("cam", 3)
    start = time.time()
    time.sleep(2)
    rec.proc.kill()
    time.sleep(down_s)
    rec.start()
    rec.wait_fragments("cam", 3)
    return start


class Proc:
    def __init__(self, args: list[str], log: Path) -> None:
        self.args = args
        self.log = log
        self.popen: subprocess.Popen | None = None

    def start(self) -> Proc:
        fh = self.log.open("ab")
        self.popen = subprocess.Popen(self.args, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ})
        fh.close()
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.popen and self.popen.poll() is None:
            self.popen.send_signal(sig)
            self.popen.wait(timeout=30)

    def pause(self) -> None:
        self.popen.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.popen.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        stop_all([self])

    def _terminate(self) -> None:
        if self.popen and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGCONT)  # a paused process cannot act on SIGTERM
            self.popen.terminate()

    def _reap(self, deadline: float) -> None:
        if self.popen and self.popen.poll() is None:
            try:
                self.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)


def stop_all(procs: list[Proc]) -> None:
    """SIGTERM to every process at once, then wait for each (SIGKILL after 30 s): processes that stop
    one after the other make each wait its predecessor's shutdown out."""
    for proc in procs:
        proc._terminate()
    deadline = time.monotonic() + 30
    for proc in procs:
        proc._reap(deadline)


class Sim:
    def __init__(
        self,
        tmp: Path,
        cameras: int = 1,
        special: tuple[str, ...] = (),
        gop: int = 25,
        substream: str | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.rtsp_port, self.control_port = free_port(), free_port()
        self.gop = gop
        args = [
            *GAPLESS,
            "camera-sim",
            "--cameras",
            str(cameras),
            "--port",
            str(self.rtsp_port),
            "--control-port",
            str(self.control_port),
            "--width",
            "640",
            "--height",
            "360",
            "--gop",
            str(gop),
            "--bitrate",
            "800",
        ]
        for kind in special:
            args += ["--special", kind]
        if substream:
            args += ["--substream", substream]
        args += extra
        self.proc = Proc(args, tmp / "sim.log").start()
        self.control = httpx.Client(base_url=f"http://127.0.0.1:{self.control_port}", timeout=10)
        wait_for(lambda: self.control.get("/cameras").status_code == 200, 120, "camera-sim to start")

    def url(self, camera: str) -> str:
        return f"rtsp://127.0.0.1:{self.rtsp_port}/{camera}"

    def camera(self, camera: str) -> dict:
        return self.control.get(f"/cameras/{camera}").json()

    def close(self) -> None:
        self.control.close()
        self.proc.stop()


class Recorder:
    def __init__(self, tmp: Path, name: str, cameras: list[dict], extra: dict | None = None, **section) -> None:
        self.port = free_port()
        self.storage = tmp / name
        self.config_path = tmp / f"{name}.yaml"
        config = {
            "recorder": {
                "id": name,
                "listen": f"127.0.0.1:{self.port}",
                "storage": str(self.storage),
                "api_token": TOKEN,
                **section,
            },
            "cameras": cameras,
            **(extra or {}),
        }
        self.config_path.write_text(yaml.safe_dump(config))
        self.log = tmp / f"{name}.log"
        self.proc: Proc | None = None
        self.api = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Recorder:
        self.proc = Proc([*GAPLESS, "recorder", "--config", str(self.config_path)], self.log).start()
        wait_for(lambda: self.api.get("/api/v1/health").status_code == 200, 60, "recorder API")
        return self

    def jobs(self) -> list[dict]:
        return self.api.get("/api/v1/backfill").json()["jobs"]

    def health(self) -> dict:
        return self.api.get("/api/v1/health").json()

    def fragments(self, camera: str) -> int:
        return self.health()["cameras"][camera]["fragments"]

    def wait_fragments(self, camera: str, count: int, timeout: float = 90) -> None:
        wait_new_fragments([(self, camera)], count, timeout)

    def close(self) -> None:
        self.api.close()
        if self.proc:
            self.proc.stop()


def wait_new_fragments(feeds: list[tuple[Recorder, str]], count: int, timeout: float = 90) -> None:
    """Until each (recorder, camera) has delivered `count` fragments more than now (the health's
    count: handed to the storage writer) and its recorder has stored everything handed over (so
    they are listed), waited for together (one after the other, each would count from when the one
    before was done)."""
    bases = [(rec, camera, rec.fragments(camera)) for rec, camera in feeds]

    def stored() -> bool:
        if any(rec.fragments(camera) < base + count for rec, camera, base in bases):
            return False
        # asked after the count: what was counted was handed over before, so it is stored if nothing waits
        return all(rec.health()["storage"]["queue_depth"] == 0 for rec, _camera, _base in bases)

    wait_for(stored, timeout, f"{count} new fragments of {', '.join(f'{rec.url} {camera}' for rec, camera in feeds)}")


#: The tests that must not share the machine with each other: the virtual-IP test asserts 1 s lease
#: timing to the tens of milliseconds, and the console tests run a browser decoding video, enough
#: load to starve it. `--dist loadgroup` (make test) runs a group's tests one after the other on one
#: worker, while the other workers go on with the rest.
timing_sensitive = pytest.mark.xdist_group("timing-sensitive")


@pytest.fixture
def make_sim(tmp_path):
    """Start a simulator with the options a test needs; every one made is stopped afterwards."""
    made: list[Sim] = []

    def make(*args, **options) -> Sim:
        made.append(Sim(*args, **options) if args else Sim(tmp_path, **options))
        return made[-1]

    yield make
    for simulator in made:
        simulator.close()


@pytest.fixture
def make_onvif_sim(tmp_path, make_sim):
    """A simulator whose cameras are the channels of these ONVIF devices (sim/onvif.py), digest
    credentials admin / `password`; returns it and the first device's port (device k: port + k)."""

    def make(devices: list[dict], cameras: int, password: str) -> tuple[Sim, int]:
        path = tmp_path / "onvif-devices.yaml"
        path.write_text(yaml.safe_dump(devices))
        port = free_ports(len(devices))
        extra = ("--auth", f"digest:admin:{password}", "--onvif-port", str(port), "--onvif-devices", str(path))
        return make_sim(cameras=cameras, extra=extra), port

    return make


@pytest.fixture
def sim(make_sim):
    """One camera, plus the cameras that send what the recorder must refuse (MPEG-4, garbage)."""
    return make_sim(cameras=1, special=("mpeg4", "garbage"))


@pytest.fixture
def camera(make_sim):
    """One plain H.264 camera."""
    return make_sim(cameras=1)


@pytest.fixture
def h265_camera(make_sim):
    return make_sim(cameras=1, extra=("--codec", "h265"))


@pytest.fixture
def aac_camera(make_sim):
    return make_sim(cameras=1, extra=("--audio", "aac"))


@pytest.fixture
def make_recorder(tmp_path):
    made: list[Recorder] = []

    def make(name: str, cameras: list[dict], extra: dict | None = None, **section) -> Recorder:
        rec = Recorder(tmp_path, name, cameras, extra, **section)
        made.append(rec)
        return rec

    yield make
    for rec in made:
        rec.api.close()
    stop_all([rec.proc for rec in made if rec.proc])
