"""The coordinator contract (gapless.cluster.coordinator), checked against both backends: the
embedded one served by a real `gapless management` process, and a real 1-node etcd."""

from __future__ import annotations

import shutil
import time

import pytest
import yaml
from conftest import GAPLESS, TOKEN, Proc, free_port, wait_for

from gapless.cluster.coordinator import CoordinatorError
from gapless.cluster.embedded import EmbeddedCoordinator
from gapless.cluster.etcd import EtcdCoordinator


def reachable(coordinator) -> bool:
    try:
        coordinator.get_prefix("/")
    except CoordinatorError:
        return False
    return True


@pytest.fixture(params=["embedded", "etcd"])
def coordinator(request, tmp_path):
    if request.param == "etcd":
        if shutil.which("etcd") is None:
            pytest.skip("etcd not installed (apt-get install etcd-server)")
        client, peer = free_port(), free_port()
        proc = Proc(
            [
                *("etcd", "--name", "solo", "--data-dir", str(tmp_path / "etcd")),
                *("--listen-client-urls", f"http://127.0.0.1:{client}"),
                *("--advertise-client-urls", f"http://127.0.0.1:{client}"),
                *("--listen-peer-urls", f"http://127.0.0.1:{peer}"),
                *("--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}"),
                *("--initial-cluster", f"solo=http://127.0.0.1:{peer}"),
                *("--heartbeat-interval", "50", "--election-timeout", "500"),
            ],
            tmp_path / "etcd.log",
        ).start()
        # A dead endpoint first: the client must move on to the live one within its timeout.
        made = EtcdCoordinator([f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{client}"], timeout=2.0)
    else:
        port = free_port()
        config = {"management": {"listen": f"127.0.0.1:{port}", "data": str(tmp_path / "mgmt"), "api_token": TOKEN}}
        (tmp_path / "m.yaml").write_text(yaml.safe_dump(config))
        proc = Proc([*GAPLESS, "management", "--config", str(tmp_path / "m.yaml")], tmp_path / "m.log").start()
        made = EmbeddedCoordinator(f"http://127.0.0.1:{port}", TOKEN, timeout=2.0)
    try:
        wait_for(lambda: reachable(made), 60, f"{request.param} coordinator")
        yield made
    finally:
        made.close()
        proc.stop()


def test_create_is_atomic_and_compare_and_set_checks_the_revision(coordinator):
    first = coordinator.create("/t/token", {"member": "a"})
    assert first is not None
    assert coordinator.create("/t/token", {"member": "b"}) is None
    kv = coordinator.get("/t/token")
    assert kv.value == {"member": "a"} and kv.create_revision == first == kv.mod_revision
    assert coordinator.replace("/t/token", {"member": "c"}, kv.mod_revision - 1) is None
    second = coordinator.replace("/t/token", {"member": "c"}, kv.mod_revision)
    assert second is not None and second > first
    assert coordinator.get("/t/token").create_revision == first  # the fencing revision stays
    assert coordinator.delete("/t/token", first) is False  # stale
    assert coordinator.delete("/t/token", second) is True
    assert coordinator.get("/t/token") is None
    again = coordinator.create("/t/token", {"member": "b"})
    assert again > second  # fencing revisions only grow


def test_a_lease_takes_its_keys_when_it_lapses_and_keepalive_holds_it(coordinator):
    kept, lapsing = coordinator.grant(1), coordinator.grant(1)
    assert kept.ttl >= 1 and lapsing.ttl >= 1
    coordinator.create("/t/kept", {"x": 1}, kept.id)
    coordinator.create("/t/lapsing", {"x": 2}, lapsing.id)
    deadline = time.monotonic() + 3 * kept.ttl
    while time.monotonic() < deadline:
        assert coordinator.keepalive(kept.id)
        time.sleep(kept.ttl / 4)
    assert coordinator.get("/t/kept") is not None
    assert coordinator.get("/t/lapsing") is None
    assert coordinator.keepalive(lapsing.id) is False
    coordinator.revoke(kept.id)
    assert coordinator.get("/t/kept") is None
    coordinator.revoke(kept.id)  # revoking an unknown lease is not an error


def test_watch_returns_changes_in_order_and_is_bounded(coordinator):
    keys, revision = coordinator.get_prefix("/w/")
    assert keys == []
    started = time.monotonic()
    assert coordinator.watch("/w/", revision, timeout=1.0) == []
    assert time.monotonic() - started < 10
    put = coordinator.put("/w/a", {"n": 1})
    coordinator.put("/other", {"n": 0})
    coordinator.delete("/w/a")
    events = []
    deadline = time.monotonic() + 10
    while len(events) < 2 and time.monotonic() < deadline:
        events += coordinator.watch("/w/", events[-1].revision if events else revision, timeout=1.0)
    assert [(e.kind, e.key) for e in events] == [("put", "/w/a"), ("delete", "/w/a")]
    assert events[0].revision == put and events[1].revision > put
    assert events[0].kv.value == {"n": 1}


def test_unreachable_coordinator_fails_within_the_timeout():
    for dead in (
        EmbeddedCoordinator(f"http://127.0.0.1:{free_port()}", TOKEN, timeout=1.0),
        EtcdCoordinator([f"http://127.0.0.1:{free_port()}"], timeout=1.0),
    ):
        started = time.monotonic()
        with pytest.raises(CoordinatorError):
            dead.grant(1)
        assert time.monotonic() - started < 10
        dead.close()
