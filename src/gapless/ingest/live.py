"""Frames for live viewers as they arrive, not per completed GOP (docs/design/live.md).

The fragmenter tells each frame here the moment it is timed (its camera time known), before its GOP
is complete and stored; a viewer's stream (the recorder's `live.ws`) takes frames after the last
camera time it sent. The newest KEEP_US are kept, so a viewer that joins starts at the newest
keyframe, and a gateway that switches to this recorder from another resumes right after the last
frame its viewer got: both recorders of a camera give a frame the same camera time.

Written by the stream reader's thread, read by the API's event loop: a lock around the deque, and
waiting viewers woken with `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import collections
import struct
import threading
from dataclasses import dataclass, field

from gapless.media.fmp4 import Sample, build_fragment, us_to_ticks
from gapless.storage.store import InitSegment

#: How much recent video a camera's live feed keeps (a viewer resuming after a failover needs the
#: frames since its last one; a new viewer, the newest GOP).
KEEP_US = 10_000_000
#: A frame further than this many frame intervals after the one before it follows a hole.
HOLE_FRAMES = 1.5

#: The framing of a live stream's binary messages: kind (1 byte), the frame's camera decode time (8
#: bytes, µs: where a resumed stream goes on from), payload (init segment, or one frame's moof+mdat).
HEADER = struct.Struct(">BQ")
INIT, FRAME = 0, 1


def pack(kind: int, time_us: int, payload: bytes) -> bytes:
    return HEADER.pack(kind, time_us) + payload


def unpack(message: bytes) -> tuple[int, int, bytes]:
    if len(message) < HEADER.size:
        raise ValueError("a live message is shorter than its header")
    kind, time_us = HEADER.unpack_from(message)
    return kind, time_us, message[HEADER.size :]


@dataclass(slots=True)
class LiveFrame:
    time_us: int  # camera time of its presentation
    decode_us: int  # its decode time (B-frames: earlier), increasing
    duration_us: int
    keyframe: bool
    avcc: bytes
    init: InitSegment
    seq: int
    _fragment: bytes | None = field(default=None, repr=False)

    def fragment(self) -> bytes:
        """`moof+mdat` of this one frame (built once, when a viewer first needs it)."""
        if self._fragment is None:
            cts = us_to_ticks(self.time_us) - us_to_ticks(self.decode_us)
            sample = Sample(self.avcc, us_to_ticks(self.decode_us), us_to_ticks(self.duration_us), cts, self.keyframe)
            self._fragment = build_fragment(self.seq, [sample])
        return self._fragment


class LiveFeed:
    """One camera's recent frames, and the viewers waiting for the next."""

    def __init__(self, keep_us: int = KEEP_US) -> None:
        self.keep_us = keep_us
        self.frames: collections.deque[LiveFrame] = collections.deque()
        self.lock = threading.Lock()
        self.waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []
        self.seq = 0

    def push(self, time_us: int, decode_us: int, keyframe: bool, avcc: bytes, init: InitSegment, frame_us: int) -> None:
        """A frame just timed (the stream reader's thread)."""
        with self.lock:
            last = self.frames[-1] if self.frames else None
            if last is not None and time_us <= last.time_us and decode_us <= last.decode_us:
                return  # not after what viewers have (a clock step back): never sent twice
            decode_us = max(decode_us, last.decode_us + 1) if last is not None else decode_us
            self.seq += 1
            self.frames.append(LiveFrame(time_us, decode_us, frame_us or 40_000, keyframe, avcc, init, self.seq))
            while self.frames and self.frames[0].time_us < time_us - self.keep_us:
                self.frames.popleft()
            waiters, self.waiters = self.waiters, []
        for loop, waiter in waiters:
            loop.call_soon_threadsafe(_wake, waiter)

    def after(self, after_us: int | None) -> list[LiveFrame]:
        """Frames a viewer that has everything up to decode time `after_us` takes next: from the
        newest keyframe for a new viewer (None), else those after it; past a hole (a frame missing
        here), from the next keyframe, since what follows a hole does not decode."""
        with self.lock:
            frames = list(self.frames)
        if after_us is None:
            keys = [i for i, f in enumerate(frames) if f.keyframe]
            return frames[keys[-1] :] if keys else []
        newer = [f for f in frames if f.decode_us > after_us]
        if newer and not newer[0].keyframe:
            step = newer[0].duration_us
            if newer[0].decode_us - after_us > HOLE_FRAMES * step:
                keys = [i for i, f in enumerate(newer) if f.keyframe]
                return newer[keys[0] :] if keys else []
        return newer

    async def next(self, after_us: int | None, timeout: float) -> list[LiveFrame]:
        """`after(after_us)`, waiting up to `timeout` for at least one frame."""
        frames = self.after(after_us)
        if frames:
            return frames
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        with self.lock:
            self.waiters.append((loop, waiter))
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            with self.lock:
                self.waiters = [(lp, w) for lp, w in self.waiters if w is not waiter]
            return []
        return self.after(after_us)


def _wake(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)
