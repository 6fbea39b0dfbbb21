"""Two management servers, each managing one independent recorder that names the same cameras its own
way; each lists the other's recorder (`managed_by`). Pairs are proposed across the servers from
ONVIF identities, accepted and rejected on both; one standalone gateway for both servers lists every
camera once, re-routes a paired camera alone when its primary loses the feed (a live reader sees
every frame), and keeps listing and playing a server's cameras while that server is down."""

from __future__ import annotations

import json
import subprocess
import time

import httpx
import yaml
from cluster_harness import (
    GATEWAY_TOKEN,
    VIEWER_TOKEN,
    LiveReader,
    Management,
    assert_continuous,
    managed_recorder,
)
from conftest import GAPLESS, TOKEN, Proc, audit_clean, free_port, wait_for, wait_new_fragments

from gapless.client import GatewayClient

PASSWORD = "federated-camera-secret-1"
DEVICES = [
    {"manufacturer": "Acme", "model": f"DOME-{n}", "endpoint": f"urn:uuid:{str(n) * 8}-0000-4000-8000-00000000000{n}",
     "serial": f"ACME-10{n}", "mac": f"00:11:22:33:55:0{n}", "channels": [f"cam{n - 1}"]}
    for n in (1, 2)
]  # fmt: skip


def _site(tmp_path, name: str, sim) -> Management:
    (tmp_path / name).mkdir()
    return Management(tmp_path / name, sim)


def _configure(management: Management, own: str, other: Management, other_id: str, cameras: list[dict]) -> None:
    """This server manages `own` (with these cameras); the other server's recorder is listed for pairs."""
    document = yaml.safe_load(management.config_path.read_text())
    document["clusters"] = []
    document["recorders"] = [
        {"id": own, "url": f"http://127.0.0.1:{management.recorder_ports[own]}", "token": TOKEN, "cameras": cameras},
        {
            "id": other_id,
            "url": f"http://127.0.0.1:{other.recorder_ports[other_id]}",
            "token": TOKEN,
            "managed_by": other.url,
        },
    ]
    document["credentials"] = [c for c in document["credentials"] if c.get("recorder") != other_id]
    management.config_path.write_text(yaml.safe_dump(document))


