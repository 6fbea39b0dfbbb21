"""The standby third level (a pair's `standby`, docs/design/identity.md): a recorder that pulls a
paired camera only while neither side of the pair records it, and lets it go once one does again.

It reads the feeds every recorder publishes (cluster/feeds.py) and decides per camera, with
hysteresis: taken once both sides have shown no `recording` feed for TAKE_AFTER_S (a side whose
recorder died has no feed key at all), released once either side has recorded again for
RELEASE_AFTER_S. While the coordinator cannot be read the cameras taken stay taken (a standby that
cannot see the sides records rather than risk a hole; the sides backfill from it either way)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from gapless.cluster.coordinator import Coordinator, CoordinatorError
from gapless.cluster.keys import FEEDS_PREFIX
from gapless.config.cluster import StandbyCamera

log = logging.getLogger("gapless.standby")

TAKE_AFTER_S = 2.0
RELEASE_AFTER_S = 3.0
POLL_S = 0.5

#: (recorder, camera) -> its published feed state
Feeds = dict[tuple[str, str], str]


def read_feeds(coordinator: Coordinator) -> Feeds:
    kvs, _revision = coordinator.get_prefix(FEEDS_PREFIX)
    feeds: Feeds = {}
    for kv in kvs:
        recorder, _, camera = kv.key.removeprefix(FEEDS_PREFIX).partition("/")
        state = kv.value.get("state")
        if camera and isinstance(state, str):
            feeds[(recorder, camera)] = state
    return feeds


class StandbyChoice:
    """Which standby cameras to record now, from the sides' feeds over time (pure: a clock given)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.taken: set[str] = set()
        self.since: dict[str, float] = {}  # camera -> when the present condition to change began

    def update(self, cameras: list[StandbyCamera], feeds: Feeds) -> set[str]:
        now = self.clock()
        for standby in cameras:
            camera = standby.camera.id
            recorded = any(feeds.get((side.recorder, side.camera)) == "recording" for side in standby.watches)
            change = recorded if camera in self.taken else not recorded
            if not change:
                self.since.pop(camera, None)
                continue
            began = self.since.setdefault(camera, now)
            if now - began < (RELEASE_AFTER_S if camera in self.taken else TAKE_AFTER_S):
                continue
            self.since.pop(camera, None)
            if camera in self.taken:
                self.taken.discard(camera)
                log.warning("standby: %s records again on a side of its pair; released", camera)
            else:
                self.taken.add(camera)
                sides = " and ".join(str(side) for side in standby.watches)
                log.warning("standby: neither %s records %s; taking it", sides, camera)
        self.taken &= {standby.camera.id for standby in cameras}  # a pair removed meanwhile
        return set(self.taken)


class StandbyWatcher(threading.Thread):
    """Applies the choice (`apply(cameras to record)`) whenever it changes."""

    def __init__(
        self,
        coordinator: Coordinator,
        cameras: Callable[[], list[StandbyCamera]],
        apply: Callable[[set[str]], None],
    ) -> None:
        super().__init__(name="standby", daemon=True)
        self.coordinator, self.cameras, self.apply = coordinator, cameras, apply
        self.choice = StandbyChoice()
        self.applied: set[str] = set()
        self.stop_event = threading.Event()
        self.unreachable = False

    def run(self) -> None:
        while not self.stop_event.wait(POLL_S):
            try:
                feeds = read_feeds(self.coordinator)
            except CoordinatorError as exc:
                if not self.unreachable:
                    log.warning("standby: feeds unreadable, keeping %s: %s", sorted(self.applied) or "none", exc)
                self.unreachable = True
                continue
            self.unreachable = False
            wanted = self.choice.update(self.cameras(), feeds)
            if wanted != self.applied:
                self.apply(wanted)
                self.applied = wanted
        self.coordinator.close()

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=5)
