"""Where the gateway sends a camera's requests: the recorders to ask, in order, each with the
camera's id there.

A cluster camera goes to the token holder first (with its fencing revision), then the other
member. A paired camera (two independent recorders, docs/design/identity.md) goes to the side
whose feed records: the primary while its feed is `recording`, else the secondary when its feed
is; back to the primary only once its feed has recorded for FAILBACK_HOLD_S (a flapping feed does
not flap viewers), and with the pair's `failback: backfilled` only once its backfill of the camera
is done. Each camera is routed alone: the other cameras of the same recorder stay."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from gapless.config.cluster import CameraPair, CameraRef

log = logging.getLogger("gapless.gateway")

FAILBACK_HOLD_S = 3.0


@dataclass(frozen=True)
class Source:
    recorder: str
    camera: str  # the camera's id on that recorder
    fence: int | None = None  # the holder's fencing revision (clusters)


@dataclass(frozen=True)
class Route:
    name: str  # for answers and logs: "cluster main", "pair lobby"
    sources: list[Source]  # asked in this order


@dataclass(frozen=True)
class Feed:
    """One recorder's published health of one camera (cluster/feeds.py)."""

    state: str  # recording | lagging | down
    backfill_open: int = 0


#: (recorder, camera) -> its feed, or None when the recorder publishes nothing (down, or not yet).
FeedOf = Callable[[str, str], Feed | None]
#: Told (camera, its primary recorder, what happened) when a paired camera is routed elsewhere.
OnRoute = Callable[[str, str, str], None]


class PairRouting:
    """The active side of every pair, chosen from the feeds' published health."""

    def __init__(
        self, feed_of: FeedOf, clock: Callable[[], float] = time.monotonic, on_route: OnRoute | None = None
    ) -> None:
        self.feed_of, self.clock, self.on_route = feed_of, clock, on_route
        self.lock = threading.Lock()
        self.on_secondary: set[tuple[str, str]] = set()
        self.primary_back_since: dict[tuple[str, str], float] = {}

    def route(self, pair: CameraPair) -> Route:
        """The active side first, then the other; the pair's standby first while neither side
        records and it does (it records only then: cluster/standby.py)."""
        primary, secondary = pair.a, pair.b
        key = (primary.recorder, primary.camera)
        with self.lock:
            use_secondary = self._decide(key, primary, secondary, pair.failback == "backfilled")
        first, second = (secondary, primary) if use_secondary else (primary, secondary)
        sources = [Source(first.recorder, first.camera), Source(second.recorder, second.camera)]
        if pair.standby is not None:
            standby = Source(pair.standby, primary.camera)
            sides_down = not (self._records(primary) or self._records(secondary))
            sources = [standby, *sources] if sides_down and self._records(standby) else [*sources, standby]
        return Route(f"pair {primary.camera}", sources)

    def _records(self, side: CameraRef | Source) -> bool:
        feed = self.feed_of(side.recorder, side.camera)
        return feed is not None and feed.state == "recording"

    def active(self, pair: CameraPair) -> CameraRef:
        first = self.route(pair).sources[0]
        return CameraRef(recorder=first.recorder, camera=first.camera)

    def _decide(self, key: tuple[str, str], primary: CameraRef, secondary: CameraRef, wait_backfill: bool) -> bool:
        primary_feed = self.feed_of(primary.recorder, primary.camera)
        secondary_feed = self.feed_of(secondary.recorder, secondary.camera)
        primary_ok = primary_feed is not None and primary_feed.state == "recording"
        secondary_ok = secondary_feed is not None and secondary_feed.state == "recording"
        if key not in self.on_secondary:
            if not primary_ok and secondary_ok:
                self.on_secondary.add(key)
                self._said(primary, f"{primary}'s feed is not recording; routed to {secondary}")
                return True
            return False
        if not primary_ok:
            self.primary_back_since.pop(key, None)
            return True
        assert primary_feed is not None  # it records
        if wait_backfill and primary_feed.backfill_open and secondary_ok:  # the hold starts once it is whole
            self.primary_back_since.pop(key, None)
            return True
        since = self.primary_back_since.setdefault(key, self.clock())
        if self.clock() - since < FAILBACK_HOLD_S and secondary_ok:
            return True
        self.on_secondary.discard(key)
        self.primary_back_since.pop(key, None)
        self._said(primary, f"{primary} records again; routed back to it")
        return False

    def _said(self, primary: CameraRef, what: str) -> None:
        log.warning("pair %s: %s", primary.camera, what)
        if self.on_route is not None:
            self.on_route(primary.camera, primary.recorder, f"pair {primary.camera}: {what}")


#: Pair sides whose holdings of an export's range differ by less than this tie (the active side's
#: file wins): a backfilled primary lacks up to a GOP of the secondary's at each hole's start
#: (docs/design/backfill.md), which is no reason to export the other profile instead.
EXPORT_TIE_US = 2_000_000


def export_order(held_us: list[int]) -> list[int]:
    """The order to ask a pair's sides (given in routing order, the active side first) for an
    export, from how much of the range each holds: those within EXPORT_TIE_US of the most first,
    in routing order, then the rest by what they hold."""
    tied = max(held_us, default=0) - EXPORT_TIE_US
    return sorted(range(len(held_us)), key=lambda i: (0, 0) if held_us[i] > tied else (1, -held_us[i]))
