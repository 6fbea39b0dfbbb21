"""The HA agent of a clustered recorder: who holds the cluster's representation token.

Both members record all the time; the agent only decides who *presents* the cluster (answers for
it through the gateway, holds the virtual IP). Every TTL/4, one step under one shared deadline:

    renew my lease ─┬─ ok ── publish my state ── read the cluster's keys once ── decide ── act
                    └─ coordinator unreachable ── failsafe: every peer confirms, or let go

What to do is `cluster/decision.py` (pure, table-tested); this module carries it out: the lease,
the holder's deadline (`presenting()` is computed at call time from the last renewal's send time,
so a process that was stalled and resumes does not act as holder for even one request), the clean
hand-over order, the failsafe round, and the identity watchdog. Invariants are numbered as in
docs/design/ha.md.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import httpx
from pydantic import ValidationError

from gapless.cluster.coordinator import Coordinator, CoordinatorError
from gapless.cluster.decision import (
    Action,
    ClusterView,
    Follow,
    HandOver,
    Renew,
    Role,
    Situation,
    Take,
    clean_hand_over,
    decide,
    may_confirm_failsafe,
)
from gapless.cluster.keys import cluster_prefix, holder_key, member_key, released_key, switchover_key
from gapless.contracts.recorder import FailsafeAnswer, FailsafeRequest, HaState, TokenChange

log = logging.getLogger("gapless.ha")

IDENTITY_INTERVAL_S = 0.1


@dataclass(frozen=True)
class Peer:
    id: str
    url: str
    token: str


@dataclass(frozen=True)
class MemberStatus:
    ready: bool  # recording every camera, and no backfill left to do
    backfill_open: int
    unfit: str | None = None  # why this member must not hold the token (e.g. its storage fails)


@dataclass
class AgentState:
    role: Role = Role.STARTING
    fence: int = 0
    holder: str | None = None
    lease: int = 0
    lease_ttl: float = 0.0
    valid_until: float = 0.0  # monotonic; presenting only before this
    coordinator_ok: bool = False
    coordinator_down_logged: bool = False  # once per outage, the first one (at start) included
    last_coordinator_ok: float = 0.0
    failsafe_ack_until: float = 0.0
    holder_absent_since: float | None = None
    present_from: float = 0.0  # monotonic; the identity is presented from then on (see Identity)
    changes: list[TokenChange] = field(default_factory=list)


class HaAgent(threading.Thread):
    def __init__(
        self,
        cluster: str,
        me: str,
        members: list[str],
        coordinator: Coordinator,
        ttl: float,
        failback: str,
        peers: list[Peer],
        status: Callable[[], MemberStatus],
        identity: Identity | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name=f"ha-{cluster}", daemon=True)
        self.cluster, self.me, self.members = cluster, me, members
        self.coordinator = coordinator
        self.ttl = ttl
        self.failback = failback
        self.peers = peers
        self.status = status
        self.identity = identity
        self.clock = clock
        self.state = AgentState()
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.http = httpx.Client(timeout=ttl / 4)
        self._published: dict | None = None
        self.identity_lock = threading.Lock()
        self.started = clock()
        self.watchdog = threading.Thread(target=self._identity_loop, name=f"ha-identity-{cluster}", daemon=True)

    # ---- what the rest of the recorder asks ------------------------------------------------
    @property
    def interval(self) -> float:
        return (self.state.lease_ttl or self.ttl) / 4

    @property
    def margin(self) -> float:
        return (self.state.lease_ttl or self.ttl) / 4

    def presenting(self, fence: int | None = None) -> bool:
        """True while this member may act as holder (with this fencing revision, if given)."""
        with self.lock:
            state = self.state
            if not state.role.holds or self.clock() >= state.valid_until:
                return False
            return fence is None or fence == state.fence

    def snapshot(self) -> HaState:
        with self.lock:
            state = self.state
            now = self.clock()
            return HaState(
                cluster=self.cluster,
                member=self.me,
                role=str(state.role) if state.role != Role.HOLDER or now < state.valid_until else "expiring",
                presenting=self.presenting_unlocked(now),
                holder=state.holder,
                fence=state.fence,
                lease_ttl=state.lease_ttl or self.ttl,
                lease_remaining=max(0.0, round(state.valid_until + self.margin - now, 3)) if state.role.holds else None,
                coordinator_reachable=state.coordinator_ok,
                changes=state.changes[-20:],
            )

    def presenting_unlocked(self, now: float) -> bool:
        return self.state.role.holds and now < self.state.valid_until

    def failsafe_ack(self, holder: str, fence: int) -> bool:
        """A peer holder asks, while the coordinator is unreachable, whether it may keep presenting."""
        with self.lock:
            state = self.state
            now = self.clock()
            reachable = state.coordinator_ok and now - state.last_coordinator_ok < self.ttl
            if not may_confirm_failsafe(reachable, self.presenting_unlocked(now), holder, self.me):
                return False
            state.failsafe_ack_until = self.clock() + 2 * self.ttl
            state.holder, state.fence = holder, fence
            return True

    def start(self) -> None:
        super().start()
        if self.identity is not None:
            self.watchdog.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=5)
        if self.watchdog.is_alive():
            self.watchdog.join(timeout=5)

    # ---- the loop ---------------------------------------------------------------------------
    def run(self) -> None:
        log.info("HA agent for cluster %s as %s (members %s, ttl %.1fs)", self.cluster, self.me, self.members, self.ttl)
        while not self.stop_event.is_set():
            started = self.clock()
            self._enforce_deadline()
            try:
                with self.coordinator.deadline(started + self.interval):
                    self._step()
            except CoordinatorError as exc:
                self._coordinator_down(exc)
            except Exception:  # a bug must not leave a holder presenting: let go, keep trying
                log.exception("HA agent step failed")
                self._withdraw("internal error")
            self.stop_event.wait(max(0.0, started + self.interval - self.clock()))
        self._release("recorder stopping")
        try:
            if self.state.lease:
                self.coordinator.revoke(self.state.lease)
        except CoordinatorError:
            pass
        self.http.close()

    def _enforce_deadline(self) -> None:
        with self.lock:
            state = self.state
            if state.role.holds and self.clock() >= state.valid_until:
                self._change_locked("lost", "lease could not be renewed in time", state.fence)
                state.role = Role.STANDBY

    def _step(self) -> None:
        """One round: renew (or get) the lease, publish this member's state, read the cluster's keys
        once, decide, act. Every coordinator call of the round ends by one shared deadline."""
        state = self.state
        sent = self.clock()
        if not state.lease:
            lease = self.coordinator.grant(self.ttl)
            with self.lock:
                state.lease, state.lease_ttl = lease.id, lease.ttl
                state.valid_until = 0.0
                self._published = None
            log.info("lease %d granted (ttl %.1fs)", lease.id, lease.ttl)
        elif not self.coordinator.keepalive(state.lease):
            log.warning("lease %d is gone (expired or revoked); taking a new one", state.lease)
            with self.lock:
                if state.role.holds:
                    self._change_locked("lost", "lease expired", state.fence)
                state.role, state.lease = Role.STANDBY, 0
            return
        with self.lock:
            state.coordinator_ok, state.last_coordinator_ok = True, self.clock()
            state.coordinator_down_logged = False
        status = self.status()
        self._publish(status)
        kvs, _revision = self.coordinator.get_prefix(cluster_prefix(self.cluster))
        view = ClusterView.of(self.cluster, kvs, self.members)
        now = self.clock()
        with self.lock:
            if view.holder is not None:
                state.holder_absent_since = None
            elif state.holder_absent_since is None:
                state.holder_absent_since = now
            situation = Situation(
                me=self.me,
                members=tuple(self.members),
                failback=self.failback,
                lease=state.lease,
                lease_ttl=state.lease_ttl,
                started=self.started,
                unfit=status.unfit,
                holder_absent_since=state.holder_absent_since,
                failsafe_ack_until=state.failsafe_ack_until,
            )
        self._act(decide(view, situation, now), view, sent)

    def _act(self, action: Action, view: ClusterView, sent: float) -> None:
        state = self.state
        if isinstance(action, Renew):
            with self.lock:
                if state.role == Role.FAILSAFE_HOLDER:
                    log.info("coordinator reachable again; still holder (fence %d)", action.fence)
                elif state.role != Role.HOLDER:  # resumed after its deadline, but the key is still ours
                    self._change_locked("taken", "renewed in time after a pause", action.fence)
                state.role, state.holder, state.fence = Role.HOLDER, self.me, action.fence
                state.valid_until = sent + state.lease_ttl - self.margin
            return
        if isinstance(action, HandOver):
            self._withdraw(action.reason)
            self._hand_over(action.fence, action.mod_revision)
            if action.switchover_revision is not None:
                self.coordinator.delete(switchover_key(self.cluster), action.switchover_revision)
            log.info("handed the token over (%s)", action.reason)
            return
        with self.lock:
            if isinstance(action, Follow):
                if state.role.holds:
                    self._change_locked("lost", f"{action.holder} holds the token", state.fence)
                state.role, state.holder, state.fence = Role.STANDBY, action.holder, action.fence
                return
            if state.role.holds:
                self._change_locked("lost", "the token key disappeared", state.fence)
                state.role = Role.STANDBY
        if isinstance(action, Take):
            self._take(action.reason, view, sent)

    def _take(self, reason: str, view: ClusterView, sent: float) -> None:
        state = self.state
        revision = self.coordinator.create(
            holder_key(self.cluster), {"member": self.me, "since_us": time.time_ns() // 1000}, state.lease
        )
        if revision is None:
            return
        clean = clean_hand_over(view, state.fence)
        delay = 0.0 if clean or self.identity is None else self.identity.takeover_delay()
        with self.lock:
            state.role, state.holder, state.fence = Role.HOLDER, self.me, revision
            state.valid_until = sent + state.lease_ttl - self.margin
            state.present_from = self.clock() + delay
            state.holder_absent_since = None
            self._change_locked("taken", reason, revision)

    def _publish(self, status: MemberStatus) -> None:
        value = {
            "ready": status.ready,
            "backfill_open": status.backfill_open,
            "role": str(self.state.role),
            "unfit": status.unfit,
        }
        if value != self._published:
            self.coordinator.put(member_key(self.cluster, self.me), value, self.state.lease)
            self._published = value

    # ---- coordinator down: failsafe ---------------------------------------------------------
    def _coordinator_down(self, exc: CoordinatorError) -> None:
        state = self.state
        with self.lock:
            if not state.coordinator_down_logged:
                log.warning("coordinator call failed: %s", exc)  # a timeout, or the HTTP status it refused with
                state.coordinator_down_logged = True
            state.coordinator_ok = False
            holding = state.role.holds
            if not holding:
                if state.role != Role.STANDBY:
                    state.role = Role.NO_COORDINATOR
                return
        sent = self.clock()
        acks = [self._ask_peer(peer) for peer in self.peers]
        with self.lock:
            if all(acks) and state.role.holds:
                if state.role == Role.HOLDER:
                    log.warning("failsafe: coordinator unreachable, every peer confirms; keeping the token")
                state.role = Role.FAILSAFE_HOLDER
                state.valid_until = max(state.valid_until, sent + state.lease_ttl - self.margin)

    def _ask_peer(self, peer: Peer) -> bool:
        try:
            reply = self.http.post(
                f"{peer.url.rstrip('/')}/api/v1/cluster/failsafe",
                json=FailsafeRequest(cluster=self.cluster, holder=self.me, fence=self.state.fence).model_dump(),
                headers={"Authorization": f"Bearer {peer.token}"},
            )
            return reply.status_code == 200 and FailsafeAnswer.model_validate_json(reply.content).ack
        except (httpx.HTTPError, ValidationError):
            return False

    # ---- identity ----------------------------------------------------------------------------
    def _withdraw(self, reason: str) -> None:
        with self.lock:
            if self.state.role.holds:
                self._change_locked("released", reason, self.state.fence)
            self.state.role = Role.STANDBY
            self.state.valid_until = 0.0

    def _release(self, reason: str) -> None:
        was_holder = self.presenting()
        fence = self.state.fence
        self._withdraw(reason)
        if was_holder and self.state.coordinator_ok:
            try:
                holder = self.coordinator.get(holder_key(self.cluster))
                if holder is not None and holder.value.get("member") == self.me and holder.create_revision == fence:
                    self._hand_over(fence, holder.mod_revision)
            except CoordinatorError:
                pass

    def _hand_over(self, fence: int, mod_revision: int) -> None:
        """Let go cleanly: identity removed now, then "released" recorded, then the token deleted,
        so the next holder may present at once."""
        if self.identity is not None:
            with self.identity_lock:
                self.identity.reconcile(lambda: 0.0)
        self.coordinator.put(released_key(self.cluster), {"fence": fence, "member": self.me})
        self.coordinator.delete(holder_key(self.cluster), mod_revision)

    def _identity_loop(self) -> None:
        """Keeps the identity in line with presenting(), in its own thread so a coordinator call
        that hangs in the agent's loop never delays withdrawing it."""
        identity = self.identity
        assert identity is not None  # the loop runs only for a cluster with an identity
        failures = 0
        while not self.stop_event.wait(IDENTITY_INTERVAL_S):
            try:
                # The state is read with the identity lock held: a hand-over withdraws the state,
                # then removes the identity under this lock, then lets the next holder present; a
                # decision read before the withdrawal and applied after the removal would put the
                # address back beside the next holder's (seen under load: 0.12 s on both members).
                with self.identity_lock:
                    identity.reconcile(self._presenting_for)
                failures = 0
            except Exception:
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    log.exception("identity: reconcile failed (%d times in a row)", failures)
        with self.identity_lock:
            try:
                identity.reconcile(lambda: 0.0)
            except Exception:
                log.exception("identity: could not withdraw at stop")

    def _presenting_for(self) -> float:
        """How many more seconds this member may present the identity now (0: not at all)."""
        now = self.clock()
        with self.lock:
            state = self.state
            presenting = self.presenting_unlocked(now) and now >= state.present_from
            return state.valid_until - now if presenting else 0.0

    def _change_locked(self, change: Literal["taken", "released", "lost"], reason: str, fence: int) -> None:
        event = TokenChange(at_us=time.time_ns() // 1000, change=change, reason=reason, fence=fence)
        self.state.changes.append(event)
        del self.state.changes[:-100]
        log.warning("token %s: cluster=%s member=%s fence=%d reason=%s", change, self.cluster, self.me, fence, reason)


class Identity(Protocol):
    """A network identity the holder presents (the virtual IP: gapless.cluster.vip.VirtualIP)."""

    def reconcile(self, remaining: Callable[[], float]) -> None:
        """Present for `remaining()` more seconds (≤ 0: do not present), asked right before acting
        (a process frozen after deciding must not act on the decision when it resumes)."""

    def takeover_delay(self) -> float:
        """How long to wait before presenting after taking the token from a holder that did not
        hand it over (it may still present until its own safety net removes the identity)."""
