"""The virtual IP in network namespaces this test creates (root only; no default route anywhere).

Layout: namespace "infra" holds a bridge (198.18.0.1/24), the camera simulator and the management
server (with its gateway); namespaces "a" and "b" each hold one recorder, whose interface gl0 is
plugged into the bridge (198.18.0.11 and .12). The cluster's VIP is 198.18.0.100/24 on gl0.
A sampler reads both namespaces' addresses every 20 ms for the whole test: the VIP must never be
on both at once. The test talks to everything from a thread that entered the infra namespace.
"""

from __future__ import annotations

import concurrent.futures
import os
import sys
import threading
import time
import uuid

import httpx
import pytest
import yaml
from cluster_harness import CAMERA, CREDENTIALS, RECORDER_TOKENS, LiveReader, assert_continuous
from conftest import GAPLESS, TOKEN, Proc, timing_sensitive, wait_for

from gapless.audit.audit import audit

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

VIP = "198.18.0.100"
INFRA_IP = "198.18.0.1"
MEMBER_IPS = {"rec-a": "198.18.0.11", "rec-b": "198.18.0.12"}
PORT = 7101
MGMT = f"http://{INFRA_IP}:7000"


class Lab:
    def __init__(self) -> None:
        from pyroute2 import netns

        tag = uuid.uuid4().hex[:6]
        self.infra = f"gl{tag}i"
        self.member_ns = {"rec-a": f"gl{tag}a", "rec-b": f"gl{tag}b"}
        self.netns = netns
        self.created: list[str] = []
        self.pool = None
        try:
            self._build()
        except Exception:
            self.close()
            raise

    def _build(self) -> None:
        from pyroute2 import NetNS

        netns = self.netns
        for name in (self.infra, *self.member_ns.values()):
            netns.create(name)
            self.created.append(name)
        with NetNS(self.infra) as ns:
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
            ns.link("add", ifname="br0", kind="bridge")
            bridge = ns.link_lookup(ifname="br0")[0]
            ns.addr("add", index=bridge, address=INFRA_IP, prefixlen=24)
            ns.link("set", index=bridge, state="up")
            for member, name in self.member_ns.items():
                ns.link("add", ifname=f"p-{member}", kind="veth", peer={"ifname": "gl0", "net_ns_fd": name})
                ns.link("set", index=ns.link_lookup(ifname=f"p-{member}")[0], master=bridge, state="up")
        for member, name in self.member_ns.items():
            with NetNS(name) as ns:
                ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
                gl0 = ns.link_lookup(ifname="gl0")[0]
                ns.addr("add", index=gl0, address=MEMBER_IPS[member], prefixlen=24)
                ns.link("set", index=gl0, state="up")
        self.pool = concurrent.futures.ThreadPoolExecutor(1, initializer=netns.setns, initargs=(self.infra,))

    def run(self, fn, timeout: float = 60):
        """Call fn in the infra namespace (sockets it opens live there)."""
        return self.pool.submit(fn).result(timeout=timeout)

    def port_state(self, member: str, state: str) -> None:
        from pyroute2 import NetNS

        with NetNS(self.infra) as ns:
            ns.link("set", index=ns.link_lookup(ifname=f"p-{member}")[0], state=state)

    def exec_in(self, member_or_infra: str) -> list[str]:
        """A command prefix that runs the rest inside the namespace (same PID, no iproute2 needed)."""
        name = self.member_ns.get(member_or_infra, self.infra)
        enter = (
            "import os, sys; from pyroute2 import netns; netns.setns(sys.argv[1]); os.execv(sys.argv[2], sys.argv[2:])"
        )
        return [sys.executable, "-c", enter, name]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        for name in self.created:
            self.netns.remove(name)


class Sampler(threading.Thread):
    """Who has the VIP, every 20 ms, read from each member namespace."""

    def __init__(self, lab: Lab) -> None:
        super().__init__(daemon=True)
        self.lab = lab
        self.stop_event = threading.Event()
        self.both: list[float] = []
        self.current: dict[str, bool] = {}

    def run(self) -> None:
        from pyroute2 import NetNS

        handles = {member: NetNS(name) for member, name in self.lab.member_ns.items()}
        try:
            while not self.stop_event.wait(0.02):
                seen = {m: any(a.get("IFA_ADDRESS") == VIP for a in h.get_addr()) for m, h in handles.items()}
                self.current = seen
                if all(seen.values()):
                    self.both.append(time.time())
        finally:
            for handle in handles.values():
                handle.close()

    def holder(self) -> str | None:
        owners = [m for m, has in self.current.items() if has]
        return owners[0] if len(owners) == 1 else None

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=10)


@pytest.fixture
def lab():
    made = Lab()
    yield made
    made.close()


