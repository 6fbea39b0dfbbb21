"""The token decision (cluster/decision.py), rule by rule as docs/design/ha.md numbers them, in
milliseconds: every case is one read of the cluster's keys, one member's situation, one answer.
The process-level tests (test_cluster.py, test_vip.py) check the same rules with real kills."""

from __future__ import annotations

import time

import pytest

from gapless.cluster.agent import HaAgent, MemberStatus
from gapless.cluster.coordinator import Coordinator, CoordinatorError, Event, KeyValue, Lease
from gapless.cluster.decision import (
    ClusterView,
    Follow,
    HandOver,
    Renew,
    Role,
    Situation,
    Take,
    Wait,
    clean_hand_over,
    decide,
    may_confirm_failsafe,
)
from gapless.cluster.embedded import EmbeddedCoordinator
from gapless.cluster.keys import holder_key, member_key, preferred_key, released_key, switchover_key

TTL = 1.0
NOW = 1000.0
A, B = "rec-a", "rec-b"  # A is the primary


def kv(key: str, value: dict, create: int = 7, mod: int = 7, lease: int = 0) -> KeyValue:
    return KeyValue(key, value, create, mod, lease)


def holder(member: str, lease: int = 11, fence: int = 7) -> KeyValue:
    return kv(holder_key("main"), {"member": member}, create=fence, mod=fence + 1, lease=lease)


def me(
    name: str,
    lease: int = 11,
    unfit: str | None = None,
    failback: str = "auto",
    started: float = NOW - 60,
    absent_since: float | None = None,
    ack_until: float = 0.0,
) -> Situation:
    return Situation(name, (A, B), failback, lease, TTL, started, unfit, absent_since, ack_until)


READY = {"ready": True, "unfit": None}
NOT_READY = {"ready": False, "unfit": None}
UNFIT = {"ready": False, "unfit": "storage writes failing for 5 s"}
SWITCH_TO_B = kv(switchover_key("main"), {"to": B}, mod=21)

CASES = [
    # rule 1: one holder; the key decides, and only on the lease it was created with
    ("holder renews its own key", ClusterView(holder=holder(A)), me(A), Renew(7)),
    ("another member holds it", ClusterView(holder=holder(B)), me(A), Follow(B, 7)),
    ("my key on an old lease is not mine", ClusterView(holder=holder(A, lease=5)), me(A, lease=11), Follow(A, 7)),
    # rule 4: failback and switchover
    (
        "non-preferred holder hands back once the preferred member is ready",
        ClusterView(holder=holder(B), members={A: READY}),
        me(B),
        HandOver("failback: the preferred member is ready", 7, 8),
    ),
    (
        "...but not before its backfill closed the gap",
        ClusterView(holder=holder(B), members={A: NOT_READY}),
        me(B),
        Renew(7),
    ),
    ("...nor while it is down", ClusterView(holder=holder(B)), me(B), Renew(7)),
    (
        "failback manual keeps the token",
        ClusterView(holder=holder(B), members={A: READY}),
        me(B, failback="manual"),
        Renew(7),
    ),
    (
        "a switchover moves it even with failback manual",
        ClusterView(holder=holder(A), preferred=B, members={B: READY}, switchover=SWITCH_TO_B),
        me(A, failback="manual"),
        HandOver("switchover", 7, 8, 21),
    ),
    (
        "a switchover waits for the target to be ready",
        ClusterView(holder=holder(A), preferred=B, members={B: NOT_READY}, switchover=SWITCH_TO_B),
        me(A),
        Renew(7),
    ),
    (
        "a preferred key naming a non-member is ignored",
        ClusterView(holder=holder(A), preferred="rec-z", members={B: READY}),
        me(A),
        Renew(7),
    ),
    # a free token
    ("the preferred member takes a free token at once", ClusterView(), me(A, started=NOW), Take("preferred member")),
    (
        "the other waits in its own first two TTLs",
        ClusterView(),
        me(B, started=NOW - 1.5 * TTL),
        Wait("just started: the preferred member may be starting too"),
    ),
    (
        "the other gives a live, fit preferred member two TTLs",
        ClusterView(members={A: NOT_READY}),
        me(B, absent_since=NOW - 1.5 * TTL),
        Wait("the preferred member is alive and fit: it has two TTLs to take the token"),
    ),
    (
        "then takes it",
        ClusterView(members={A: NOT_READY}),
        me(B, absent_since=NOW - 2 * TTL),
        Take("the preferred member did not take it"),
    ),
    (
        "the other takes it when the preferred member is down",
        ClusterView(),
        me(B),
        Take("the preferred member is down"),
    ),
    (
        "the other takes it when the preferred member is unfit",
        ClusterView(members={A: UNFIT}),
        me(B),
        Take("the preferred member is unfit (storage writes failing for 5 s)"),
    ),
    (
        "a switchover target takes a free token at once",
        ClusterView(preferred=B, members={A: READY}),
        me(B, started=NOW),
        Take("preferred member"),
    ),
    # rule 5: a member that cannot store does not hold the token
    (
        "an unfit holder hands over",
        ClusterView(holder=holder(A), members={B: READY}),
        me(A, unfit="storage writes failing for 5 s"),
        HandOver("storage writes failing for 5 s", 7, 8),
    ),
    ("an unfit member never takes", ClusterView(), me(A, unfit="disk full"), Wait("unfit: disk full")),
    # rule 6: a member that confirmed a peer's failsafe hold does not take the token for two TTLs
    (
        "no take right after confirming a failsafe hold",
        ClusterView(),
        me(A, ack_until=NOW + 0.5),
        Wait("a peer kept the token in failsafe moments ago"),
    ),
    ("...and takes it after", ClusterView(), me(A, ack_until=NOW - 0.01), Take("preferred member")),
]


