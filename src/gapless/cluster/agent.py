"""The HA agent of a clustered recorder: who holds the cluster's representation token.

Both members record all the time; the agent only decides who *presents* the cluster (answers for
it through the gateway, holds the virtual IP). One small state machine, run every `ttl / 4`:

    renew my lease ─┬─ ok ──────────── read the holder key ── holder: me / other / nobody
                    └─ coordinator unreachable ── failsafe: every peer confirms, or let go

Rules (numbered as in docs/design/ha.md):
1. The token is the key `/gapless/clusters/<id>/holder`, created atomically on the holder's lease.
   Its create_revision is the fencing revision; every holder action carries it.
2. A holder presents the identity only until `sent + ttl - margin`, where `sent` is when its last
   successful renewal (or failsafe round) was sent. `presenting()` computes this at call time,
   so a process that was stalled and resumes does not act as holder for even one request.
3. The preferred member (the first, or the one a switchover named) takes a free token at once;
   the other takes it only when the preferred one is down or unfit, or left it free for 2 TTLs,
   and not in its own first 2 TTLs (at a cold start both members come up together).
4. A holder that is not preferred hands the token back when the preferred member is ready (its
   backfill has closed the gap) and failback is auto, or when a switchover asks: it stops
   presenting first, then deletes the key.
5. Coordinator unreachable: a holder keeps presenting only while every peer confirms, directly,
   that it cannot reach the coordinator either and is not holder. A peer that confirmed does not
   take the token for 2 TTLs after, even once the coordinator is back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from gapless.cluster.coordinator import Coordinator, CoordinatorError
from gapless.cluster.keys import holder_key, member_key, preferred_key, released_key, switchover_key

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
class TokenChange:
    at_us: int
    change: str  # "taken" | "released" | "lost"
    reason: str
    fence: int


@dataclass
class AgentState:
    role: str = "starting"  # starting | holder | standby | failsafe-holder | no-coordinator
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
    ) -> None:
        super().__init__(name=f"ha-{cluster}", daemon=True)
        self.cluster, self.me, self.members = cluster, me, members
        self.coordinator = coordinator
        self.ttl = ttl
        self.failback = failback
        self.peers = peers
        self.status = status
        self.identity = identity
        self.state = AgentState()
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.http = httpx.Client(timeout=ttl / 4)
        self._published: dict | None = None
        self.identity_lock = threading.Lock()
        self.started = time.monotonic()
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
            if state.role not in ("holder", "failsafe-holder") or time.monotonic() >= state.valid_until:
                return False
            return fence is None or fence == state.fence

    def snapshot(self) -> dict:
        with self.lock:
            state = self.state
            now = time.monotonic()
            return {
                "cluster": self.cluster,
                "member": self.me,
                "role": state.role if state.role != "holder" or now < state.valid_until else "expiring",
                "presenting": self.presenting_unlocked(now),
                "holder": state.holder,
                "fence": state.fence,
                "lease_ttl": state.lease_ttl or self.ttl,
                "lease_remaining": max(0.0, round(state.valid_until + self.margin - now, 3))
                if state.role in ("holder", "failsafe-holder")
                else None,
                "coordinator_reachable": state.coordinator_ok,
                "changes": [c.__dict__ for c in state.changes[-20:]],
            }

    def presenting_unlocked(self, now: float) -> bool:
        return self.state.role in ("holder", "failsafe-holder") and now < self.state.valid_until

    def failsafe_ack(self, holder: str, fence: int) -> bool:
        """A peer holder asks, while the coordinator is unreachable, whether it may keep presenting."""
        with self.lock:
            state = self.state
            reachable = state.coordinator_ok and time.monotonic() - state.last_coordinator_ok < self.ttl
            if reachable or self.presenting_unlocked(time.monotonic()) or holder == self.me:
                return False
            state.failsafe_ack_until = time.monotonic() + 2 * self.ttl
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
            started = time.monotonic()
            self._enforce_deadline()
            try:
                self._step()
            except CoordinatorError as exc:
                self._coordinator_down(exc)
            except Exception:  # a bug must not leave a holder presenting: let go, keep trying
                log.exception("HA agent step failed")
                self._withdraw("internal error")
            self.stop_event.wait(max(0.0, started + self.interval - time.monotonic()))
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
            if state.role in ("holder", "failsafe-holder") and time.monotonic() >= state.valid_until:
                self._change_locked("lost", "lease could not be renewed in time", state.fence)
                state.role = "standby"

    def _step(self) -> None:
        state = self.state
        if not state.lease:
            sent = time.monotonic()
            lease = self.coordinator.grant(self.ttl)
            with self.lock:
                state.lease, state.lease_ttl = lease.id, lease.ttl
                state.valid_until = 0.0
                self._published = None
            log.info("lease %d granted (ttl %.1fs)", lease.id, lease.ttl)
        else:
            sent = time.monotonic()
            if not self.coordinator.keepalive(state.lease):
                log.warning("lease %d is gone (expired or revoked); taking a new one", state.lease)
                with self.lock:
                    if state.role in ("holder", "failsafe-holder"):
                        self._change_locked("lost", "lease expired", state.fence)
                    state.role, state.lease = "standby", 0
                return
        with self.lock:
            state.coordinator_ok, state.last_coordinator_ok = True, time.monotonic()
            state.coordinator_down_logged = False
        status = self.status()
        self._publish(status)
        holder = self.coordinator.get(holder_key(self.cluster))
        preferred = self._preferred()
        if holder is not None and holder.value.get("member") == self.me and holder.lease == state.lease:
            if status.unfit:
                self._withdraw(status.unfit)
                self._hand_over(holder.create_revision, holder.mod_revision)
                return
            self._as_holder(sent, holder.create_revision, holder.mod_revision, preferred)
        elif holder is not None:
            with self.lock:
                if state.role in ("holder", "failsafe-holder"):
                    self._change_locked("lost", f"{holder.value.get('member')} holds the token", state.fence)
                state.role, state.holder, state.fence = "standby", holder.value.get("member"), holder.create_revision
                state.holder_absent_since = None
        else:
            self._maybe_take(sent, preferred, status)

    def _preferred(self) -> str:
        chosen = self.coordinator.get(preferred_key(self.cluster))
        member = chosen.value.get("member") if chosen else None
        return member if member in self.members else self.members[0]

    def _publish(self, status: MemberStatus) -> None:
        value = {
            "ready": status.ready,
            "backfill_open": status.backfill_open,
            "role": self.state.role,
            "unfit": status.unfit,
        }
        if value != self._published:
            self.coordinator.put(member_key(self.cluster, self.me), value, self.state.lease)
            self._published = value

    def _as_holder(self, sent: float, fence: int, mod_revision: int, preferred: str) -> None:
        state = self.state
        if preferred != self.me:
            other = self.coordinator.get(member_key(self.cluster, preferred))
            request = self.coordinator.get(switchover_key(self.cluster))
            asked = request is not None and request.value.get("to") == preferred
            if other is not None and other.value.get("ready") and (self.failback == "auto" or asked):
                reason = "switchover" if asked else "failback: the preferred member is ready"
                self._withdraw(reason)
                self._hand_over(fence, mod_revision)
                if request is not None:
                    self.coordinator.delete(switchover_key(self.cluster), request.mod_revision)
                log.info("handed the token to %s (%s)", preferred, reason)
                return
        with self.lock:
            if state.role == "failsafe-holder":
                log.info("coordinator reachable again; still holder (fence %d)", fence)
            elif state.role != "holder":  # resumed after its deadline, but the key is still ours
                self._change_locked("taken", "renewed in time after a pause", fence)
            state.role = "holder"
            state.holder, state.fence = self.me, fence
            state.valid_until = sent + state.lease_ttl - self.margin
            state.holder_absent_since = None

    def _maybe_take(self, sent: float, preferred: str, status: MemberStatus) -> None:
        state = self.state
        now = time.monotonic()
        with self.lock:
            if state.role in ("holder", "failsafe-holder"):
                self._change_locked("lost", "the token key disappeared", state.fence)
                state.role = "standby"
            if status.unfit:
                return
            if state.holder_absent_since is None:
                state.holder_absent_since = now
            absent_for = now - state.holder_absent_since
            if now < state.failsafe_ack_until:
                return  # a peer held the token in failsafe moments ago: give it time to come back
        if preferred != self.me:
            if now - self.started < 2 * state.lease_ttl:
                return  # just started: the preferred member may be starting too
            other = self.coordinator.get(member_key(self.cluster, preferred))
            if other is not None and not other.value.get("unfit") and absent_for < 2 * state.lease_ttl:
                return  # the preferred member is alive and fit: give it two TTLs to take the token
            if other is None:
                reason = "the preferred member is down"
            elif other.value.get("unfit"):
                reason = f"the preferred member is unfit ({other.value['unfit']})"
            else:
                reason = "the preferred member did not take it"
        else:
            reason = "preferred member"
        revision = self.coordinator.create(
            holder_key(self.cluster), {"member": self.me, "since_us": time.time_ns() // 1000}, state.lease
        )
        if revision is None:
            return
        released = self.coordinator.get(released_key(self.cluster))
        # Clean: the holder we last saw recorded that it let go (identity withdrawn) before deleting.
        clean = released is not None and released.value.get("fence") == state.fence
        delay = 0.0 if clean or self.identity is None else self.identity.takeover_delay()
        with self.lock:
            state.role, state.holder, state.fence = "holder", self.me, revision
            state.valid_until = sent + state.lease_ttl - self.margin
            state.present_from = time.monotonic() + delay
            state.holder_absent_since = None
            self._change_locked("taken", reason, revision)

    # ---- coordinator down: failsafe ---------------------------------------------------------
    def _coordinator_down(self, exc: CoordinatorError) -> None:
        state = self.state
        with self.lock:
            if not state.coordinator_down_logged:
                log.warning("coordinator unreachable or refusing: %s", exc)
                state.coordinator_down_logged = True
            state.coordinator_ok = False
            holding = state.role in ("holder", "failsafe-holder")
            if not holding:
                if state.role != "standby":
                    state.role = "no-coordinator"
                return
        sent = time.monotonic()
        acks = [self._ask_peer(peer) for peer in self.peers]
        with self.lock:
            if all(acks) and state.role in ("holder", "failsafe-holder"):
                if state.role == "holder":
                    log.warning("failsafe: coordinator unreachable, every peer confirms; keeping the token")
                state.role = "failsafe-holder"
                state.valid_until = max(state.valid_until, sent + state.lease_ttl - self.margin)

    def _ask_peer(self, peer: Peer) -> bool:
        try:
            reply = self.http.post(
                f"{peer.url.rstrip('/')}/api/v1/cluster/failsafe",
                json={"cluster": self.cluster, "holder": self.me, "fence": self.state.fence},
                headers={"Authorization": f"Bearer {peer.token}"},
            )
            return reply.status_code == 200 and reply.json().get("ack") is True
        except (httpx.HTTPError, ValueError):
            return False

    # ---- identity ----------------------------------------------------------------------------
    def _withdraw(self, reason: str) -> None:
        with self.lock:
            if self.state.role in ("holder", "failsafe-holder"):
                self._change_locked("released", reason, self.state.fence)
            self.state.role = "standby"
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
                self.identity.reconcile(0)
        self.coordinator.put(released_key(self.cluster), {"fence": fence, "member": self.me})
        self.coordinator.delete(holder_key(self.cluster), mod_revision)

    def _identity_loop(self) -> None:
        """Keeps the identity in line with presenting(), in its own thread so a coordinator call
        that hangs in the agent's loop never delays withdrawing it."""
        identity = self.identity
        assert identity is not None  # the loop runs only for a cluster with an identity
        failures = 0
        while not self.stop_event.wait(IDENTITY_INTERVAL_S):
            now = time.monotonic()
            with self.lock:
                state = self.state
                presenting = self.presenting_unlocked(now) and now >= state.present_from
                remaining = state.valid_until - now if presenting else 0.0
            try:
                with self.identity_lock:
                    identity.reconcile(remaining)
                failures = 0
            except Exception:
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    log.exception("identity: reconcile failed (%d times in a row)", failures)
        with self.identity_lock:
            try:
                identity.reconcile(0)
            except Exception:
                log.exception("identity: could not withdraw at stop")

    def _change_locked(self, change: str, reason: str, fence: int) -> None:
        event = TokenChange(time.time_ns() // 1000, change, reason, fence)
        self.state.changes.append(event)
        del self.state.changes[:-100]
        log.warning("token %s: cluster=%s member=%s fence=%d reason=%s", change, self.cluster, self.me, fence, reason)


class Identity(Protocol):
    """A network identity the holder presents (the virtual IP: gapless.cluster.vip.VirtualIP)."""

    def reconcile(self, remaining_s: float) -> None:
        """Present for `remaining_s` more seconds (≤ 0: do not present)."""

    def takeover_delay(self) -> float:
        """How long to wait before presenting after taking the token from a holder that did not
        hand it over (it may still present until its own safety net removes the identity)."""