@timing_sensitive
def test_vip_follows_the_token_and_is_never_on_both_members(tmp_path, lab):
    config = {
        "management": {"listen": f"{INFRA_IP}:7000", "data": str(tmp_path / "mgmt"), "api_token": TOKEN},
        "coordinator": {"backend": "embedded"},
        "recorders": [
            {"id": member, "url": f"http://{ip}:{PORT}", "token": TOKEN} for member, ip in MEMBER_IPS.items()
        ],
        "clusters": [
            {
                "id": "main",
                "members": ["rec-a", "rec-b"],
                "lease_ttl": "1s",
                "failback": "auto",
                "address": {"vip": f"{VIP}/24", "interface": "gl0"},
                "backfill": {"scan_interval": "10s"},
                "cameras": [{"id": CAMERA, "url": f"rtsp://{INFRA_IP}:8554/cam0"}],
            }
        ],
        "credentials": CREDENTIALS,
    }
    (tmp_path / "mgmt.yaml").write_text(yaml.safe_dump(config))
    procs: dict[str, Proc] = {}

    def start(name: str, args: list[str], where: str) -> None:
        procs[name] = Proc([*lab.exec_in(where), *GAPLESS, *args], tmp_path / f"{name}.log").start()

    def start_member(member: str) -> None:
        path = tmp_path / f"{member}.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "recorder": {
                        "id": member,
                        "listen": f"0.0.0.0:{PORT}",
                        "storage": str(tmp_path / member),
                        "api_token": TOKEN,
                    },
                    "management": {"url": MGMT, "token": RECORDER_TOKENS[member]},
                }
            )
        )
        start(member, ["recorder", "--config", str(path)], member)

    api = lab.run(lambda: httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5))

    def get(url: str) -> httpx.Response:
        return lab.run(lambda: api.get(url))

    def holder() -> str | None:
        return get(f"{MGMT}/api/v1/clusters/main").json()["holder"]

    def via_vip() -> str:
        return get(f"http://{VIP}:{PORT}/api/v1/cluster").json()["member"]

    sampler = Sampler(lab)
    reader = None
    try:
        start("sim", ["camera-sim", "--host", INFRA_IP, "--port", "8554", "--control-port", "8555"], "infra")
        start("mgmt", ["management", "--config", str(tmp_path / "mgmt.yaml")], "infra")
        wait_for(lambda: get(f"{MGMT}/api/v1/config").status_code == 200, 120, "management")
        start_member("rec-a")
        start_member("rec-b")
        sampler.start()
        wait_for(lambda: holder() == "rec-a" and sampler.holder() == "rec-a", 60, "rec-a to hold token and VIP")
        wait_for(lambda: via_vip() == "rec-a", 30, "the VIP to answer as rec-a")

        class InfraReader(LiveReader):
            def run(self) -> None:
                lab.netns.setns(lab.infra)
                super().run()

        reader = lab.run(lambda: InfraReader(MGMT, CAMERA))
        reader.start()
        time.sleep(6)

        # 1. Cut rec-a's namespace off: it cannot renew, so it withdraws the VIP itself.
        window_start = time.time()
        lab.port_state("rec-a", "down")
        wait_for(lambda: holder() == "rec-b", 30, "rec-b to take the token")
        wait_for(lambda: sampler.holder() == "rec-b", 30, "the VIP on rec-b")
        wait_for(lambda: via_vip() == "rec-b", 30, "the VIP to answer as rec-b (gratuitous ARP)")
        time.sleep(6)
        lab.port_state("rec-a", "up")
        wait_for(lambda: holder() == "rec-a" and sampler.holder() == "rec-a", 120, "failback to rec-a")

        # 2. Freeze rec-a: it cannot withdraw anything; the kernel lifetime and the takeover delay
        #    still keep the VIP off two members at once.
        time.sleep(4)
        procs["rec-a"].pause()
        wait_for(lambda: holder() == "rec-b" and sampler.holder() == "rec-b", 30, "rec-b to hold token and VIP")
        time.sleep(4)
        procs["rec-a"].resume()
        wait_for(lambda: holder() == "rec-a" and sampler.holder() == "rec-a", 120, "failback to rec-a again")
        window_end = time.time() - 2
        time.sleep(6)
        rec_a = f"http://{MEMBER_IPS['rec-a']}:{PORT}"
        wait_for(
            lambda: not lab.run(lambda: audit(rec_a, TOKEN, CAMERA, str(window_start - 4), str(window_end))).lost,
            120,
            "rec-a's archive to be complete after both outages",
        )
    finally:
        if reader is not None:
            reader.stop()
        sampler.stop()
        for proc in reversed(list(procs.values())):
            proc.stop()
        lab.run(api.close)
    assert sampler.both == [], f"the VIP was on both members at {sampler.both[:5]}"
    assert_continuous(reader)


def test_an_add_decided_before_a_freeze_is_taken_back():
    """VirtualIP asks how long it may present right before adding the address, and again after: a
    process frozen between the two (SIGSTOP) resumes past its right to present, and the address it
    added on a stale decision is removed at once (the process test above saw it on both members)."""
    from pyroute2 import NetNS, netns

    from gapless.cluster.vip import VirtualIP

    name = f"gl{uuid.uuid4().hex[:6]}u"
    netns.create(name)
    pool = concurrent.futures.ThreadPoolExecutor(1, initializer=netns.setns, initargs=(name,))
    try:
        with NetNS(name) as ns:
            ns.link("add", ifname="gl0", kind="veth", peer="gl1")  # no dummy links in every kernel
            for link in ("gl0", "gl1"):
                ns.link("set", index=ns.link_lookup(ifname=link)[0], state="up")

            def present() -> bool:
                return any(a.get("IFA_ADDRESS") == VIP for a in ns.get_addr(index=ns.link_lookup(ifname="gl0")[0]))

            vip = VirtualIP(f"{VIP}/24", "gl0")
            pool.submit(vip.reconcile, lambda: 3.0).result(timeout=30)
            assert present()
            pool.submit(vip.reconcile, lambda: 0.0).result(timeout=30)
            assert not present()
            answers = iter([3.0, 0.0])  # may present when asked; frozen; past its right when asked again
            pool.submit(vip.reconcile, lambda: next(answers)).result(timeout=30)
            assert not present()
            assert next(answers, None) is None, "asked once only"
    finally:
        pool.shutdown(wait=True)
        netns.remove(name)