@pytest.mark.parametrize(("case", "view", "situation", "expected"), CASES, ids=[c[0] for c in CASES])
def test_decide(case, view, situation, expected):
    assert decide(view, situation, NOW) == expected


def test_the_view_is_one_read_of_the_cluster_keys():
    kvs = [
        holder(B),
        kv(preferred_key("main"), {"member": B}),
        kv(member_key("main", A), READY),
        kv(member_key("main", "rec-z"), READY),  # not a member: ignored
        kv(released_key("main"), {"fence": 5, "member": A}),
        SWITCH_TO_B,
    ]
    view = ClusterView.of("main", kvs, [A, B])
    assert view.holder == holder(B) and view.preferred == B and view.switchover == SWITCH_TO_B
    assert dict(view.members) == {A: READY}
    assert clean_hand_over(view, last_fence=5) and not clean_hand_over(view, last_fence=6)
    assert not clean_hand_over(ClusterView(), last_fence=5)  # rule 7: no record, wait out the old identity


@pytest.mark.parametrize(
    ("reachable", "presenting", "asking", "confirms"),
    [
        (False, False, B, True),  # I cannot reach the coordinator either and do not hold: confirm
        (True, False, B, False),  # I can reach it: the asker should renew, not lean on me
        (False, True, B, False),  # I present myself: never two holders
        (False, False, A, False),  # a request in my own name
    ],
)
def test_failsafe_confirmation(reachable, presenting, asking, confirms):
    assert may_confirm_failsafe(reachable, presenting, asking, me=A) is confirms


def test_roles_that_hold():
    assert {r for r in Role if r.holds} == {Role.HOLDER, Role.FAILSAFE_HOLDER}


def test_a_step_deadline_bounds_every_call():
    """Timing: all calls of one agent step share one deadline, so slow calls in a row cannot push
    the next renewal past the lease (no server: the call would fail anyway, but must not be sent)."""
    coordinator = EmbeddedCoordinator("http://127.0.0.1:9", "x" * 16, timeout=0.25)
    try:
        assert coordinator.request_timeout() == 0.25
        with coordinator.deadline(time.monotonic() + 0.1):
            assert 0 < coordinator.request_timeout() <= 0.1
        with coordinator.deadline(time.monotonic() - 0.01), pytest.raises(CoordinatorError, match="deadline"):
            coordinator.get(holder_key("main"))
        assert coordinator.request_timeout() == 0.25  # the deadline ends with its step
    finally:
        coordinator.close()


