"""Each recorder publishes, per camera, whether its feed records: `recording`, `lagging` (connected
but no fragment for a while) or `down`, and its open backfill jobs, under a lease of its own, so a
recorder that dies takes its keys with it within the lease TTL. The gateway re-routes a paired
camera by these keys (one camera alone, not the recorder). Only changes are written."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from gapless.cluster.coordinator import Coordinator, CoordinatorError
from gapless.cluster.keys import feed_key

log = logging.getLogger("gapless.feeds")

FEED_TTL_S = 3.0
PUBLISH_INTERVAL_S = 0.25
#: camera -> {"state": "recording" | "lagging" | "down", "backfill_open": its open backfill jobs}
FeedStates = Callable[[], dict[str, dict]]


class FeedPublisher(threading.Thread):
    def __init__(self, recorder: str, coordinator: Coordinator, states: FeedStates, ttl: float = FEED_TTL_S) -> None:
        super().__init__(name="feed-publisher", daemon=True)
        self.recorder, self.coordinator, self.states, self.ttl = recorder, coordinator, states, ttl
        self.stop_event = threading.Event()
        self.lease = 0
        self.published: dict[str, dict] = {}
        self.renewed_at = 0.0

    def run(self) -> None:
        while not self.stop_event.wait(PUBLISH_INTERVAL_S):
            try:
                self._step(time.monotonic())
            except CoordinatorError as exc:
                if self.lease:
                    log.warning("feed health not published (coordinator): %s", exc)
                self.lease, self.published = 0, {}  # start over: a new lease, every key again
        self._withdraw()

    def _step(self, clock: float) -> None:
        if not self.lease:
            self.lease = self.coordinator.grant(self.ttl).id
            self.renewed_at = clock
        elif clock - self.renewed_at >= self.ttl / 3:
            if not self.coordinator.keepalive(self.lease):
                raise CoordinatorError("feed lease expired")
            self.renewed_at = clock
        states = self.states()
        for camera, state in states.items():
            if self.published.get(camera) != state:
                self.coordinator.put(feed_key(self.recorder, camera), state, self.lease)
                self.published[camera] = state
        for camera in set(self.published) - set(states):  # removed from the configuration
            self.coordinator.delete(feed_key(self.recorder, camera))
            del self.published[camera]

    def _withdraw(self) -> None:
        """Stopping: the keys go at once (revoking the lease), not a TTL later."""
        if self.lease:
            try:
                self.coordinator.revoke(self.lease)
            except CoordinatorError as exc:
                log.info("feed lease not revoked (it lapses in %.0f s): %s", self.ttl, exc)
        self.coordinator.close()

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=5)
