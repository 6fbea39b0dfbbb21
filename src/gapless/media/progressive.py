"""Progressive MP4 (one `moov` in front, then the media) from a fragmented one, by PyAV remux.

Players and editors that do not read fragmented MP4 get this layout. The camera's audio track, when
there is one, is copied beside the video. G.711 is kept as the camera sent it; the ISO `mp4`
brand has no G.711 entry, so such an export is a QuickTime file (`.mov`, same box structure), which
every player that reads MP4 also reads.
"""

from __future__ import annotations

from pathlib import Path

import av


def progressive_format(audio_codec: str | None) -> str:
    """The container an export of this audio takes: `mp4`, or `mov` for G.711."""
    return "mov" if audio_codec in ("pcmu", "pcma") else "mp4"


def to_progressive(fragmented: Path, progressive: Path, container: str = "mp4") -> int:
    """Write `progressive` from `fragmented`; returns the number of video packets copied."""
    copied = 0
    with av.open(str(fragmented)) as source:
        inputs = [source.streams.video[0], *source.streams.audio[:1]]
        with av.open(str(progressive), "w", format=container, options={"movflags": "+faststart"}) as target:
            outputs = {stream.index: target.add_stream_from_template(stream) for stream in inputs}
            for packet in source.demux(inputs):
                if packet.dts is None:  # the demuxer's end-of-stream marker
                    continue
                video = packet.stream.type == "video"
                packet.stream = outputs[packet.stream.index]
                target.mux(packet)
                copied += video
    return copied
