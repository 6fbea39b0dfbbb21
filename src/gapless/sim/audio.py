"""The simulated cameras' audio: a loop of AAC access units or G.711 packets, encoded once per process.

The signal is a tone under seeded noise, so every unit in the loop differs from every other: a test
can tell each audio unit apart (and see one missing or repeated) by its bytes alone, as it tells
video frames apart by their SEI frame numbers.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import cast

from gapless.media.audio import AAC_FRAME_SAMPLES

#: The loop's length: longer than any test window, so a unit's bytes identify it.
LOOP_SECONDS = 120
G711_PACKET_SAMPLES = 160  # 20 ms at 8 kHz, what cameras send
AUDIO_CODECS = ("aac", "pcmu", "pcma")


@dataclass(frozen=True)
class AudioLoop:
    codec: str  # aac | pcmu | pcma
    rate: int
    units: list[bytes]
    samples_per_unit: int
    config: bytes = b""  # AAC AudioSpecificConfig

    @property
    def payload_type(self) -> int:
        return {"aac": 97, "pcmu": 0, "pcma": 8}[self.codec]

    def sdp(self, control: str) -> list[str]:
        pt = self.payload_type
        if self.codec == "aac":
            return [
                f"m=audio 0 RTP/AVP {pt}",
                f"a=rtpmap:{pt} MPEG4-GENERIC/{self.rate}/1",
                f"a=fmtp:{pt} streamtype=5;profile-level-id=15;mode=AAC-hbr;config={self.config.hex()};"
                "sizelength=13;indexlength=3;indexdeltalength=3",
                f"a=control:{control}",
            ]
        return [f"m=audio 0 RTP/AVP {pt}", f"a=rtpmap:{pt} {self.codec.upper()}/{self.rate}", f"a=control:{control}"]

    def payload(self, index: int) -> bytes:
        """The RTP payload of unit `index` (AAC: RFC 3640 AAC-hbr, one AU header of 13+3 bits)."""
        unit = self.units[index % len(self.units)]
        if self.codec == "aac":
            return b"\x00\x10" + (len(unit) << 3).to_bytes(2, "big") + unit
        return unit


@functools.lru_cache(maxsize=4)
def audio_loop(codec: str) -> AudioLoop:
    if codec not in AUDIO_CODECS:
        raise ValueError(f"unknown audio codec {codec!r}; choose one of {', '.join(AUDIO_CODECS)}")
    import av  # here, not at import: a simulator without audio does not pay for PyAV and numpy
    import numpy as np

    rate = 16000 if codec == "aac" else 8000
    name = {"aac": "aac", "pcmu": "pcm_mulaw", "pcma": "pcm_alaw"}[codec]
    ctx = cast(av.AudioCodecContext, av.CodecContext.create(name, "w"))
    ctx.sample_rate, ctx.layout = rate, "mono"
    ctx.format = "fltp" if codec == "aac" else "s16"
    if codec == "aac":
        ctx.bit_rate = 32000
    ctx.open()
    total = LOOP_SECONDS * rate
    t = np.arange(total) / rate
    signal = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * np.random.default_rng(7).standard_normal(total)
    step = AAC_FRAME_SAMPLES if codec == "aac" else G711_PACKET_SAMPLES
    samples = signal.astype(np.float32) if codec == "aac" else (signal * 20000).astype(np.int16)
    units: list[bytes] = []
    for at in range(0, total - step + 1, step):
        chunk = samples[at : at + step].reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(chunk, format=ctx.format.name, layout="mono")
        frame.sample_rate, frame.pts = rate, at
        units += [bytes(p) for p in ctx.encode(frame)]
    units += [bytes(p) for p in ctx.encode(None)]
    if codec != "aac":  # one packet of samples per unit
        joined = b"".join(units)
        units = [joined[i : i + step] for i in range(0, len(joined) - step + 1, step)]
    return AudioLoop(codec, rate, units, step, bytes(ctx.extradata or b""))
