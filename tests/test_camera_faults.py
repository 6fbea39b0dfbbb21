"""Cameras as they really are: credentials (Digest with qop, Basic, reserved characters, a wrong
password), announced session timeouts, hostile cameras that must not hurt the recorder, and a clean
stop on SIGTERM for every process."""

from __future__ import annotations

import re
import signal
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml
from conftest import GAPLESS, TOKEN, Proc, free_port, wait_for, wait_new_fragments

from gapless.audit.audit import audit
from gapless.ingest.camera import AUTH_BACKOFF_S

PASSWORD = "p@ss:w/rd%?"  # reserved characters, as camera passwords have
#: What a hostile camera may cost the recorder at most (documented in docs/design/storage.md).
RSS_BOUND_MB = 400
EXCEPTION_NAMES = re.compile(r"\b(\w+Error|\w+Exception|Traceback)\b")


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


@pytest.mark.parametrize("scheme", ["digest-qop", "digest", "basic", "both"])
def test_cameras_with_credentials_record_and_a_wrong_password_backs_off(make_sim, make_recorder, scheme):
    sim = make_sim(cameras=1, extra=("--auth", f"{scheme}:admin:{PASSWORD}"))
    host = f"127.0.0.1:{sim.rtsp_port}"
    cameras = [
        {"id": "in-url", "url": f"rtsp://admin:{quote(PASSWORD, safe='')}@{host}/cam0"},
        {"id": "fields", "url": f"rtsp://{host}/cam0", "username": "admin", "password": PASSWORD},
        {"id": "wrong", "url": f"rtsp://{host}/cam0", "username": "admin", "password": "guess"},
    ]
    rec = make_recorder("rec-a", cameras).start()
    wait_new_fragments([(rec, "in-url"), (rec, "fields")], 3)
    wrong = wait_for(
        lambda: (feed := rec.health()["cameras"]["wrong"])["state"] == "failed" and feed,
        30,
        "the wrong password to be reported",
    )
    assert "authentication refused" in wrong["reason"], wrong
    time.sleep(5)
    assert rec.health()["cameras"]["wrong"]["reconnects"] <= 1, f"retries within {AUTH_BACKOFF_S:.0f} s"
    for text in (rec.log.read_text(), rec.api.get("/api/v1/cameras").text, rec.api.get("/api/v1/health").text):
        assert PASSWORD not in text and quote(PASSWORD, safe="") not in text


def test_keepalives_follow_the_announced_session_timeout(make_sim, make_recorder):
    sim = make_sim(cameras=1, extra=("--session-timeout", "6"))
    rec = make_recorder("rec-a", [{"id": "cam", "url": sim.url("cam0")}]).start()
    rec.wait_fragments("cam", 2)
    time.sleep(20)  # more than three session timeouts
    health = rec.health()["cameras"]["cam"]
    assert health["reconnects"] == 0 and health["state"] == "recording", health


@pytest.fixture
def hostile(tmp_path):
    port = free_port()
    log = tmp_path / "hostile.log"
    proc = Proc([sys.executable, str(Path(__file__).with_name("hostile_camera.py")), str(port)], log).start()
    try:
        wait_for(lambda: "ready" in log.read_text(), 30, "the hostile camera")
        yield f"rtsp://127.0.0.1:{port}"
    finally:
        proc.stop()


HOSTILE = {
    "huge-reply": "reply of 2.0 GB refused",
    "slow": "took over 20 s to answer DESCRIBE",
    "garbage-sdp": "not a session description",
    "endless-fu": "access unit over 8 MB refused",
    "no-marker": "no recordable H.264",
}


def test_hostile_cameras_cannot_hurt_the_recorder_or_the_other_cameras(make_sim, make_recorder, hostile):
    sim = make_sim(cameras=1)
    cameras = [{"id": "good", "url": sim.url("cam0")}]
    cameras += [{"id": name, "url": f"{hostile}/{name}"} for name in HOSTILE]
    rec = make_recorder("rec-a", cameras).start()
    started = time.time()
    peak = 0.0
    reasons: dict[str, str] = {}

    def all_reported() -> bool:
        nonlocal peak
        peak = max(peak, rss_mb(rec.proc.popen.pid))
        feeds = rec.health()["cameras"]
        for name, expected in HOSTILE.items():
            if expected in feeds[name]["reason"]:
                reasons[name] = feeds[name]["reason"]
        return len(reasons) == len(HOSTILE)

    try:
        wait_for(all_reported, 90, "every hostile camera to be reported in words", interval=1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {rec.health()['cameras']}") from None
    for name, reason in reasons.items():
        assert not EXCEPTION_NAMES.search(reason), f"{name}: {reason}"
    for _ in range(10):  # and it stays bounded while they keep trying
        peak = max(peak, rss_mb(rec.proc.popen.pid))
        time.sleep(1)
    assert peak < RSS_BOUND_MB, f"recorder RSS reached {peak:.0f} MB"
    report = audit(rec.url, TOKEN, "good", str(started), str(time.time() - 3))
    assert report.frames > 25 * 20 and not report.missing and not report.duplicates, report
    assert len(report.intervals) == 1, report.intervals


def test_every_process_stops_cleanly_on_sigterm_and_loses_nothing(tmp_path, make_sim, make_recorder):
    sim = make_sim(cameras=1, gop=100)  # 4 s GOPs: most of the GOP in progress precedes the window end
    mgmt_port = free_port()
    config = {
        "management": {"listen": f"127.0.0.1:{mgmt_port}", "data": str(tmp_path / "mgmt"), "api_token": TOKEN},
        "recorders": [{"id": "rec-x", "url": f"http://127.0.0.1:{free_port()}", "token": TOKEN}],
        "clusters": [],
    }
    (tmp_path / "management.yaml").write_text(yaml.safe_dump(config))
    management = Proc([*GAPLESS, "management", "--config", str(tmp_path / "management.yaml")], tmp_path / "m.log")
    management_url = f"http://127.0.0.1:{mgmt_port}"
    listen = f"127.0.0.1:{free_port()}"
    gateway = Proc(
        [*GAPLESS, "gateway", "--management", management_url, "--token", TOKEN, "--listen", listen], tmp_path / "g.log"
    )
    try:
        rec = make_recorder("rec-a", [{"id": "cam", "url": sim.url("cam0")}]).start()
        management.start()
        gateway.start()
        rec.wait_fragments("cam", 4)
        time.sleep(3)  # the gateway has met the management server
        started = sim.camera("cam0")["start_us"] / 1e6
        stopped_at = time.time()
        for name, proc in (("recorder", rec.proc), ("management", management), ("gateway", gateway)):
            assert proc.popen.poll() is None, f"{name} is not running"
            begin = time.monotonic()
            proc.popen.send_signal(signal.SIGTERM)
            code = proc.popen.wait(timeout=30)
            took = time.monotonic() - begin
            assert code == 0, f"{name} exited {code} on SIGTERM"
            assert took < 10, f"{name} took {took:.1f} s to stop"
        rec.start()
        rec.wait_fragments("cam", 1)
        # Up to what the recorder had surely read when told to stop (it reads every 0.5 s; 1 s with
        # slack for a loaded machine): the GOP in progress was kept, so nothing is missing, and later
        # footage makes any hole count.
        report = audit(rec.url, TOKEN, "cam", str(started), str(stopped_at - 1.0))
        assert not report.lost, report
    finally:
        for proc in (gateway, management):
            proc.stop()
        sim.close()  # here, not at teardown: its exit code is checked
    sim_code = sim.proc.popen.returncode
    assert sim_code == 0, f"the simulator exited {sim_code} on SIGTERM"
