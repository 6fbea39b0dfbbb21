"""Pre-encoded H.264 loops for simulated cameras.

Encoding live for dozens of cameras would take the CPU the recorder is being measured with, so
each camera profile is encoded once (libx264 through PyAV), cached on disk, and replayed in a
loop; the simulator stamps every replayed frame with its own SEI (frame number, capture time).
"""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Profile:
    width: int = 1280
    height: int = 720
    fps: int = 25
    gop: int = 50
    bitrate: int = 2_000_000
    codec: str = "h264"
    bframes: int = 0  # B-frames between references (main profile), as many cameras send


@dataclass
class EncodedLoop:
    profile: Profile
    sps: bytes
    pps: bytes
    frames: list[list[bytes]]  # NAL units per frame, without parameter sets
    keyframes: list[bool]
    #: Per frame in decode (sending) order, its presentation number minus its decode number
    #: (all 0 without B-frames): a B-frame is sent after the later frame it refers to.
    reorder: list[int]
    vps: bytes = b""  # H.265 only


def _cache_dir() -> Path:
    base = os.environ.get("GAPLESS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")), "gapless"
    )
    path = Path(base) / "sim"
    path.mkdir(parents=True, exist_ok=True)
    return path


def encode_loop(profile: Profile, gops: int = 2) -> EncodedLoop:
    """Encode (or load from cache) `gops` GOPs of the test pattern with the given profile."""
    key = hashlib.sha256(repr((profile, gops, 4)).encode()).hexdigest()[:16]
    cached = _cache_dir() / f"{key}.pickle"
    if cached.exists():
        try:
            with cached.open("rb") as fh:
                return pickle.load(fh)
        except Exception:  # a torn cache file from an interrupted run: encode again
            cached.unlink(missing_ok=True)
    from gapless.sim.pattern import encode  # PyAV and numpy: only on a cache miss (~70 ms of start-up)

    loop = encode(profile, gops)
    tmp = cached.with_suffix(f".{os.getpid()}.tmp")
    with tmp.open("wb") as fh:
        pickle.dump(loop, fh)
    tmp.replace(cached)
    return loop
