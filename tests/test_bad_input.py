"""Bad input is answered with a 4xx and a JSON reason, never a 500 or a hang; credentials never sit in
URLs we store; what Gapless writes is private to its user."""

from __future__ import annotations

import socket
import stat
import time

import httpx
import pytest
from cluster_harness import Management
from conftest import TOKEN, wait_for

from gapless.audit.audit import audit
from gapless.common.http import IDLE_TIMEOUT_S
from gapless.common.signing import sign


@pytest.fixture
def recorder(sim, make_recorder):
    rec = make_recorder("rec-a", [{"id": "cam", "url": sim.url("cam0")}]).start()
    rec.wait_fragments("cam", 1)
    return rec


def test_signed_urls_live_a_bounded_time_and_odd_signatures_are_refused(recorder):
    path = "/api/v1/cameras/cam/live.m3u8"
    anonymous = httpx.Client(base_url=recorder.url, timeout=10)
    soon = int(time.time()) + 600
    assert anonymous.get(path, params={"exp": soon, "sig": sign(TOKEN, path, soon)}).status_code == 200
    forever = 99_999_999_999  # validly signed, but claiming to live for millennia
    for params in (
        {"exp": forever, "sig": sign(TOKEN, path, forever)},
        {"exp": "\uff11\uff12\uff13", "sig": "x"},  # digits, but not ASCII ones (fullwidth)
        {"exp": "12abc", "sig": "x"},
        {"exp": soon, "sig": "ü" * 32},
    ):
        reply = anonymous.get(path, params=params)
        assert reply.status_code == 401 and "error" in reply.json(), (params, reply.text)


def test_odd_tokens_and_times_get_4xx_with_a_reason(recorder):
    raw = httpx.Client(base_url=recorder.url, timeout=10)
    reply = raw.get("/api/v1/health", headers={"Authorization": b"Bearer \xff\xfe\x80token"})
    assert reply.status_code == 401 and "error" in reply.json()
    for value in ("inf", "1e308", "-5", "nan", "0001-01-01T00:00:00+14:00"):
        reply = recorder.api.get("/api/v1/cameras/cam/coverage", params={"start": value, "end": time.time()})
        assert reply.status_code == 400 and "error" in reply.json(), (value, reply.text)


def test_a_backfill_source_url_with_credentials_is_refused_and_not_echoed(recorder):
    body = {"camera": "cam", "source": "http://admin:s3cret-pass@127.0.0.1:9/", "start": "1", "end": "2"}
    reply = recorder.api.post("/api/v1/backfill", json=body)
    assert reply.status_code == 400 and "must not carry credentials" in reply.text, reply.text
    assert "s3cret-pass" not in reply.text


def test_what_the_recorder_writes_is_private(recorder):
    assert stat.S_IMODE(recorder.storage.stat().st_mode) == 0o700
    for name in ("index.sqlite3", "lock", "index-open-id"):
        assert stat.S_IMODE((recorder.storage / name).stat().st_mode) == 0o600, name
    # The feed's fragment count says what was handed to the storage writer, not what is on disk yet.
    chunk = wait_for(lambda: next(recorder.storage.glob("cameras/cam/*.glc"), None), 30, "the first chunk file")
    assert stat.S_IMODE(chunk.stat().st_mode) == 0o600


def test_a_coordinator_watch_with_a_nan_timeout_is_refused_at_once(tmp_path, sim):
    management = Management(tmp_path, sim).start()
    try:
        started = time.monotonic()
        reply = management.api.post(
            "/coordinator/v1/watch",
            content=b'{"prefix": "/gapless/", "after_revision": 0, "timeout": NaN}',
            headers={"Content-Type": "application/json"},
        )
        assert reply.status_code == 400 and "timeout" in reply.json()["error"], reply.text
        assert time.monotonic() - started < 10
        data = tmp_path / "mgmt"
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        assert stat.S_IMODE((data / "config.sqlite3").stat().st_mode) == 0o600
    finally:
        management.close()


def test_slow_header_clients_are_dropped_and_recording_loses_nothing(recorder):
    """200 connections that dribble a request's headers (slowloris) are closed by the idle timeout,
    while the recorder goes on storing every frame."""
    start = time.time()
    clients = []
    for _ in range(200):
        sock = socket.create_connection(("127.0.0.1", recorder.port), timeout=5)
        sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
        clients.append(sock)
    deadline = time.monotonic() + IDLE_TIMEOUT_S + 45
    open_ = list(clients)
    while open_ and time.monotonic() < deadline:
        still = []
        for sock in open_:
            try:
                sock.sendall(b"X-Slow: 1\r\n")  # one more header line now and then, never the end
                sock.settimeout(0.01)
                if sock.recv(1) == b"":
                    continue  # closed by the server
            except (TimeoutError, BlockingIOError):
                pass
            except OSError:
                continue  # reset by the server
            still.append(sock)
        open_ = still
        time.sleep(1)
    for sock in clients:
        sock.close()
    assert not open_, f"{len(open_)} slow clients still connected after {IDLE_TIMEOUT_S + 45:.0f} s"
    recorder.wait_fragments("cam", 2)
    report = audit(recorder.url, TOKEN, "cam", str(start), str(time.time() - 2))
    assert not report.lost, report
