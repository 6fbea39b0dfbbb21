"""Camera identity over ONVIF, on the wire: the simulator serves a real SOAP device service per
device (WS-Security digest required), onvif-zeep-async asks it, `gapless cameras identify` prints
and stores what it answers. Two units of one model stay apart by serial, MAC and endpoint; the
channels of one encoder share the device and differ by video source; an address reassigned to
another device is seen as that other device."""

from __future__ import annotations

import json
import subprocess

import httpx
import yaml
from conftest import GAPLESS, TOKEN, Proc, free_port, wait_for

from gapless.config.recorder import load_recorder_config

PASSWORD = "on vif/pa:ss"  # characters a URL would need escaped
VIEWER = "viewer-credential-secret-1"
MODEL = {"manufacturer": "Acme", "model": "DOME-4K", "firmware": "5.1", "hardware_id": "D4K-B"}
DEVICES = [
    {**MODEL, "endpoint": "urn:uuid:11111111-1111-4111-8111-111111111111", "serial": "ACME-0001",
     "mac": "00:11:22:33:44:01", "channels": ["cam0"]},
    {**MODEL, "endpoint": "urn:uuid:22222222-2222-4222-8222-222222222222", "serial": "ACME-0002",
     "mac": "00:11:22:33:44:02", "channels": ["cam1"]},
    {"manufacturer": "Acme", "model": "ENC-2", "firmware": "2.0", "hardware_id": "E2",
     "endpoint": "urn:uuid:33333333-3333-4333-8333-333333333333", "serial": "ACME-ENC-7",
     "mac": "00:11:22:33:44:07", "channels": ["cam2", "cam3"]},
]  # fmt: skip


def identify(config, *extra) -> tuple[int, dict, str]:
    command = [*GAPLESS, "cameras", "identify", "--config", str(config), "--json", "--timeout", "5", *extra]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    return done.returncode, json.loads(done.stdout), done.stdout + done.stderr


def test_cameras_identify_over_onvif(tmp_path, make_onvif_sim):
    sim, onvif = make_onvif_sim(DEVICES, 4, PASSWORD)
    dead = free_port()  # nothing listens there
    cameras = [
        {"id": "lobby", "url": sim.url("cam0"), "onvif": f"127.0.0.1:{onvif}"},
        {"id": "gate", "url": sim.url("cam1"), "onvif": f"127.0.0.1:{onvif + 1}"},
        {"id": "dock-a", "url": sim.url("cam2"), "onvif": f"127.0.0.1:{onvif + 2}"},
        {"id": "dock-b", "url": sim.url("cam3"), "onvif": f"127.0.0.1:{onvif + 2}"},
        {"id": "gone", "url": sim.url("cam0"), "onvif": f"127.0.0.1:{dead}"},
    ]
    for camera in cameras:
        camera.update(username="admin", password=PASSWORD)
    wrong = {**cameras[1], "id": "gate-wrong", "password": "not-the-password"}
    config = tmp_path / "rec.yaml"
    storage = str(tmp_path / "storage")
    document = {"recorder": {"id": "rec-a", "listen": "127.0.0.1:1", "storage": storage, "api_token": "x" * 16}}
    config.write_text(yaml.safe_dump({**document, "cameras": [*cameras, wrong]}))

    code, found, output = identify(config)
    assert code == 1, output  # two cameras could not be identified
    lobby, gate, dock_a, dock_b = (found[c] for c in ("lobby", "gate", "dock-a", "dock-b"))
    # Two units of one model: the same model, told apart by serial, MAC and endpoint reference.
    assert (lobby["model"], gate["model"]) == ("DOME-4K", "DOME-4K") and lobby["manufacturer"] == "Acme"
    assert (lobby["serial"], gate["serial"]) == ("ACME-0001", "ACME-0002")
    assert (lobby["macs"], gate["macs"]) == (["00:11:22:33:44:01"], ["00:11:22:33:44:02"])
    assert lobby["endpoint"] == DEVICES[0]["endpoint"] and gate["endpoint"] == DEVICES[1]["endpoint"]
    assert lobby["video_sources"] == 1 and lobby["video_source"] == "VS0"
    # An encoder's channels: one device, two video sources, each camera its own.
    assert dock_a["serial"] == dock_b["serial"] == "ACME-ENC-7" and dock_a["video_sources"] == 2
    assert (dock_a["video_source"], dock_b["video_source"]) == ("VS0", "VS1")
    assert "NotAuthorized" in found["gate-wrong"]["error"], found["gate-wrong"]
    assert "cannot reach" in found["gone"]["error"], found["gone"]
    assert PASSWORD not in output and "not-the-password" not in output

    code, _found, output = identify(config, "--camera", "lobby", "--camera", "dock-b", "--write")
    assert code == 0, output
    stored = {c.id: c.identity for c in load_recorder_config(config).cameras}
    assert stored["lobby"] is not None and stored["lobby"].serial == "ACME-0001"
    assert stored["dock-b"] is not None and stored["dock-b"].video_source == "VS1"
    assert stored["gate"] is None  # not asked
    assert (tmp_path / "rec.yaml.bak").exists()

    # A DHCP server gives the first unit's address to the second: the same address, another camera.
    httpx.post(f"http://127.0.0.1:{sim.control_port}/onvif/swap", params={"a": 0, "b": 1}).raise_for_status()
    _code, found, output = identify(config, "--camera", "lobby")
    assert found["lobby"]["serial"] == "ACME-0002" and found["lobby"]["endpoint"] == DEVICES[1]["endpoint"], output


