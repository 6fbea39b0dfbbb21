"""Least privilege (issue #11): each credential does what its role allows and nothing else, secrets
are write-only, files holding them are private, and a recorder's credential rotates while it records."""

from __future__ import annotations

import copy
import hashlib
import os
import stat
import time

import httpx
import pytest
import yaml
from cluster_harness import CAMERA, CLUSTER, RECORDER_TOKENS, running_cluster, wait_holder
from conftest import GAPLESS, TOKEN, Proc, audit_clean, free_port, wait_for

REC = {name: f"{name}-credential-secret-01" for name in ("rec-a", "rec-b", "rec-c", "rec-d")}
RECORDER_API_TOKENS = {name: f"{name}-api-token-secret-01" for name in REC}
VIEWER, GATEWAY = "viewer-credential-secret-1", "gateway-credential-secret-1"
CAMERA_PASSWORD, URL_PASSWORD = "camera-password-secret-1", "url-password-secret-1"
SECRETS = [*REC.values(), *RECORDER_API_TOKENS.values(), VIEWER, GATEWAY, CAMERA_PASSWORD, URL_PASSWORD, TOKEN]
HOLDER, OTHER_PREFIX = f"/gapless/clusters/{CLUSTER}/holder", "/gapless/clusters/other/"


@pytest.fixture
def management(tmp_path):
    port = free_port()
    config = {
        "management": {"listen": f"127.0.0.1:{port}", "data": str(tmp_path / "mgmt"), "api_token": TOKEN},
        "recorders": [
            {"id": name, "url": f"http://127.0.0.1:{free_port()}", "token": token}
            for name, token in RECORDER_API_TOKENS.items()
        ],
        "clusters": [
            {
                "id": CLUSTER,
                "members": ["rec-a", "rec-b"],
                "cameras": [
                    {"id": "door", "url": f"rtsp://admin:{URL_PASSWORD}@127.0.0.1:8554/door"},
                    {"id": "yard", "url": "rtsp://127.0.0.1:8554/yard", "username": "u", "password": CAMERA_PASSWORD},
                ],
            },
            {"id": "other", "members": ["rec-c", "rec-d"]},
        ],
        "credentials": [
            *({"id": f"{name}-key", "role": "recorder", "recorder": name, "token": t} for name, t in REC.items()),
            {"id": "operators", "role": "viewer", "token": VIEWER},
            {"id": "gateway-1", "role": "gateway", "token": GATEWAY},
        ],
    }
    (tmp_path / "management.yaml").write_text(yaml.safe_dump(config))
    proc = Proc([*GAPLESS, "management", "--config", str(tmp_path / "management.yaml")], tmp_path / "m.log").start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{url}/api/v1/config", headers=bearer(TOKEN)).status_code == 200, 60, "management")
        yield url, tmp_path
    finally:
        proc.stop()


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def coordinator(url: str, token: str, op: str, **body) -> httpx.Response:
    return httpx.post(f"{url}/coordinator/v1/{op}", json=body, headers=bearer(token), timeout=10)


