"""The simulated cameras' test pattern, encoded with PyAV (libx264, libx265, mpeg4): what
`encoder.encode_loop` runs when its cache has no loop for a profile."""

from __future__ import annotations

from fractions import Fraction
from typing import cast

import av
import numpy as np

from gapless.media import h265
from gapless.media.h264 import NAL_PPS, NAL_SPS, nal_type, split_annexb
from gapless.sim.encoder import EncodedLoop, Profile


def _picture(profile: Profile, index: int) -> np.ndarray:
    """A moving test pattern: colour bars, a sweeping block and noise so x264 spends bits."""
    h, w = profile.height, profile.width
    img = np.zeros((h, w, 3), dtype=np.uint8)
    bars = np.array(
        [
            [235, 235, 235],
            [235, 235, 16],
            [16, 235, 235],
            [16, 235, 16],
            [235, 16, 235],
            [235, 16, 16],
            [16, 16, 235],
            [16, 16, 16],
        ],
        dtype=np.uint8,
    )
    img[:] = bars[(np.arange(w) * 8 // w)][None, :, :]
    size = max(16, h // 6)
    x = (index * 7) % max(1, w - size)
    y = (index * 3) % max(1, h - size)
    img[y : y + size, x : x + size] = (255 - (index * 5) % 255, (index * 11) % 255, 128)
    rng = np.random.default_rng(index)
    noise_rows = h // 4
    img[h - noise_rows :] = rng.integers(0, 255, size=(noise_rows, w, 3), dtype=np.uint8)
    return img


def _video_encoder(name: str, profile: Profile) -> av.VideoCodecContext:
    ctx = cast(av.VideoCodecContext, av.CodecContext.create(name, "w"))
    ctx.width, ctx.height = profile.width, profile.height
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = Fraction(1, profile.fps)
    ctx.framerate = Fraction(profile.fps)
    ctx.bit_rate = profile.bitrate
    return ctx


def _encode_pattern(ctx: av.VideoCodecContext, profile: Profile, total: int) -> list[av.Packet]:
    """`total` frames of the test pattern through the encoder, flushed."""
    packets: list[av.Packet] = []
    for i in range(total):
        frame = av.VideoFrame.from_ndarray(_picture(profile, i), format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        packets.extend(ctx.encode(frame))
    packets.extend(ctx.encode(None))
    return packets


def encode(profile: Profile, gops: int) -> EncodedLoop:
    """`gops` GOPs of the test pattern in the profile's codec."""
    if profile.codec == "mpeg4":
        return _encode_mpeg4(profile, gops)
    if profile.codec == "h265":
        return _encode_h265(profile, gops)
    ctx = _video_encoder("libx264", profile)
    if profile.bframes:
        ctx.profile = "Main"
    ctx.options = {
        "preset": "veryfast",
        **({} if profile.bframes else {"tune": "zerolatency"}),  # zerolatency forbids B-frames
        "x264-params": (
            f"keyint={profile.gop}:min-keyint={profile.gop}:scenecut=0:bframes={profile.bframes}:repeat-headers=1"
            ":open-gop=0:b-pyramid=none"
            f":vbv-maxrate={profile.bitrate // 1000}:vbv-bufsize={profile.bitrate // 1000}"
        ),
    }
    total = profile.gop * gops
    packets = _encode_pattern(ctx, profile, total)
    sps = pps = b""
    frames: list[list[bytes]] = []
    keyframes: list[bool] = []
    shown = [packet.pts or 0 for packet in packets]  # an encoder's packets always carry one
    first = min(shown)
    reorder = [pts - first - index for index, pts in enumerate(shown)]
    for packet in packets:
        nals = split_annexb(bytes(packet))
        for nal in nals:
            if nal_type(nal) == NAL_SPS:
                sps = nal
            elif nal_type(nal) == NAL_PPS:
                pps = nal
        frames.append([n for n in nals if nal_type(n) not in (NAL_SPS, NAL_PPS, 6, 9)])
        keyframes.append(packet.is_keyframe)
    if len(frames) != total or not keyframes[0] or sorted(i + r for i, r in enumerate(reorder)) != list(range(total)):
        raise RuntimeError("encoder did not produce one packet per frame starting with a keyframe")
    return EncodedLoop(profile, sps, pps, frames, keyframes, reorder)


def _encode_h265(profile: Profile, gops: int) -> EncodedLoop:
    """H.265 with libx265: what most cameras sold today send by default."""
    ctx = _video_encoder("libx265", profile)
    ctx.options = {
        "preset": "ultrafast",
        "x265-params": (
            f"keyint={profile.gop}:min-keyint={profile.gop}:scenecut=0:bframes=0:repeat-headers=1"
            f":open-gop=0:log-level=error:vbv-maxrate={profile.bitrate // 1000}:vbv-bufsize={profile.bitrate // 1000}"
        ),
    }
    total = profile.gop * gops
    packets = _encode_pattern(ctx, profile, total)
    sets: dict[int, bytes] = {}
    frames: list[list[bytes]] = []
    for packet in packets:
        nals = split_annexb(bytes(packet))
        for nal in nals:
            if h265.nal_type(nal) in h265.PARAMETER_SET_TYPES:
                sets[h265.nal_type(nal)] = nal
        frames.append([n for n in nals if h265.nal_type(n) < h265.NAL_VPS])  # video coding layer only
    keyframes = [packet.is_keyframe for packet in packets]
    if len(frames) != total or not keyframes[0] or len(sets) != 3:
        raise RuntimeError("x265 did not produce one packet per frame starting with a keyframe")
    vps, sps, pps = (sets[kind] for kind in h265.PARAMETER_SET_TYPES)
    return EncodedLoop(profile, sps, pps, frames, keyframes, [0] * total, vps)


def _encode_mpeg4(profile: Profile, gops: int) -> EncodedLoop:
    """MPEG-4 Part 2: a codec Gapless does not record, to show how a recorder refuses one."""
    ctx = _video_encoder("mpeg4", profile)
    ctx.gop_size = profile.gop
    frames: list[list[bytes]] = []
    keyframes: list[bool] = []
    packets = _encode_pattern(ctx, profile, profile.gop * gops)
    for packet in packets:
        frames.append([bytes(packet)])
        keyframes.append(packet.is_keyframe)
    config = bytes(ctx.extradata or b"")
    return EncodedLoop(profile, config, b"", frames, keyframes, [0] * len(frames))
