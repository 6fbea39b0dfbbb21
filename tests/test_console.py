"""The operator console in a real browser: Debian's Chromium driven by Playwright. Signed in with
the login link's token (exchanged for a session cookie, the token gone from the address bar), the
overview shows the cluster and its holder, a live tile plays through the gateway's live stream, and
when the holder is SIGKILLed the tile keeps playing (its video time advances throughout) while the
recorder it shows changes. Screenshots of each page go to docs/screenshots/."""

from __future__ import annotations

import itertools
import shutil
import time
from pathlib import Path

import httpx
import pytest
from cluster_harness import CAMERA, VIEWER_TOKEN, running_cluster, wait_holder

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it)")
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
#: As root, without a sandbox; no background traffic (the machine's network is closed).
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]


@pytest.fixture
def cluster(timing_sensitive, tmp_path, camera):  # the lock before the processes start
    with running_cluster(tmp_path, camera) as parts:
        yield parts


def video_time(page) -> float:
    return page.evaluate(f"() => document.querySelector('.tile[data-camera={CAMERA}] video').currentTime")


def test_console_overview_and_a_live_tile_that_plays_through_a_holder_kill(cluster, tmp_path):
    from playwright.sync_api import sync_playwright

    management, a, _b = cluster
    assert httpx.get(f"{management.url}/api/v1/cameras").status_code == 401  # no session, no token
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            page.goto(f"{management.url}/?token={VIEWER_TOKEN}")
            page.wait_for_selector("#clusters tr[data-cluster=main] .holder:text-is('rec-a')", timeout=30_000)
            assert "token" not in page.url  # exchanged for an HTTP-only cookie
            assert "token" not in page.evaluate("() => document.cookie")
            page.wait_for_selector(f"#cameras tr[data-camera={CAMERA}] .state-ok", timeout=60_000)
            SCREENSHOTS.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / "overview.png"))

            page.goto(f"{management.url}/#live")
            tile = f".tile[data-camera={CAMERA}]"
            page.wait_for_function(f"() => document.querySelector('{tile} video')?.currentTime > 2", timeout=60_000)
            assert page.get_attribute(tile, "data-source") == "rec-a"
            page.screenshot(path=str(SCREENSHOTS / "live.png"))

            a.proc.kill()
            played = [video_time(page)]
            deadline = time.monotonic() + 30
            while page.get_attribute(tile, "data-source") != "rec-b" and time.monotonic() < deadline:
                time.sleep(0.5)
                played.append(video_time(page))
            assert page.get_attribute(tile, "data-source") == "rec-b", played
            for _ in range(6):
                time.sleep(0.5)
                played.append(video_time(page))
            steps = [later - earlier for earlier, later in itertools.pairwise(played)]
            assert all(step > 0 for step in steps), played  # the video time advanced throughout
            assert page.text_content(f"{tile} .note") == "", page.text_content(f"{tile} .note")
            wait_holder(management, "rec-b", timeout=30)
            page.goto(f"{management.url}/#overview")
            page.wait_for_selector("#clusters tr[data-cluster=main] .holder:text-is('rec-b')", timeout=30_000)
            page.wait_for_selector("#events li:has-text('rec-b holds the token')", timeout=30_000)
            page.screenshot(path=str(SCREENSHOTS / "overview-after-failover.png"))
        finally:
            browser.close()
