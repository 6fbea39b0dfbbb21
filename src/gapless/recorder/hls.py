"""HLS playlists (fMP4 segments = stored fragments) and the signed URLs they carry.

Media sequence numbers come from camera time (`round(start / nominal GOP duration)`), so two
recorders of one camera number the same fragment alike and their live playlists line up; a
missing fragment becomes an `EXT-X-GAP` entry rather than a renumbering.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import statistics
import time
from collections.abc import Callable

from gapless.recorder.timeparse import iso
from gapless.storage.store import FragmentRow

LIVE_SEGMENTS = 6
SIGNED_URL_TTL_S = 6 * 3600


def sign(token: str, path: str, expires: int) -> str:
    mac = hmac.new(token.encode(), f"{path}\n{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:24]).decode().rstrip("=")


def signed(token: str, path: str, ttl: int = SIGNED_URL_TTL_S) -> str:
    expires = int(time.time()) + ttl
    return f"{path}?exp={expires}&sig={sign(token, path, expires)}"


def signature_valid(token: str, path: str, expires: str, signature: str) -> bool:
    if not expires.isdigit() or int(expires) < time.time():
        return False
    return hmac.compare_digest(sign(token, path, int(expires)), signature)


def nominal_duration_us(rows: list[FragmentRow]) -> int:
    durations = [r.end_us - r.start_us for r in rows] or [2_000_000]
    return max(1000, round(statistics.median(durations), -3))


def recorder_uris(token: str) -> tuple[Callable[[FragmentRow], str], Callable[[str], str]]:
    """Segment and init URIs of a recorder's own playlists: signed, so players need no header."""
    return (
        lambda row: signed(token, f"/api/v1/fragments/{row.id}"),
        lambda init: signed(token, f"/api/v1/inits/{init}"),
    )


def playlist(
    rows: list[FragmentRow],
    *,
    live: bool,
    nominal_us: int,
    fragment_uri: Callable[[FragmentRow], str],
    init_uri: Callable[[str], str],
) -> str:
    """A playlist of stored fragments (rows: anything with id, start_us, end_us, frames, init)."""
    target = max(1, math.ceil(max((r.end_us - r.start_us for r in rows), default=nominal_us) / 1e6))
    lines = ["#EXTM3U", "#EXT-X-VERSION:9" if live else "#EXT-X-VERSION:7", f"#EXT-X-TARGETDURATION:{target}"]
    if not live:
        lines.append("#EXT-X-PLAYLIST-TYPE:VOD")
    first_msn = round(rows[0].start_us / nominal_us) if rows else 0
    lines.append(f"#EXT-X-MEDIA-SEQUENCE:{first_msn}")
    msn = first_msn - 1
    init = None
    prev_end = None
    for row in rows:
        want = max(msn + 1, round(row.start_us / nominal_us))
        gap = prev_end is not None and row.start_us - prev_end > 1.5 * (row.end_us - row.start_us) / max(1, row.frames)
        if live:
            for _ in range(want - msn - 1):  # fragments this recorder does not have
                lines += ["#EXT-X-GAP", f"#EXTINF:{nominal_us / 1e6:.3f},", "gap.m4s"]
            msn = want
        else:
            msn += 1
        if gap or (init is not None and row.init != init):
            lines.append("#EXT-X-DISCONTINUITY")
        if row.init != init:
            lines.append(f'#EXT-X-MAP:URI="{init_uri(row.init)}"')
            init = row.init
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{iso(row.start_us)}")
        lines.append(f"#EXTINF:{(row.end_us - row.start_us) / 1e6:.6f},")
        lines.append(fragment_uri(row))
        prev_end = row.end_us
    if not live:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"
