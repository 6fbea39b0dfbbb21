"""Camera audio as Gapless stores it: AAC (`mp4a`, RFC 3640's MPEG4-GENERIC on the wire) and G.711
(`ulaw`/`alaw`, RFC 3551's PCMU/PCMA), each the second track of a camera's fragments.

Gapless never transcodes, so G.711 is stored as the camera sent it, in the QuickTime `ulaw`/`alaw`
sample entries that FFmpeg (and so PyAV, ffprobe, VLC) read in MP4. Browsers cannot play G.711 in
any container, so HLS serves those cameras' video alone (media/hls.py); AAC plays everywhere.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

#: Samples per AAC access unit (AAC-LC; the 960-sample variant is not used by cameras).
AAC_FRAME_SAMPLES = 1024
_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
CODECS = ("aac", "pcmu", "pcma")
SAMPLE_ENTRY = {"aac": b"mp4a", "pcmu": b"ulaw", "pcma": b"alaw"}
_CODEC_OF_ENTRY = {v: k for k, v in SAMPLE_ENTRY.items()}


class AudioConfigError(ValueError):
    """An audio configuration Gapless cannot store (said in words)."""


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """One audio track: codec, sample rate (also the track's timescale), channels and, for AAC,
    the AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1)."""

    codec: str  # aac | pcmu | pcma
    rate: int
    channels: int
    config: bytes = b""

    @property
    def codec_string(self) -> str:
        """RFC 6381 for AAC (`mp4a.40.2`); the sample entry's name for G.711, which has none."""
        if self.codec == "aac":
            return f"mp4a.40.{self.config[0] >> 3}"
        return SAMPLE_ENTRY[self.codec].decode()

    @property
    def browser_playable(self) -> bool:
        return self.codec == "aac"

    def describe(self) -> str:
        channels = {1: "mono", 2: "stereo"}.get(self.channels, f"{self.channels} channels")
        name = "AAC" if self.codec == "aac" else f"G.711 {self.codec.upper()}"
        return f"{name} {self.rate / 1000:g} kHz {channels}"

    def samples_in(self, data: bytes) -> int:
        """How many samples (per channel) one stored access unit holds."""
        return AAC_FRAME_SAMPLES if self.codec == "aac" else len(data) // self.channels


def parse_audio_specific_config(config: bytes) -> AudioFormat:
    """Sample rate and channels of an AAC AudioSpecificConfig."""
    if len(config) < 2:
        raise AudioConfigError("the AAC configuration is shorter than 2 bytes")
    value, width = int.from_bytes(config[:8].ljust(8, b"\0"), "big"), 64
    at = 0

    def read(n: int) -> int:
        nonlocal at
        at += n
        return (value >> (width - at)) & ((1 << n) - 1)

    object_type = read(5)
    if object_type == 31:
        object_type = 32 + read(6)
    index = read(4)
    rate = read(24) if index == 15 else _AAC_RATES[index] if index < len(_AAC_RATES) else 0
    channels = read(4)
    if object_type not in (2, 5, 29):  # AAC-LC, and LC with SBR/PS (HE-AAC v1/v2) signalled explicitly
        raise AudioConfigError(f"AAC object type {object_type} is not recorded (AAC-LC and HE-AAC are)")
    if not rate or not 1 <= channels <= 8:
        raise AudioConfigError(f"the AAC configuration announces {rate} Hz and {channels} channels")
    return AudioFormat("aac", rate, channels, config)


def audio_of_init(init: bytes) -> AudioFormat | None:
    """The audio track of an init segment written by Gapless, or None (video only)."""
    for entry, codec in _CODEC_OF_ENTRY.items():
        at = init.find(entry)
        # A sample entry: its size in front, then 28 bytes of the audio sample entry's fixed part.
        if at >= 4 and struct.unpack_from(">I", init, at - 4)[0] >= 36:
            channels, _size, _id, _packet, rate_fixed = struct.unpack_from(">HHHHI", init, at + 4 + 16)
            config = b""
            if codec == "aac":
                tag = init.find(b"\x05\x80\x80\x80", at)
                if tag < 0:
                    return None
                config = init[tag + 5 : tag + 5 + init[tag + 4]]
            return AudioFormat(codec, rate_fixed >> 16, channels, config)
    return None
