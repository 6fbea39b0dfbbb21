"""People who sign in (issue #14): users with roles in the management store, Argon2id password
hashes, session tokens and one-time login links; viewers cannot act, operators can switch over
and start backfills, only admins manage users; a changed or removed user's sessions end at once;
sessions survive a restart; a standalone gateway signs users in through its management server."""

from __future__ import annotations

import concurrent.futures
import sqlite3
import subprocess

import httpx
import pytest
import yaml
from conftest import GAPLESS, TOKEN, Proc, free_port, wait_for

CLUSTER = "main"
GATEWAY = "gateway-credential-secret-1"
PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-22", "carol": "carol-password-333"}
ROLES = {"alice": "viewer", "bob": "operator", "carol": "admin"}


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def site(tmp_path):
    port = free_port()
    config = {
        "management": {"listen": f"127.0.0.1:{port}", "data": str(tmp_path / "mgmt"), "api_token": TOKEN},
        "recorders": [{"id": n, "url": f"http://127.0.0.1:{free_port()}", "token": TOKEN} for n in ("rec-a", "rec-b")],
        "clusters": [{"id": CLUSTER, "members": ["rec-a", "rec-b"], "cameras": [{"id": "door", "url": "rtsp://h/d"}]}],
        "credentials": [{"id": "gateway-1", "role": "gateway", "token": GATEWAY}],
    }
    (tmp_path / "management.yaml").write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{port}"

    def start() -> Proc:
        proc = Proc([*GAPLESS, "management", "--config", str(tmp_path / "management.yaml")], tmp_path / "m.log")
        proc.start()
        wait_for(lambda: httpx.get(f"{url}/api/v1/config", headers=bearer(TOKEN)).status_code == 200, 60, "management")
        return proc

    procs = [start()]
    try:
        yield url, tmp_path, lambda: procs.append(start()), procs
    finally:
        for proc in procs:
            proc.stop()


def cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*GAPLESS, *args], capture_output=True, text=True, timeout=60, **kwargs)


def login(url: str, user: str, password: str) -> httpx.Response:
    return httpx.post(f"{url}/api/v1/login", json={"user": user, "password": password}, timeout=10)


def test_users_sign_in_by_role_and_only_operators_act(site):
    url, tmp, restart, procs = site
    for name, role in ROLES.items():
        secret = tmp / f"{name}.password"
        secret.write_text(PASSWORDS[name] + "\n")
        added = cli("users", "add", name, "--role", role, "--password-file", str(secret), "--management", url,
                    "--token", TOKEN)  # fmt: skip
        assert added.returncode == 0, added.stderr
    listed = cli("users", "list", "--management", url, "--token", TOKEN)
    assert listed.stdout.split() == ["alice", "viewer", "bob", "operator", "carol", "admin"], listed.stdout
    assert cli("users", "add", "bob", "--role", "viewer", "--password-file", str(tmp / "bob.password"),
               "--management", url, "--token", TOKEN).returncode == 2  # fmt: skip  # the name is taken

    stored = sqlite3.connect(tmp / "mgmt" / "users.sqlite3").execute("SELECT password FROM users").fetchall()
    assert all(hashed.startswith("$argon2id$") for (hashed,) in stored), stored
    assert not any(p in hashed for (hashed,) in stored for p in PASSWORDS.values())

    wrong = login(url, "alice", "not-her-password")
    unknown = login(url, "mallory", "not-her-password")
    assert wrong.status_code == unknown.status_code == 401 and wrong.json() == unknown.json()  # names not told
    tokens = {}
    for name in ROLES:
        answer = login(url, name, PASSWORDS[name])
        assert answer.status_code == 200 and answer.json()["role"] == ROLES[name], answer.text
        tokens[name] = answer.json()["token"]

    me = httpx.get(f"{url}/api/v1/whoami", headers=bearer(tokens["alice"])).json()
    assert me == {"name": "user alice", "role": "viewer", "may_act": False, "may_configure": False}
    switchover = f"{url}/api/v1/clusters/{CLUSTER}/switchover"
    order = {"recorder": "rec-a", "camera": "door", "source": "rec-b", "start": "1700000000", "end": "1700000060"}
    refused = httpx.post(switchover, json={}, headers=bearer(tokens["alice"]))
    assert refused.status_code == 403 and "viewer" in refused.json()["error"], refused.text  # a viewer cannot act
    assert httpx.post(f"{url}/api/v1/backfill", json=order, headers=bearer(tokens["alice"])).status_code == 403
    assert httpx.get(f"{url}/api/v1/cameras", headers=bearer(tokens["alice"])).status_code == 200  # but may watch
    assert httpx.get(f"{url}/api/v1/events", headers=bearer(tokens["alice"])).status_code == 200

    assert httpx.post(switchover, json={"to": "rec-b"}, headers=bearer(tokens["bob"])).status_code == 200
    backfill = httpx.post(f"{url}/api/v1/backfill", json=order, headers=bearer(tokens["bob"]))
    assert backfill.status_code == 502 and "rec-a" in backfill.json()["error"]  # allowed; the recorder is not up
    assert httpx.get(f"{url}/api/v1/users", headers=bearer(tokens["bob"])).status_code == 403  # not an admin
    assert httpx.get(f"{url}/api/v1/users", headers=bearer(tokens["carol"])).status_code == 200

    # Demoted: bob's session ends at once; removed: alice's too.
    assert cli("users", "change", "bob", "--role", "viewer", "--management", url, "--token", TOKEN).returncode == 0
    assert httpx.post(switchover, json={}, headers=bearer(tokens["bob"])).status_code == 401
    assert cli("users", "remove", "alice", "--management", url, "--token", TOKEN).returncode == 0
    assert httpx.get(f"{url}/api/v1/cameras", headers=bearer(tokens["alice"])).status_code == 401
    assert login(url, "alice", PASSWORDS["alice"]).status_code == 401

    # A session outlives a restart of the management server; signing out ends it.
    procs[-1].stop()
    restart()
    assert httpx.get(f"{url}/api/v1/whoami", headers=bearer(tokens["carol"])).json()["role"] == "admin"
    assert httpx.delete(f"{url}/api/v1/login", headers=bearer(tokens["carol"])).status_code == 200
    assert httpx.get(f"{url}/api/v1/whoami", headers=bearer(tokens["carol"])).status_code == 401

    events = httpx.get(f"{url}/api/v1/events", params={"kind": "user"}, headers=bearer(TOKEN)).json()["events"]
    said = [e["message"] for e in events]
    assert "user bob added (operator) by management.api_token" in said and "bob signed in (operator)" in said, said
    assert any("sign-in refused for 'mallory'" in m for m in said), said
    log = (tmp / "m.log").read_text()
    for secret in [*PASSWORDS.values(), *tokens.values()]:
        assert secret not in log


