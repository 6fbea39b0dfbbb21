"""The cameras a recorder records now: one registry, so the API, the metrics, the gap scanner and
the backfill worker see a camera added or removed at run time at the same moment, and none keeps a
copy of its own."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

from gapless.ingest.camera import CameraIngest, FeedState

#: Told (camera id, added) after each change.
Listener = Callable[[str, bool], None]


class CameraRegistry:
    """Camera id → its ingest thread. Changed by the recorder's configuration (one caller at a
    time); read from the API, the writer thread and the backfill tasks."""

    def __init__(self) -> None:
        self._ingests: dict[str, CameraIngest] = {}
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def add(self, ingest: CameraIngest) -> None:
        with self._lock:
            self._ingests = {**self._ingests, ingest.camera_id: ingest}
        for listener in self._listeners:
            listener(ingest.camera_id, True)

    def remove(self, camera_id: str) -> CameraIngest | None:
        with self._lock:
            ingest = self._ingests.get(camera_id)
            self._ingests = {cam: i for cam, i in self._ingests.items() if cam != camera_id}
        if ingest is not None:
            for listener in self._listeners:
                listener(camera_id, False)
        return ingest

    def get(self, camera_id: str) -> CameraIngest | None:
        return self._ingests.get(camera_id)

    def feed(self, camera_id: str) -> FeedState | None:
        ingest = self._ingests.get(camera_id)
        return None if ingest is None else ingest.feed

    def live_guard(self, camera_id: str) -> tuple[bool, int | None]:
        """(a session is starting, where the live run starts) for backfill, which must never store
        time the live run records; a camera no longer recorded has no live run."""
        feed = self.feed(camera_id)
        return (False, None) if feed is None else feed.live_guard()

    def items(self) -> list[tuple[str, CameraIngest]]:
        """A snapshot: changes after the call do not affect it (the dict is replaced, never mutated)."""
        return list(self._ingests.items())

    def __contains__(self, camera_id: object) -> bool:
        return camera_id in self._ingests

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._ingests))

    def __len__(self) -> int:
        return len(self._ingests)