def test_the_management_server_identifies_its_cameras_and_stores_them(tmp_path, make_onvif_sim):
    sim, onvif = make_onvif_sim(DEVICES, 4, PASSWORD)
    port = free_port()
    camera = {"username": "admin", "password": PASSWORD}
    config = {
        "management": {"listen": f"127.0.0.1:{port}", "data": str(tmp_path / "mgmt"), "api_token": TOKEN},
        "recorders": [{"id": n, "url": f"http://127.0.0.1:{free_port()}", "token": TOKEN} for n in ("rec-a", "rec-b")],
        "clusters": [
            {
                "id": "main",
                "members": ["rec-a", "rec-b"],
                "cameras": [
                    {"id": "lobby", "url": sim.url("cam0"), "onvif": f"127.0.0.1:{onvif}", **camera},
                    {"id": "dock-b", "url": sim.url("cam3"), "onvif": f"127.0.0.1:{onvif + 2}", **camera},
                ],
            }
        ],
        "credentials": [{"id": "operators", "role": "viewer", "token": VIEWER}],
    }
    (tmp_path / "management.yaml").write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{port}"
    proc = Proc([*GAPLESS, "management", "--config", str(tmp_path / "management.yaml")], tmp_path / "m.log").start()
    try:
        admin = {"Authorization": f"Bearer {TOKEN}"}
        wait_for(lambda: httpx.get(f"{url}/api/v1/config", headers=admin).status_code == 200, 60, "management")
        refused = httpx.post(f"{url}/api/v1/cameras/identify", json={}, headers={"Authorization": f"Bearer {VIEWER}"})
        assert refused.status_code == 403, refused.text
        assert (
            httpx.post(f"{url}/api/v1/cameras/identify", json={"cameras": ["nope"]}, headers=admin).status_code == 404
        )
        command = [*GAPLESS, "cameras", "identify", "--management", url, "--token", TOKEN, "--json"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        answered = json.loads(done.stdout)
        assert answered["lobby"]["serial"] == "ACME-0001" and answered["dock-b"]["video_source"] == "VS1"
        assert "configuration version 2" in done.stderr
        stored = httpx.get(f"{url}/api/v1/config", headers=admin).json()
        assert stored["version"] == 2
        cameras = {c["id"]: c for c in stored["config"]["clusters"][0]["cameras"]}
        assert cameras["lobby"]["identity"]["endpoint"] == DEVICES[0]["endpoint"]
        assert cameras["dock-b"]["identity"]["serial"] == "ACME-ENC-7"
        assert cameras["lobby"]["password"] == "<redacted>"  # the camera's secret stays write-only
        assert PASSWORD not in done.stdout + done.stderr + (tmp_path / "m.log").read_text()
    finally:
        proc.stop()


def test_pairs_are_proposed_from_what_the_cameras_said(tmp_path, make_onvif_sim):
    """Two recorders name and address the same cameras differently; identified over ONVIF, they pair
    by hardware identity (auto), a camera without ONVIF by its stream source (asked, never exact);
    after a DHCP swap the address points at the other unit and the pairs follow the devices."""
    sim, onvif = make_onvif_sim(DEVICES, 4, PASSWORD)
    secret = {"username": "admin", "password": PASSWORD}
    host = f"127.0.0.1:{sim.rtsp_port}"
    side_a = [
        {"id": "lobby", "url": f"rtsp://{host}/cam0", "onvif": f"127.0.0.1:{onvif}", **secret},
        {"id": "gate", "url": f"rtsp://{host}/cam1", "onvif": f"127.0.0.1:{onvif + 1}", **secret},
        {"id": "yard", "url": f"rtsp://{host}/cam2-sub"},  # no ONVIF here
    ]
    side_b = [
        {"id": "entrance", "name": "Entrance hall", "url": f"rtsp://localhost:{sim.rtsp_port}/cam0",
         "onvif": f"localhost:{onvif}", **secret},
        {"id": "cam-17", "url": f"rtsp://{host}/cam1?subtype=1", "onvif": f"127.0.0.1:{onvif + 1}", **secret},
        {"id": "yard-main", "url": f"rtsp://viewer:pw@{host}/cam2"},
    ]  # fmt: skip
    files = []
    for name, cameras in (("rec-a", side_a), ("rec-b", side_b)):
        files.append(tmp_path / f"{name}.yaml")
        section = {"id": name, "listen": "127.0.0.1:1", "storage": str(tmp_path / name), "api_token": "x" * 16}
        files[-1].write_text(yaml.safe_dump({"recorder": section, "cameras": cameras}))
    for file in files:
        code, _found, output = identify(file, "--write")
        assert code == 1 and "yard" in output, output  # the cameras without ONVIF cannot say

    def proposals() -> tuple[dict, list]:
        command = [*GAPLESS, "pairs", "propose", "--a", str(files[0]), "--b", str(files[1]), "--json"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        mapping = json.loads(done.stdout)
        return {(p["a"], p["b"]): p for p in mapping["proposals"]}, mapping["warnings"]

    found, warnings = proposals()
    assert set(found) == {("lobby", "entrance"), ("gate", "cam-17"), ("yard", "yard-main")}, found
    assert found[("lobby", "entrance")]["auto_acceptable"] and found[("lobby", "entrance")]["kind"] == "identity"
    assert found[("gate", "cam-17")]["auto_acceptable"]
    yard = found[("yard", "yard-main")]
    assert yard["kind"] == "source" and yard["confidence"] < 1 and not yard["auto_acceptable"]
    assert not warnings

    # The DHCP server swaps the two units' addresses; rec-b identifies its cameras again.
    httpx.post(f"http://127.0.0.1:{sim.control_port}/onvif/swap", params={"a": 0, "b": 1}).raise_for_status()
    code, _found, output = identify(files[1], "--write", "--camera", "entrance", "--camera", "cam-17")
    assert code == 0, output
    found, warnings = proposals()
    assert ("lobby", "cam-17") in found and ("gate", "entrance") in found, found
    assert ("lobby", "entrance") not in found and ("gate", "cam-17") not in found
    assert any("the same address, but different devices" in w for w in warnings), warnings