def test_each_credential_can_do_only_what_its_role_allows(management):
    url, tmp_path = management

    def get(path: str, token: str) -> httpx.Response:
        return httpx.get(f"{url}{path}", headers=bearer(token), timeout=10)

    assert httpx.get(f"{url}/api/v1/config").status_code == 401
    assert get("/api/v1/config", "not-a-credential-at-all").status_code == 401

    # A recorder reads its own configuration (its peer's media token included: backfill needs it).
    own = get("/api/v1/recorders/rec-a/config", REC["rec-a"])
    assert own.status_code == 200 and own.json()["peers"][0]["token"] == RECORDER_API_TOKENS["rec-b"]
    for path in ("/api/v1/recorders/rec-b/config", "/api/v1/config", "/api/v1/recorders", "/api/v1/gateway/config"):
        refused = get(path, REC["rec-a"])
        assert refused.status_code == 403 and "rec-a-key" in refused.json()["error"], (path, refused.text)
    document = get("/api/v1/config", TOKEN).json()["config"]
    assert httpx.put(f"{url}/api/v1/config", json=document, headers=bearer(REC["rec-a"])).status_code == 403
    switchover = httpx.post(f"{url}/api/v1/clusters/{CLUSTER}/switchover", json={}, headers=bearer(REC["rec-a"]))
    assert switchover.status_code == 403

    # rec-b holds the token; rec-a's credential cannot take it, delete it, or end rec-b's lease.
    lease_b = coordinator(url, REC["rec-b"], "lease/grant", ttl=60).json()["id"]
    taken = coordinator(url, REC["rec-b"], "kv/create", key=HOLDER, value={"member": "rec-b"}, lease=lease_b)
    assert taken.status_code == 200 and taken.json()["succeeded"]
    holder = coordinator(url, REC["rec-a"], "kv/get", key=HOLDER)
    assert holder.status_code == 200 and holder.json()["kv"]["value"]["member"] == "rec-b"
    lease_a = coordinator(url, REC["rec-a"], "lease/grant", ttl=60).json()["id"]
    mod_revision = holder.json()["kv"]["mod_revision"]
    attempts = {
        "delete the holder key": ("kv/delete", {"key": HOLDER}),
        "replace the holder key": (
            "kv/replace",
            {"key": HOLDER, "value": {"member": "rec-a"}, "mod_revision": mod_revision},
        ),
        "put the holder key": ("kv/put", {"key": HOLDER, "value": {"member": "rec-a"}, "lease": lease_a}),
        "revoke rec-b's lease": ("lease/revoke", {"id": lease_b}),
        "renew rec-b's lease": ("lease/keepalive", {"id": lease_b}),
        "write rec-b's member key": ("kv/put", {"key": f"/gapless/clusters/{CLUSTER}/members/rec-b", "value": {}}),
        "write on rec-b's lease": (
            "kv/put",
            {"key": f"/gapless/clusters/{CLUSTER}/members/rec-a", "value": {}, "lease": lease_b},
        ),
        "write the preferred key": ("kv/put", {"key": f"/gapless/clusters/{CLUSTER}/preferred", "value": {}}),
        "read another cluster": ("kv/get", {"prefix": OTHER_PREFIX}),
        "watch every cluster": ("watch", {"prefix": "/gapless/", "after_revision": 0, "timeout": 0}),
    }
    for what, (op, body) in attempts.items():
        refused = coordinator(url, REC["rec-a"], op, **body)
        assert refused.status_code == 403, (what, refused.status_code, refused.text)
    mine = coordinator(
        url, REC["rec-a"], "kv/put", key=f"/gapless/clusters/{CLUSTER}/members/rec-a", value={"ok": 1}, lease=lease_a
    )
    assert mine.status_code == 200 and mine.json()["succeeded"]
    assert coordinator(url, REC["rec-c"], "kv/get", key=HOLDER).status_code == 403  # another cluster's member
    still = coordinator(url, TOKEN, "kv/get", key=HOLDER).json()["kv"]
    assert still["value"]["member"] == "rec-b" and still["lease"] == lease_b

    # A viewer watches media and nothing else; a gateway reads what it routes with, and no camera secret.
    assert get("/api/v1/cameras", VIEWER).status_code == 200
    assert get("/api/v1/config", VIEWER).status_code == 403
    assert coordinator(url, VIEWER, "kv/get", key=HOLDER).status_code == 403
    routing = get("/api/v1/gateway/config", GATEWAY)
    assert (
        routing.status_code == 200 and routing.json()["config"]["recorders"][0]["token"] in RECORDER_API_TOKENS.values()
    )
    assert CAMERA_PASSWORD not in routing.text and URL_PASSWORD not in routing.text and VIEWER not in routing.text
    assert coordinator(url, GATEWAY, "kv/get", prefix="/gapless/clusters/").status_code == 200
    assert coordinator(url, GATEWAY, "kv/delete", key=HOLDER).status_code == 403
    assert get("/api/v1/config", GATEWAY).status_code == 403

    # Secrets are write-only: never read back, not even hashed, and not in the log.
    shown = get("/api/v1/config", TOKEN).text
    hashes = [hashlib.sha256(s.encode()).hexdigest() for s in SECRETS]
    assert not [s for s in SECRETS + hashes if s in shown], shown
    assert "<redacted>" in shown
    log = (tmp_path / "m.log").read_text()
    assert not [s for s in SECRETS + hashes if s in log]

    # Files holding secrets are the owner's alone.
    data = tmp_path / "mgmt"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for path in data.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, f"{path.name} is {oct(path.stat().st_mode)}"


