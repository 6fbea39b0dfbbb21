"""Gapless: zero-loss failover for video-surveillance recording."""

import sys

__version__ = "0.1.0"

# httpx imports its own command-line client (rich.progress, rich.syntax, pygments: ~40 ms of CPU,
# a tenth of a recorder's start) whenever click and rich are installed, as Gapless's CLI needs them.
# No Gapless process runs httpx's CLI; a None entry makes that optional import fail, as httpx allows.
if "httpx._main" not in sys.modules:
    sys.modules["httpx._main"] = None  # type: ignore[assignment]
