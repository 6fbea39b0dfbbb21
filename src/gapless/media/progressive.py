"""A plain (progressive, "faststart") MP4 from a fragmented one: `moov` with every sample table
first, then one `mdat`. Some players and forensic tools want this layout; Gapless stores and
streams fragmented MP4, so an export converts on request. Remux only (no decoding), with PyAV."""

from __future__ import annotations

from pathlib import Path

import av


def to_progressive(fragmented: Path, progressive: Path) -> int:
    """Write `progressive` from `fragmented`; returns the number of video packets copied."""
    copied = 0
    with av.open(str(fragmented)) as source:
        video = source.streams.video[0]
        with av.open(str(progressive), "w", format="mp4", options={"movflags": "+faststart"}) as target:
            stream = target.add_stream_from_template(video)
            for packet in source.demux(video):
                if packet.dts is None:  # the demuxer's end-of-stream marker
                    continue
                packet.stream = stream
                target.mux(packet)
                copied += 1
    return copied
