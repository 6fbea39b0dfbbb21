"""Symmetrical cluster: token failover with real kills, a live HLS reader through the gateway that
must see every frame exactly once, backfill and automatic failback, and the coordinator or the
management server going away. Real processes on loopback (etcd: Debian's etcd-server)."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import time

import httpx
import pytest
from cluster_harness import (
    CAMERA,
    GATEWAY_TOKEN,
    VIEWER_TOKEN,
    LiveReader,
    assert_continuous,
    running_cluster,
    wait_holder,
)
from conftest import GAPLESS, TOKEN, Proc, audit_clean, free_port, wait_for

from gapless.client import GatewayClient


@pytest.fixture
def cluster(tmp_path, camera):
    with running_cluster(tmp_path, camera) as parts:
        yield parts


def changes(recorder) -> list[dict]:
    return recorder.api.get("/api/v1/cluster").json()["changes"]


def failover_and_back(management, a, b, fault: str, gateway_url: str | None = None) -> None:
    """Fault the primary with a live reader on the gateway (the management server's own, unless
    gateway_url names a standalone one); it fails over, comes back, backfills, takes the token back."""
    reader = LiveReader(gateway_url or management.url, CAMERA)
    reader.start()
    try:
        time.sleep(6)
        start = time.time()
        fence_a = management.cluster()["fence"]
        if fault == "kill":
            a.proc.kill()
        else:
            a.proc.pause()
        state = wait_holder(management, "rec-b", timeout=30)
        assert state["fence"] > fence_a
        time.sleep(8)  # the reader keeps playing from rec-b
        if fault == "kill":
            a.start()
        else:
            a.proc.resume()
            # Resumed after its lease expired: it must not act as holder, not even for one request.
            refused = a.api.get("/api/v1/cameras", headers={"X-Gapless-Fence": str(fence_a)})
            assert refused.status_code == 409, refused.text
            assert a.api.get("/api/v1/cluster").json()["presenting"] is False
        wait_holder(management, "rec-a", timeout=120)  # after its backfill closed the gap
        end = time.time()
        time.sleep(6)
    finally:
        reader.stop()
    assert_continuous(reader)
    taken = [c for c in changes(b) if c["change"] == "taken"]
    assert taken and "preferred member" in taken[-1]["reason"], changes(b)
    released = [c for c in changes(b) if c["change"] == "released"]
    assert released and "failback" in released[-1]["reason"], changes(b)
    metrics = b.api.get("/metrics").text
    assert 'gapless_token_changes_total{change="taken"}' in metrics and "gapless_cluster_presenting 0.0" in metrics
    audit_clean(a, CAMERA, start - 4, end - 2, arrival=fault == "kill")


def test_sigkill_primary_fails_over_and_back_with_no_frame_lost(tmp_path, cluster):
    management, a, b = cluster
    port = free_port()
    listen = f"127.0.0.1:{port}"
    gateway = Proc(
        [*GAPLESS, "gateway", "--management", management.url, "--token", GATEWAY_TOKEN, "--listen", listen],
        tmp_path / "gateway.log",
    ).start()
    try:
        url = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {VIEWER_TOKEN}"}

        def holder_known() -> dict | None:
            listed = httpx.get(f"{url}/api/v1/cameras", headers=headers).json()
            return listed if listed["cameras"] and listed["cameras"][0]["holder"] else None

        listed = wait_for(holder_known, 60, "the gateway to know the holder")
        assert listed["cameras"][0]["id"] == CAMERA and listed["cameras"][0]["holder"] == "rec-a"
        assert httpx.get(f"{url}/api/v1/cameras").status_code == 401
        failover_and_back(management, a, b, "kill", gateway_url=url)
    finally:
        gateway.stop()


def test_sigstop_primary_never_acts_as_holder_after_its_lease(cluster):
    management, a, b = cluster
    failover_and_back(management, a, b, "stop")


def test_switchover_command(tmp_path, cluster):
    management, _a, _b = cluster
    result = Proc(
        [*GAPLESS, "cluster", "switchover", "--management", management.url, "--token", TOKEN, "--cluster", "main"],
        tmp_path / "switchover.log",
    ).start()
    result.popen.wait(timeout=30)
    assert result.popen.returncode == 0, (tmp_path / "switchover.log").read_text()
    state = wait_holder(management, "rec-b", timeout=30)
    time.sleep(5)  # rec-b is now preferred: auto failback must not take it back to rec-a
    assert management.cluster()["fence"] == state["fence"]
    with GatewayClient(management.url, VIEWER_TOKEN) as gateway:  # the Python client, typed
        seen = gateway.cluster("main")
    assert seen.holder == "rec-b" and seen.fence == state["fence"] and seen.coordinator_reachable, seen
    bad = httpx.post(
        f"{management.url}/api/v1/clusters/main/switchover",
        json={"to": "rec-z"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert bad.status_code == 400 and "rec-z" in bad.json()["error"]


def test_failback_manual_keeps_the_token_until_a_switchover(tmp_path, camera):
    with running_cluster(tmp_path, camera, failback="manual") as (management, a, b):
        a.proc.kill()
        state = wait_holder(management, "rec-b", timeout=30)
        a.start()
        wait_for(
            lambda: next(m for m in management.cluster()["members"] if m["id"] == "rec-a")["ready"],
            120,
            "rec-a to be ready again (backfill done)",
        )
        time.sleep(5)  # with failback auto it would have taken the token back by now
        assert management.cluster()["holder"] == "rec-b" and management.cluster()["fence"] == state["fence"]
        switched = management.api.post("/api/v1/clusters/main/switchover", json={"to": "rec-a"})
        assert switched.status_code == 200 and switched.json() == {"cluster": "main", "from": "rec-b", "to": "rec-a"}
        wait_holder(management, "rec-a", timeout=30)
        released = [c for c in changes(b) if c["change"] == "released"]
        assert released and released[-1]["reason"] == "switchover", changes(b)


def test_config_change_reaches_both_members_and_bad_change_is_refused_whole(camera, cluster):
    management, a, b = cluster
    for path in ("/api/v1/config", "/api/v1/recorders/rec-a/config"):
        assert httpx.get(f"{management.url}{path}").status_code == 401
    assert httpx.post(f"{management.url}/coordinator/v1/kv/get", json={"key": "/"}).status_code == 401
    assert management.api.get("/api/v1/recorders/rec-z/config").status_code == 404
    current = management.api.get("/api/v1/config").json()
    document = current["config"]
    bad = copy.deepcopy(document)
    bad["clusters"][0]["cameras"].append({"id": CAMERA, "url": camera.url("cam0")})  # a duplicate id
    bad["clusters"][0]["lease_ttl"] = "5s"
    refused = management.api.put("/api/v1/config", json=bad)
    assert refused.status_code == 400 and "appears twice" in refused.json()["error"], refused.text
    assert management.api.get("/api/v1/config").json()["version"] == current["version"]

    document["clusters"][0]["cameras"].append({"id": "hall", "url": camera.url("cam0")})
    stale = management.api.put("/api/v1/config", json=document, headers={"If-Match": "999"})
    assert stale.status_code == 412
    accepted = management.api.put("/api/v1/config", json=document, headers={"If-Match": str(current["version"])})
    assert accepted.status_code == 200 and accepted.json()["version"] == current["version"] + 1
    for recorder in (a, b):
        wait_for(lambda r=recorder: "hall" in r.health()["cameras"], 60, f"{recorder.url} to record hall")
        recorder.wait_fragments("hall", 2)
    assert management.holder() == "rec-a"

    document["clusters"][0]["cameras"] = [c for c in document["clusters"][0]["cameras"] if c["id"] != "hall"]
    assert management.api.put("/api/v1/config", json=document).status_code == 200
    for recorder in (a, b):
        wait_for(lambda r=recorder: "hall" not in r.health()["cameras"], 60, f"{recorder.url} to drop hall")


@pytest.fixture
def slow_lease_cluster(tmp_path, camera):
    """A 3 s lease: failsafe holds the token only while every round's peer confirmation arrives within
    a fraction of the lease; in a minute of rounds with a 1 s lease, on a test machine that parallel
    workers keep busy, one can come late (the holder then rightly stops presenting until the
    coordinator is back)."""
    with running_cluster(tmp_path, camera, ttl="3s") as parts:
        yield parts


def test_management_down_for_a_minute_changes_nothing(slow_lease_cluster):
    management, a, b = slow_lease_cluster
    fence = management.cluster()["fence"]
    before_a, before_b = len(changes(a)), len(changes(b))
    start = time.time()
    management.proc.kill()
    killed = time.monotonic()
    wait_for(lambda: a.api.get("/api/v1/cluster").json()["role"] == "failsafe-holder", 30, "rec-a in failsafe")
    frames = {r: r.health()["cameras"][CAMERA]["frames"] for r in (a, b)}
    time.sleep(max(0.0, killed + 60 - time.monotonic()))  # the management server stays down a minute
    for r in (a, b):
        assert r.health()["cameras"][CAMERA]["frames"] > frames[r] + 1000, "recording stopped"
    assert a.api.get("/api/v1/cluster").json()["presenting"] is True
    management.start()
    wait_for(lambda: a.api.get("/api/v1/cluster").json()["role"] == "holder", 30, "rec-a back to holder")
    time.sleep(3)
    assert management.cluster()["holder"] == "rec-a" and management.cluster()["fence"] == fence
    assert len(changes(a)) == before_a and len(changes(b)) == before_b, (changes(a), changes(b))
    audit_clean(a, CAMERA, start, time.time() - 3)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_holder_whose_disk_fills_hands_the_token_over_and_loses_nothing(tmp_path, camera):
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], check=True)
    try:
        ballast = disk / "ballast"
        ballast.write_bytes(b"\0" * 6_000_000)
        with running_cluster(tmp_path, camera, storage_a=disk / "rec-a") as (management, a, b):
            start = time.time()
            wait_for(lambda: a.health()["storage"]["last_error"], 120, "rec-a's disk to fill up")
            status = management.api.get("/api/v1/recorders/status").json()["recorders"]  # the console's alert
            assert next(r for r in status if r["id"] == "rec-a")["storage_error"], status
            wait_holder(management, "rec-b", timeout=60)
            released = [c for c in changes(a) if c["change"] == "released"]
            assert released and "storage failing" in released[-1]["reason"], changes(a)
            assert management.cluster()["members"][0]["ready"] is False
            assert [c for c in changes(b) if c["change"] == "taken"], changes(b)
            ballast.unlink()
            wait_holder(management, "rec-a", timeout=120)  # healthy again, caught up: failback
            audit_clean(a, CAMERA, start, time.time() - 3)
    finally:
        subprocess.run(["umount", str(disk)], check=False)


class Etcd:
    """A 3-node etcd cluster on loopback (Debian's etcd-server)."""

    def __init__(self, tmp_path) -> None:
        self.clients = [free_port() for _ in range(3)]
        peers = [free_port() for _ in range(3)]
        initial = ",".join(f"n{i}=http://127.0.0.1:{peers[i]}" for i in range(3))
        self.nodes = []
        for i in range(3):
            args = [
                "etcd",
                "--name",
                f"n{i}",
                "--data-dir",
                str(tmp_path / f"etcd{i}"),
                "--listen-client-urls",
                f"http://127.0.0.1:{self.clients[i]}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{self.clients[i]}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{peers[i]}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{peers[i]}",
                "--initial-cluster",
                initial,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "gapless-test",
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "500",
            ]
            self.nodes.append(Proc(args, tmp_path / f"etcd{i}.log").start())
        try:
            wait_for(self.healthy, 60, "etcd cluster health")
        except AssertionError:
            self.close()
            raise

    @property
    def endpoints(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.clients]

    def healthy(self) -> bool:
        return all(httpx.get(f"{e}/health", timeout=2).json().get("health") == "true" for e in self.endpoints)

    def close(self) -> None:
        for node in self.nodes:
            node.stop()


@pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd not installed (apt-get install etcd-server)")
def test_etcd_backend_failover_with_an_etcd_node_killed(tmp_path, camera):
    etcd = Etcd(tmp_path)
    try:
        with running_cluster(tmp_path, camera, {"backend": "etcd", "endpoints": etcd.endpoints}) as (management, a, b):
            etcd.nodes[0].kill()  # the first endpoint every client tries
            failover_and_back(management, a, b, "kill")
    finally:
        etcd.close()
