"""The coordinator's key layout, in one place: the HA agent writes these keys, the gateway and the
management server read them, the embedded coordinator's policy scopes credentials by them."""

from __future__ import annotations

import enum

ROOT = "/gapless/"
PREFIX = "/gapless/clusters/"
#: Every recorder's feed health, per camera, under the recorder's lease (cluster/feeds.py).
FEEDS_PREFIX = "/gapless/feeds/"


def recorder_feeds_prefix(recorder: str) -> str:
    return f"{FEEDS_PREFIX}{recorder}/"


def feed_key(recorder: str, camera: str) -> str:
    """{"state": "recording" | "lagging" | "down", "backfill_open": n} of one recorder's camera;
    gone with its lease."""
    return f"{FEEDS_PREFIX}{recorder}/{camera}"


def cluster_prefix(cluster: str) -> str:
    """Every key of one cluster (one range read gives the HA agent the whole picture)."""
    return f"{PREFIX}{cluster}/"


def holder_key(cluster: str) -> str:
    return f"{PREFIX}{cluster}/holder"


def member_key(cluster: str, member: str) -> str:
    return f"{PREFIX}{cluster}/members/{member}"


def preferred_key(cluster: str) -> str:
    """Set by a switchover: the member that holds the token whenever it is ready (default: the first)."""
    return f"{PREFIX}{cluster}/preferred"


def released_key(cluster: str) -> str:
    """Written by a holder that let go cleanly (identity withdrawn) just before it deletes the token."""
    return f"{PREFIX}{cluster}/released"


def switchover_key(cluster: str) -> str:
    """A pending switchover request ({"to": member}); the holder deletes it when it hands over."""
    return f"{PREFIX}{cluster}/switchover"


class KeyKind(enum.Enum):
    HOLDER = "holder"
    MEMBER = "member"
    FEED = "feed"


def parse_key(key: str) -> tuple[KeyKind, str, str] | None:
    """(kind, cluster or recorder, member or camera) of a holder, member or feed key; None for others."""
    if key.startswith(FEEDS_PREFIX):
        recorder, _, camera = key.removeprefix(FEEDS_PREFIX).partition("/")
        return (KeyKind.FEED, recorder, camera) if recorder and camera else None
    if key.startswith(PREFIX):
        cluster, _, rest = key.removeprefix(PREFIX).partition("/")
        if rest == "holder":
            return KeyKind.HOLDER, cluster, ""
        if rest.startswith("members/") and rest.count("/") == 1:
            return KeyKind.MEMBER, cluster, rest.removeprefix("members/")
    return None
