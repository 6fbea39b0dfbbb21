"""One thread reads every camera's RTSP connection once it is streaming.

Why one thread: at 2 Mb/s a camera sends about 250 RTP packets a second. A thread per camera that
woke for each packet spent more CPU waking up than parsing; one that read every 200 ms still paid a
wake-up, a GIL hand-over and a recv per camera five times a second. Here one thread wakes at most
every READ_INTERVAL_S, reads whatever every camera sent meanwhile (the kernel holds it), and hands
it to each camera's stream, which parses and fragments it. The connect/DESCRIBE/SETUP/PLAY
handshake stays in each camera's own thread, where blocking is harmless.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger("gapless.reader")

#: The longest a packet waits in the kernel before Gapless reads it. Live HLS is served per GOP
#: (seconds), so this adds little a viewer sees. Each wake-up finds the caches cold: parsing the same
#: bytes cost 2.1 s per camera-hour read every 0.2 s, 1.7 s every 0.5 s and 1.2 s in one go.
READ_INTERVAL_S = 0.5
RECV_BYTES = 1 << 20


class Stream(Protocol):
    sock: socket.socket

    def on_data(self, data: memoryview) -> None:
        """Bytes the camera sent; may raise to end the session."""

    def on_tick(self, now: float) -> None:
        """Called every pass (keep-alives, timeouts); may raise to end the session."""

    def on_end(self, error: BaseException | None) -> None:
        """The reader let go of the stream: because it raised (error) or was detached (None)."""


class StreamReader(threading.Thread):
    def __init__(self) -> None:
        super().__init__(name="stream-reader", daemon=True)
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._attach: list[Stream] = []
        self._detach: list[Stream] = []
        self._stopping = threading.Event()  # not _stop: threading.Thread has a _stop method
        self._active: set[Stream] = set()  # touched by the reader thread only
        self._buffer = bytearray(RECV_BYTES)

    def attach(self, stream: Stream) -> None:
        with self._lock:
            self._attach.append(stream)

    def detach(self, stream: Stream) -> None:
        """Stop reading the stream; its on_end(None) runs in the reader thread within one pass."""
        with self._lock:
            self._detach.append(stream)

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=5)

    def run(self) -> None:
        while not self._stopping.is_set():
            started = time.monotonic()
            self._apply_changes()
            if not self._active:
                self._stopping.wait(READ_INTERVAL_S)
                continue
            for key, _events in self._selector.select(timeout=READ_INTERVAL_S):
                self._read(key.data)
            now = time.monotonic()
            for stream in list(self._active):
                self._guard(stream, stream.on_tick, now)
            self._stopping.wait(max(0.0, started + READ_INTERVAL_S - time.monotonic()))
        for stream in list(self._active):
            self._release(stream, None)

    def _apply_changes(self) -> None:
        with self._lock:
            attach, self._attach = self._attach, []
            detach, self._detach = self._detach, []
        for stream in attach:
            self._selector.register(stream.sock, selectors.EVENT_READ, stream)
            self._active.add(stream)
        for stream in detach:
            if stream in self._active:  # else it already ended with an error, and was told then
                self._release(stream, None)

    def _read(self, stream: Stream) -> None:
        try:
            size = stream.sock.recv_into(self._buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._release(stream, ConnectionError(f"connection lost: {exc}"))
            return
        if size == 0:
            self._release(stream, ConnectionError("the camera closed the connection"))
            return
        with memoryview(self._buffer) as view:
            self._guard(stream, stream.on_data, view[:size])

    def _guard(self, stream: Stream, call: Callable[[Any], None], arg: object) -> None:
        try:
            call(arg)
        except Exception as exc:  # the stream's own error ends only that stream
            self._release(stream, exc)

    def _release(self, stream: Stream, error: BaseException | None) -> None:
        self._active.discard(stream)
        self._selector.unregister(stream.sock)
        try:
            stream.on_end(error)
        except Exception:
            log.exception("stream end handler failed")