def test_secrets_round_trip_redacted_and_a_redacted_unknown_secret_is_refused(management):
    url, _tmp_path = management
    admin = httpx.Client(base_url=url, headers=bearer(TOKEN), timeout=10)
    current = admin.get("/api/v1/config").json()
    document = current["config"]
    document["clusters"][0]["lease_ttl"] = "2s"  # change one thing, send every secret back redacted
    assert admin.put("/api/v1/config", json=document).status_code == 200
    managed = httpx.get(f"{url}/api/v1/recorders/rec-a/config", headers=bearer(REC["rec-a"])).json()
    assert managed["cluster"]["lease_ttl"] == 2.0
    cameras = {c["id"]: c for c in managed["cluster"]["cameras"]}
    assert URL_PASSWORD in cameras["door"]["url"] and cameras["yard"]["password"] == CAMERA_PASSWORD
    assert managed["peers"][0]["token"] == RECORDER_API_TOKENS["rec-b"]

    for change in ("recorder", "credential", "camera url"):
        bad = copy.deepcopy(document)
        if change == "recorder":
            bad["recorders"].append({"id": "rec-e", "url": "http://127.0.0.1:1", "token": "<redacted>"})
        elif change == "credential":
            bad["credentials"].append({"id": "new", "role": "viewer", "token": "<redacted>"})
        else:
            bad["clusters"][0]["cameras"][0]["url"] = "rtsp://admin:<redacted>@127.0.0.1:8554/elsewhere"
        refused = admin.put("/api/v1/config", json=bad)
        assert refused.status_code == 400 and "no such stored secret" in refused.json()["error"], (change, refused.text)
    assert admin.get("/api/v1/config").json()["version"] == current["version"] + 1


def test_a_recorder_credential_rotates_while_it_records_and_holds_the_token(tmp_path, sim):
    """Add a second credential, swap the recorder's token file, remove the first: the recorder keeps
    its token (same fencing revision), its lease, its configuration polls and every frame."""
    with running_cluster(tmp_path, sim) as (management, a, _b):
        admin = management.api
        start = time.time()
        fence = wait_holder(management, "rec-a")["fence"]
        pid = a.proc.popen.pid
        new_token = "rec-a-credential-0000000002"

        document = admin.get("/api/v1/config").json()["config"]
        document["credentials"].append(
            {"id": "rec-a-key-2", "role": "recorder", "recorder": "rec-a", "token": new_token}
        )
        assert admin.put("/api/v1/config", json=document).status_code == 200
        token_file = tmp_path / "rec-a.credential"
        replacement = tmp_path / "rec-a.credential.new"
        replacement.write_text(new_token + "\n")
        os.replace(replacement, token_file)
        time.sleep(3)  # several coordinator rounds with the new credential while both are valid
        document = admin.get("/api/v1/config").json()["config"]
        document["credentials"] = [c for c in document["credentials"] if c["id"] != "rec-a-key-1"]
        document["clusters"][0]["cameras"].append({"id": "hall", "url": sim.url("cam0")})
        assert admin.put("/api/v1/config", json=document).status_code == 200

        old = httpx.get(f"{management.url}/api/v1/recorders/rec-a/config", headers=bearer(RECORDER_TOKENS["rec-a"]))
        assert old.status_code == 401
        wait_for(lambda: "hall" in a.health()["cameras"], 60, "rec-a to apply a change polled with its new credential")
        a.wait_fragments("hall", 2)
        time.sleep(3)
        state = management.cluster()
        assert state["holder"] == "rec-a" and state["fence"] == fence, state
        assert a.proc.popen.pid == pid and a.proc.popen.poll() is None
        log = (tmp_path / "rec-a.log").read_text()
        # Never refused (a coordinator call that timed out under load is not a refusal).
        assert "HTTP 401" not in log and "HTTP 403" not in log, log
        audit_clean(a, CAMERA, start, time.time() - 2)