class MemoryCoordinator(Coordinator):
    """The coordinator contract in memory, for driving the agent step by step."""

    def __init__(self) -> None:
        self.kvs: dict[str, KeyValue] = {}
        self.leases: set[int] = set()
        self.revision = 0

    def grant(self, ttl: float) -> Lease:
        self.leases.add(lease := len(self.leases) + 1)
        return Lease(lease, ttl)

    def keepalive(self, lease: int) -> bool:
        return lease in self.leases

    def revoke(self, lease: int) -> None:
        self.leases.discard(lease)
        self.kvs = {k: v for k, v in self.kvs.items() if v.lease != lease}

    def get(self, key: str) -> KeyValue | None:
        return self.kvs.get(key)

    def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        return [v for k, v in sorted(self.kvs.items()) if k.startswith(prefix)], self.revision

    def put(self, key: str, value: dict, lease: int = 0) -> int:
        self.revision += 1
        old = self.kvs.get(key)
        self.kvs[key] = KeyValue(key, value, old.create_revision if old else self.revision, self.revision, lease)
        return self.revision

    def create(self, key: str, value: dict, lease: int = 0) -> int | None:
        return None if key in self.kvs else self.put(key, value, lease)

    def replace(self, key: str, value: dict, mod_revision: int, lease: int = 0) -> int | None:
        old = self.kvs.get(key)
        return self.put(key, value, lease) if old and old.mod_revision == mod_revision else None

    def delete(self, key: str, mod_revision: int | None = None) -> bool:
        old = self.kvs.get(key)
        if old is None or (mod_revision is not None and old.mod_revision != mod_revision):
            return False
        del self.kvs[key]
        return True

    def watch(self, prefix: str, after_revision: int, timeout: float) -> list[Event]:
        return []


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def agent(name: str, coordinator: Coordinator, clock: Clock, status: MemberStatus | None = None) -> HaAgent:
    fit = status or MemberStatus(ready=True, backfill_open=0)
    return HaAgent("main", name, [A, B], coordinator, TTL, "auto", [], lambda: fit, clock=clock)


def test_a_holder_presents_only_until_its_renewal_plus_ttl_minus_margin():
    """Rule 1, timed by the agent's own clock: a holder that stops renewing (stalled, cut off)
    stops presenting at sent + TTL - TTL/4, before its lease can end, without any further step."""
    coordinator, clock = MemoryCoordinator(), Clock()
    a = agent(A, coordinator, clock)
    a._step()
    assert a.presenting() and a.state.role == Role.HOLDER and a.snapshot().holder == A
    fence = a.state.fence
    clock.now += 0.7
    a._step()  # renewed: valid from this send on
    clock.now += TTL - TTL / 4 - 0.01
    assert a.presenting(fence) and not a.presenting(fence + 1)
    clock.now += 0.02
    assert not a.presenting()  # no step ran: the deadline alone ends it
    a._enforce_deadline()
    assert a.state.role == Role.STANDBY and a.state.changes[-1].change == "lost"


def test_two_agents_never_both_present_and_the_token_comes_back_after_failback():
    coordinator, clock = MemoryCoordinator(), Clock()
    b_status = MemberStatus(ready=True, backfill_open=0)
    a_status = MemberStatus(ready=False, backfill_open=1)
    a = HaAgent("main", A, [A, B], coordinator, TTL, "auto", [], lambda: a_status, clock=clock)
    b = HaAgent("main", B, [A, B], coordinator, TTL, "auto", [], lambda: b_status, clock=clock)
    clock.now += 3 * TTL  # past both members' first two TTLs
    b._step()  # the preferred member A is down (no member key): B takes it
    assert b.presenting() and b.state.changes[-1].reason == "the preferred member is down"
    a._step()  # A comes back while its backfill runs: it follows
    assert not a.presenting() and a.state.role == Role.STANDBY and b.presenting()
    a_status = MemberStatus(ready=True, backfill_open=0)
    a._step()  # publishes ready
    b._step()  # failback: B hands over (identity first, then released, then the token)
    assert not b.presenting() and holder_key("main") not in coordinator.kvs
    a._step()
    assert a.presenting() and not b.presenting() and a.state.changes[-1].reason == "preferred member"