def test_a_one_time_link_and_a_password_sign_in_on_a_standalone_gateway(site, tmp_path):
    url, tmp, _restart, procs = site
    admin = httpx.Client(base_url=url, headers=bearer(TOKEN), timeout=10)
    assert (
        admin.post("/api/v1/users", json={"name": "dave", "role": "operator", "password": "dave-pass"}).status_code
        == 201
    )
    assert admin.post("/api/v1/users", json={"name": "eve", "role": "viewer", "password": "short"}).status_code == 400

    port = free_port()
    gateway = Proc([*GAPLESS, "gateway", "--management", url, "--token", GATEWAY, "--listen", f"127.0.0.1:{port}"],
                   tmp / "gw.log").start()  # fmt: skip
    procs.append(gateway)
    console = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(f"{console}/").status_code == 200, 60, "the standalone gateway")

    linked = cli("users", "link", "dave", "--management", url, "--console", console, "--token", TOKEN)
    assert linked.returncode == 0, linked.stderr
    link = linked.stdout.strip()
    assert link.startswith(f"{console}/?token=")
    token = link.partition("?token=")[2]
    with httpx.Client(base_url=console, timeout=15) as browser:
        assert browser.get("/api/v1/cameras").status_code == 401
        assert browser.post("/api/v1/session", json={"token": token}).status_code == 200
        cookie = next(c for c in browser.cookies.jar if c.name == "gapless_session")
        assert cookie.has_nonstandard_attr("HttpOnly") and cookie.value != token
        assert browser.get("/api/v1/cameras").status_code == 200  # the user's session watches through the gateway
        assert browser.delete("/api/v1/session").status_code == 200
        assert browser.get("/api/v1/cameras").status_code == 401
    with httpx.Client(base_url=console, timeout=15) as again:
        assert again.post("/api/v1/session", json={"token": token}).status_code == 401  # a link works once

    with httpx.Client(base_url=console, timeout=15) as browser:
        assert browser.post("/api/v1/session", json={"user": "dave", "password": "wrong-password"}).status_code == 401
        assert browser.post("/api/v1/session", json={"user": "dave", "password": "dave-pass"}).status_code == 200
        assert browser.get("/api/v1/cameras").status_code == 200

    # Guessing one name's password stops after ten failures: the name is locked for a minute.
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        codes = list(pool.map(lambda _: login(url, "dave", "guess-guess").status_code, range(10)))
    assert codes == [401] * 10, codes
    assert login(url, "dave", "dave-pass").status_code == 429
    assert "dave-pass" not in (tmp / "gw.log").read_text() + (tmp / "m.log").read_text()