def test_two_management_servers_pair_cameras_and_one_gateway_serves_both(tmp_path, make_onvif_sim):
    sim, onvif = make_onvif_sim(DEVICES, 3, PASSWORD)
    secret = {"username": "admin", "password": PASSWORD}
    m1, m2 = _site(tmp_path, "m1", sim), _site(tmp_path, "m2", sim)
    here, there = f"127.0.0.1:{sim.rtsp_port}", f"localhost:{sim.rtsp_port}"
    _configure(m1, "rec-a", m2, "rec-b", [
        {"id": "lobby", "url": f"rtsp://{here}/cam0", "onvif": f"127.0.0.1:{onvif}", **secret},
        {"id": "gate", "url": f"rtsp://{here}/cam1", "onvif": f"127.0.0.1:{onvif + 1}", **secret},
        {"id": "yard", "url": f"rtsp://{here}/cam2", **secret},
    ])  # fmt: skip
    _configure(m2, "rec-b", m1, "rec-a", [
        {"id": "entrance", "url": f"rtsp://{there}/cam0", "onvif": f"localhost:{onvif}", **secret},
        {"id": "cam-17", "url": f"rtsp://{there}/cam1", "onvif": f"localhost:{onvif + 1}", **secret},
        {"id": "yard-2", "url": f"rtsp://{here}/cam2", **secret},
    ])  # fmt: skip
    a = managed_recorder(tmp_path / "m1", "rec-a", m1)
    b = managed_recorder(tmp_path / "m2", "rec-b", m2)
    gateway_port = free_port()
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    gateway: Proc | None = None
    reader = None
    try:
        for process in (m1, m2, a, b):
            process.start()
        for server in (m1, m2):
            identified = server.api.post("/api/v1/cameras/identify", json={}, timeout=60).json()
            assert any(r.get("identity") for r in identified["cameras"].values()), identified
        both = ["--management", m1.url, "--management", m2.url, "--token", TOKEN]

        def pairs_cli(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([*GAPLESS, "pairs", *args, *both], capture_output=True, text=True, timeout=60)

        proposed = pairs_cli("propose", "--a", "rec-a", "--b", "rec-b", "--json")
        assert proposed.returncode == 0, proposed.stderr
        found = {(p["a"], p["b"]): p for p in json.loads(proposed.stdout)["proposals"]}
        assert set(found) == {("lobby", "entrance"), ("gate", "cam-17"), ("yard", "yard-2")}, found
        assert found[("lobby", "entrance")]["kind"] == "identity" and found[("lobby", "entrance")]["auto_acceptable"]
        assert found[("yard", "yard-2")]["kind"] == "source" and not found[("yard", "yard-2")]["auto_acceptable"]

        accepted = pairs_cli("accept", "--exact", "--a", "rec-a", "--b", "rec-b")
        assert accepted.returncode == 0, accepted.stderr
        assert "accepted rec-a:lobby = rec-b:entrance" in accepted.stdout, accepted.stdout
        assert "accepted rec-a:gate = rec-b:cam-17" in accepted.stdout, accepted.stdout
        rejected = pairs_cli("reject", "--a", "rec-a:yard", "--b", "rec-b:yard-2")
        assert rejected.returncode == 0, rejected.stderr
        for server in (m1, m2):  # stored on both servers
            stored = server.api.get("/api/v1/pairs").json()
            assert {(p["a"]["camera"], p["b"]["camera"]) for p in stored["pairs"]} == {
                ("lobby", "entrance"),
                ("gate", "cam-17"),
            }, stored
            assert [p["a"]["camera"] for p in stored["rejected_pairs"]] == ["yard"], stored
        again = pairs_cli("propose", "--a", "rec-a", "--b", "rec-b", "--json")
        assert json.loads(again.stdout)["proposals"] == [], again.stdout

        version = m1.api.get("/api/v1/pairs").json()["version"]
        wait_for(lambda: f"configuration version {version} applied" in a.log.read_text(), 60, "rec-a to apply")
        wait_new_fragments([(a, "lobby"), (b, "entrance")], 2)

        listen = ["--listen", f"127.0.0.1:{gateway_port}"]
        servers = ["--management", m1.url, "--management", m2.url, "--token", GATEWAY_TOKEN]
        gateway = Proc([*GAPLESS, "gateway", *servers, *listen], tmp_path / "gateway.log").start()
        viewer = GatewayClient(gateway_url, VIEWER_TOKEN)
        viewing = {"Authorization": f"Bearer {VIEWER_TOKEN}"}
        wait_for(lambda: httpx.get(f"{gateway_url}/api/v1/cameras", headers=viewing).status_code == 200, 60, "gateway")

        def routed() -> dict[str, str | None]:
            return {c.id: c.holder for c in viewer.cameras().cameras}

        every = {"lobby": "rec-a", "gate": "rec-a", "yard": "rec-a", "yard-2": "rec-b"}
        wait_for(lambda: routed() == every, 60, "the gateway to list both servers' cameras once")
        reader = LiveReader(gateway_url, "lobby")
        reader.start()
        wait_for(lambda: len(reader.sequences) >= 3, 60, "the live reader to play")
        start = time.time()
        sim.control.post("/cameras/cam0/block", params={"client": "(rec-a)", "seconds": 8}).raise_for_status()
        wait_for(lambda: routed()["lobby"] == "rec-b", 20, "lobby routed to rec-b (its feed seen on m2)")
        assert routed()["gate"] == "rec-a"  # routed alone
        wait_for(lambda: routed()["lobby"] == "rec-a", 60, "lobby routed back to rec-a")
        a.wait_fragments("lobby", 3)
        time.sleep(4)
        reader.stop()
        assert_continuous(reader)
        wait_for(lambda: a.jobs() and all(j["state"] == "done" for j in a.jobs()), 60, "rec-a to backfill")
        audit_clean(a, "lobby", start, time.time() - 3)  # filled from rec-b, managed by the other server

        assert m2.proc is not None
        m2.proc.stop()  # its cameras stay listed and playable from what the gateway knew
        time.sleep(2)
        assert routed() == every
        media = httpx.Client(base_url=gateway_url, headers=viewing, timeout=10)
        for camera in ("yard-2", "lobby"):
            live = media.get(f"/api/v1/cameras/{camera}/live.m3u8")
            assert live.status_code == 200, live.text
            uri = [line for line in live.text.splitlines() if line and not line.startswith("#")][-1]
            assert media.get(uri).status_code == 200, uri
        media.close()
        viewer.close()
    finally:
        if reader is not None:
            reader.stop()
        if gateway is not None:
            gateway.stop()
        for rec in (a, b):
            rec.close()
        for server in (m1, m2):
            server.close()
