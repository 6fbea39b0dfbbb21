"""Times in API requests: ISO 8601 with a zone, or epoch seconds."""

from __future__ import annotations

from datetime import UTC, datetime

#: Times accepted in requests: from the epoch to the end of year 9999.
LATEST_US = 253_402_300_799_000_000


def parse_time_us(value: str) -> int:
    """Microseconds since the epoch; ValueError (said in words) for anything else, including times
    before 1970 or after 9999, infinities and NaN."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = None
    if seconds is not None:
        if not 0 <= seconds <= LATEST_US / 1e6:  # NaN fails too
            raise ValueError(f"time {value!r} is out of range: epoch seconds from 0 to 253402300799")
        return round(seconds * 1_000_000)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"invalid time {value!r}: use ISO 8601 with a zone or epoch seconds") from None
    if parsed.tzinfo is None:
        raise ValueError(f"time {value!r} has no zone: add Z or +hh:mm")
    try:
        us = int(parsed.timestamp() * 1_000_000)
    except (OverflowError, ValueError):
        us = -1
    if not 0 <= us <= LATEST_US:
        raise ValueError(f"time {value!r} is before 1970")
    return us


def iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1_000_000, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
