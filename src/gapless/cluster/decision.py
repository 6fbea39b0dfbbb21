"""What a cluster member does next about the representation token: a pure function of one read of
the cluster's keys and of the member's own situation (no clock, no I/O), so that every rule of
docs/design/ha.md is a table of cases in tests/test_decision.py. The HA agent (agent.py) reads,
calls `decide`, and carries the action out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from gapless.cluster.coordinator import KeyValue
from gapless.cluster.keys import holder_key, member_key, preferred_key, released_key, switchover_key


class Role(StrEnum):
    STARTING = "starting"
    HOLDER = "holder"
    FAILSAFE_HOLDER = "failsafe-holder"  # holder while the coordinator is unreachable, peers confirming
    STANDBY = "standby"
    NO_COORDINATOR = "no-coordinator"

    @property
    def holds(self) -> bool:
        return self in (Role.HOLDER, Role.FAILSAFE_HOLDER)


@dataclass(frozen=True)
class ClusterView:
    """The cluster's keys as one range read found them."""

    holder: KeyValue | None = None
    preferred: str | None = None  # named by a switchover (may be stale: `decide` checks membership)
    members: Mapping[str, dict] = field(default_factory=dict)  # each member's published state
    switchover: KeyValue | None = None
    released: KeyValue | None = None

    @classmethod
    def of(cls, cluster: str, kvs: list[KeyValue], members: list[str]) -> ClusterView:
        by_key = {kv.key: kv for kv in kvs}
        chosen = by_key.get(preferred_key(cluster))
        return cls(
            holder=by_key.get(holder_key(cluster)),
            preferred=chosen.value.get("member") if chosen else None,
            members={m: by_key[member_key(cluster, m)].value for m in members if member_key(cluster, m) in by_key},
            switchover=by_key.get(switchover_key(cluster)),
            released=by_key.get(released_key(cluster)),
        )


@dataclass(frozen=True)
class Situation:
    """This member, as it knows itself (times are monotonic seconds)."""

    me: str
    members: tuple[str, ...]  # the first is the primary
    failback: str  # "auto" | "manual"
    lease: int
    lease_ttl: float
    started: float
    unfit: str | None = None  # why this member must not hold the token (its storage fails)
    holder_absent_since: float | None = None  # since when no member holds the token
    failsafe_ack_until: float = 0.0  # confirmed a peer's failsafe hold: do not take until then


# ---- actions ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Renew:
    """I hold the token: present it until my renewal's send time + TTL - margin."""

    fence: int


@dataclass(frozen=True)
class HandOver:
    """Let go cleanly: withdraw the identity, record `released`, delete the token (and the
    switchover request it answers)."""

    reason: str
    fence: int
    mod_revision: int
    switchover_revision: int | None = None


@dataclass(frozen=True)
class Take:
    """Create the holder key on my lease."""

    reason: str


@dataclass(frozen=True)
class Follow:
    """Another member holds the token."""

    holder: str
    fence: int


@dataclass(frozen=True)
class Wait:
    """Nobody holds the token and it is not mine to take yet."""

    reason: str


Action = Renew | HandOver | Take | Follow | Wait


def preferred_member(view: ClusterView, situation: Situation) -> str:
    """The member that holds the token whenever it is ready: the one a switchover named, else the first."""
    return view.preferred if view.preferred in situation.members else situation.members[0]


def decide(view: ClusterView, me: Situation, now: float) -> Action:
    """The next step about the token (rules numbered as in docs/design/ha.md)."""
    holder = view.holder
    preferred = preferred_member(view, me)
    if holder is not None and holder.value.get("member") == me.me and holder.lease == me.lease:
        if me.unfit:  # rule 5: a member that cannot store does not hold the token
            return HandOver(me.unfit, holder.create_revision, holder.mod_revision)
        if preferred != me.me:  # rule 4: back to the preferred member once it is ready
            other = view.members.get(preferred)
            switchover = view.switchover
            asked = switchover is not None and switchover.value.get("to") == preferred
            if other is not None and other.get("ready") and (me.failback == "auto" or asked):
                reason = "switchover" if asked else "failback: the preferred member is ready"
                revision = switchover.mod_revision if switchover is not None else None
                return HandOver(reason, holder.create_revision, holder.mod_revision, revision)
        return Renew(holder.create_revision)
    if holder is not None:  # rule 1: someone else holds it (or my own key from an older lease)
        return Follow(str(holder.value.get("member")), holder.create_revision)
    if me.unfit:
        return Wait(f"unfit: {me.unfit}")
    if now < me.failsafe_ack_until:  # rule 6: a peer held it in failsafe moments ago
        return Wait("a peer kept the token in failsafe moments ago")
    if preferred == me.me:
        return Take("preferred member")
    if now - me.started < 2 * me.lease_ttl:
        return Wait("just started: the preferred member may be starting too")
    other = view.members.get(preferred)
    absent_for = now - (me.holder_absent_since if me.holder_absent_since is not None else now)
    if other is not None and not other.get("unfit"):
        if absent_for < 2 * me.lease_ttl:
            return Wait("the preferred member is alive and fit: it has two TTLs to take the token")
        return Take("the preferred member did not take it")
    if other is None:
        return Take("the preferred member is down")
    return Take(f"the preferred member is unfit ({other['unfit']})")


def clean_hand_over(view: ClusterView, last_fence: int) -> bool:
    """Whether the holder I last saw recorded that it let go (identity withdrawn) before the token
    was deleted: then I may present at once, else only after the old identity's lifetime (rule 7)."""
    return view.released is not None and view.released.value.get("fence") == last_fence


def may_confirm_failsafe(coordinator_reachable: bool, presenting: bool, asking: str, me: str) -> bool:
    """Rule 6: confirm a peer's failsafe hold only if I cannot reach the coordinator either and I do
    not hold the token myself."""
    return not coordinator_reachable and not presenting and asking != me
