"""The operator console in a real browser: Debian's Chromium driven by Playwright. Signed in with
the login link's token (exchanged for a session cookie, the token gone from the address bar), the
overview shows the cluster and its holder, a live tile plays through the gateway's live stream, and
when the holder is SIGKILLed the tile keeps playing (its video time advances throughout) while the
recorder it shows changes; so does hls.js on the gateway's live HLS playlist, through the kill and
the failback. Once the holder is back and backfilled, the recorded range across the
outage plays and exports; a viewer's switchover is refused, an operator's (signed in with a
password) is done. A 100-camera overview settles in well under a second and a grid of 16 H.264
tiles plays (and an H.265 tile says the browser cannot play it, with the player URL). Screenshots of each
page go to docs/screenshots/."""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
import time
from pathlib import Path

import av
import httpx
import pytest
import yaml
from cluster_harness import CAMERA, VIEWER_TOKEN, Management, managed_recorder, running_cluster, wait_holder
from conftest import GAPLESS, TOKEN, Proc, audit_clean, free_port, timing_sensitive, wait_for

from gapless.common.timeparse import parse_time_us

CHROMIUM = shutil.which("chromium")
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it)"),
    timing_sensitive,
]
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
def cluster(tmp_path, camera):
    with running_cluster(tmp_path, camera) as parts:
        yield parts


@contextlib.contextmanager
def chromium_page(width: int = 1280, height: int = 720):
    """A page in Debian's Chromium (headless, as root without a sandbox), closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def signed_in_with_a_link(page, management) -> None:
    """The viewer's login link opened; the overview shows rec-a holding the token."""
    page.goto(f"{management.url}/?token={VIEWER_TOKEN}")
    page.wait_for_selector("#clusters tr[data-cluster=main] .holder:text-is('rec-a')", timeout=30_000)


def video_time(page, tile: str = f".tile[data-camera={CAMERA}]") -> float:
    return page.evaluate(f"() => document.querySelector('{tile} video')?.currentTime ?? 0")


#: A third-party web player on the gateway's live HLS (not the console's own live.ws tiles): hls.js
#: as the console vendors it, in the signed-in page (its session cookie lets the playlist through).
LIVE_HLS_PLAYER = """async (camera) => {
  const Hls = (await import("/console/vendor/hls.light.min.mjs")).default;
  const video = Object.assign(document.createElement("video"), { muted: true, autoplay: true });
  document.body.append(video);
  const hls = new Hls({ enableWorker: false });
  const errors = [];
  window.liveHls = { video, errors };
  hls.on(Hls.Events.ERROR, (_event, data) => errors.push(`${data.details}${data.fatal ? " (fatal)" : ""}`));
  hls.attachMedia(video);
  hls.loadSource(`/api/v1/cameras/${camera}/live.m3u8`);
  video.play().catch(() => {});
}"""


def hls_time(page) -> float:
    return page.evaluate("() => window.liveHls.video.currentTime")


def assert_hls_advanced(played: list[float], errors: list[str]) -> None:
    steps = [later - earlier for earlier, later in itertools.pairwise(played)]
    assert all(step > 0 for step in steps), (played, errors)  # no stall, no restart from the start
    assert not [e for e in errors if "fatal" in e], errors


def browser_time(seconds: float) -> str:
    """A datetime-local input's value for an epoch time (the browser runs in UTC, as this machine)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def test_console_overview_and_a_live_tile_that_plays_through_a_holder_kill(cluster, tmp_path):
    management, a, _b = cluster
    assert httpx.get(f"{management.url}/api/v1/cameras").status_code == 401  # no session, no token
    with chromium_page() as page:
        signed_in_with_a_link(page, management)
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
        page.evaluate(LIVE_HLS_PLAYER, CAMERA)
        page.wait_for_function("() => window.liveHls.video.currentTime > 2", timeout=60_000)

        a.proc.kill()
        killed = time.time()
        played, hls_played = [video_time(page)], [hls_time(page)]
        deadline = time.monotonic() + 30
        while page.get_attribute(tile, "data-source") != "rec-b" and time.monotonic() < deadline:
            time.sleep(0.5)
            played.append(video_time(page))
            hls_played.append(hls_time(page))
        assert page.get_attribute(tile, "data-source") == "rec-b", played
        for _ in range(6):
            time.sleep(0.5)
            played.append(video_time(page))
            hls_played.append(hls_time(page))
        steps = [later - earlier for earlier, later in itertools.pairwise(played)]
        assert all(step > 0 for step in steps), played  # the video time advanced throughout
        assert page.text_content(f"{tile} .note") == "", page.text_content(f"{tile} .note")
        assert_hls_advanced(hls_played, page.evaluate("() => window.liveHls.errors"))
        wait_holder(management, "rec-b", timeout=30)
        page.goto(f"{management.url}/#overview")
        page.wait_for_selector("#clusters tr[data-cluster=main] .holder:text-is('rec-b')", timeout=30_000)
        page.wait_for_selector("#events li:has-text('rec-b holds the token')", timeout=30_000)
        page.wait_for_selector("#alerts .alert:has-text('recorder rec-a cannot be reached')", timeout=30_000)
        page.wait_for_selector(f"#cameras tr[data-camera={CAMERA}] .state-warn", timeout=30_000)  # degraded
        page.screenshot(path=str(SCREENSHOTS / "overview-after-failover.png"))

        # A viewer cannot act: the button is disabled and the server refuses the call itself.
        assert page.is_disabled("#clusters tr[data-cluster=main] button.switchover")
        refused = page.evaluate(
            "async () => (await fetch('/api/v1/clusters/main/switchover', {method: 'POST'})).status"
        )
        assert refused == 403

        a.start()  # back, backfilled from rec-b, and the token back (failback auto)
        wait_holder(management, "rec-a", timeout=120)
        outage = (killed - 1, time.time())
        hls_played = [hls_time(page)]  # the HLS player plays on through the failback (the page stayed)
        for _ in range(8):
            time.sleep(0.5)
            hls_played.append(hls_time(page))
        assert_hls_advanced(hls_played, page.evaluate("() => window.liveHls.errors"))
        audit_clean(a, CAMERA, outage[0] - 5, outage[1])
        recorded_range_plays_and_exports(page, management, outage, tmp_path)


def recorded_range_plays_and_exports(page, management, outage: tuple[float, float], tmp_path) -> None:
    """The playback page shows what each member holds (rec-a's backfilled part marked), plays from a
    point clicked before the outage through it, and exports the range as an MP4 that decodes."""
    span = 120
    end = outage[1] + 20
    page.goto(f"{management.url}/#playback?cameras={CAMERA}&span={span}&end={end}")
    timeline = f"svg.timeline[data-camera={CAMERA}]"
    page.wait_for_selector(f"{timeline} rect.backfilled", timeout=60_000)  # rec-a's copied part
    assert page.locator(f"{timeline} rect.held").count() >= 2  # both members' rows
    box = page.locator(timeline).bounding_box()
    start = end - span
    clicked = outage[0] - 4
    page.mouse.click(box["x"] + box["width"] * (clicked - start) / span, box["y"] + 4)
    player = f".player[data-camera={CAMERA}]"
    played = wait_for(
        lambda: (at := page.get_attribute(player, "data-playing")) and float(at) > outage[0] + 3 and float(at),
        90,
        "recorded video to play through the outage",
        interval=0.5,
    )
    assert clicked - 3 < played < outage[1] + 60, (clicked, played)
    page.screenshot(path=str(SCREENSHOTS / "playback.png"))

    frm, to = outage[0] - 3, outage[0] + 8
    page.fill("#pb-export-from", browser_time(frm))
    page.fill("#pb-export-to", browser_time(to))
    page.click("#pb-export-form button")
    page.wait_for_selector("#pb-export-status[data-done=true]", timeout=120_000)
    with page.expect_download() as download:
        page.click("#pb-export-save")
    saved = tmp_path / "export.mp4"
    download.value.save_as(saved)
    with av.open(str(saved)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames >= 25 * (to - frm - 2), frames  # the whole range, the outage included
    page.screenshot(path=str(SCREENSHOTS / "export.png"))


def two_cameras_play_in_step(page, management) -> None:
    """Two cameras chosen on the playback page, a click 30 s back: both play, at one camera time.
    (Far enough back that neither reaches the end of the playlist, which ends where the click was
    made, while the test watches.)"""
    span, back = 60, 30
    viewer = httpx.Client(base_url=management.url, headers={"Authorization": f"Bearer {VIEWER_TOKEN}"}, timeout=10)

    def recorded_since(camera: str, now: float) -> float:
        found = viewer.get(f"/api/v1/cameras/{camera}/timeline", params={"start": now - span, "end": now}).json()
        return min((parse_time_us(i["start"]) / 1e6 for i in found["intervals"]), default=now)

    def recorded_enough() -> float | None:
        now = time.time()
        return now if all(recorded_since(c, now) < now - back - 1 for c in ("cam000", "cam001")) else None

    end = wait_for(recorded_enough, 90, f"{back} s recorded of both cameras")
    viewer.close()
    page.goto(f"{management.url}/#playback?cameras=cam000,cam001&span={span}&end={end}")
    timeline = "svg.timeline[data-camera=cam000]"
    page.wait_for_selector(f"{timeline} rect.merged", timeout=30_000)
    box = page.locator(timeline).bounding_box()
    page.mouse.click(box["x"] + box["width"] * (span - back) / span, box["y"] + 4)
    players = [".player[data-camera=cam000]", ".player[data-camera=cam001]"]

    def playing() -> list[float]:
        return [float(page.get_attribute(p, "data-playing") or 0) for p in players]

    wait_for(lambda: min(playing()) > end - back, 60, "both cameras to play", interval=0.5)
    wait_for(lambda: abs(playing()[0] - playing()[1]) < 0.5, 30, "the two cameras in step", interval=0.5)
    later = playing()
    # both still advancing (the page updates its readouts on its poll, every 2 s or later when busy)
    wait_for(lambda: all(b > a for a, b in zip(later, playing(), strict=True)), 20, "both to advance", interval=0.5)
    page.screenshot(path=str(SCREENSHOTS / "playback-two-cameras.png"))


def test_an_operator_signs_in_with_a_password_and_switches_over(cluster):
    management, _a, _b = cluster
    admin = httpx.Client(base_url=management.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert admin.post("/api/v1/users", json={"name": "olga", "role": "operator", "password": "olga-pass-1"}).is_success
    with chromium_page() as page:
        page.goto(f"{management.url}/")
        page.fill("#login-user", "olga")
        page.fill("#login-password", "olga-pass-1")
        page.click("#login-form button")
        page.wait_for_selector("#who:has-text('olga')", timeout=30_000)
        button = "#clusters tr[data-cluster=main] button.switchover"
        page.wait_for_selector(f"{button}:not([disabled])", timeout=30_000)
        page.click(button)
        page.wait_for_selector("#status:has-text('switchover of main asked')", timeout=30_000)
        page.wait_for_selector("#clusters tr[data-cluster=main] .holder:text-is('rec-b')", timeout=60_000)
        page.goto(f"{management.url}/#backfill")
        form = "#backfill-form"
        page.fill(f"{form} [name=recorder]", "rec-a")
        page.fill(f"{form} [name=camera]", CAMERA)
        page.fill(f"{form} [name=source]", "rec-b")
        page.fill(f"{form} [name=start]", browser_time(time.time() - 20))
        page.fill(f"{form} [name=end]", browser_time(time.time() - 10))
        page.click(f"{form} button")
        page.wait_for_selector("#status:has-text('queued on rec-a')", timeout=30_000)
        page.wait_for_selector("#jobs tr[data-job^='rec-a/']", timeout=30_000)
        page.wait_for_selector("#event-log tr[data-kind=token]", timeout=30_000)
        page.wait_for_selector("#event-log td:has-text('olga signed in')", timeout=30_000)
        page.screenshot(path=str(SCREENSHOTS / "backfill-and-events.png"))


def test_an_overview_of_100_cameras_settles_at_once_and_a_grid_of_16_plays(tmp_path, make_sim):
    small = ("--width", "320", "--height", "180", "--fps", "10", "--bitrate", "200")
    sim = make_sim(cameras=15, gop=10, extra=small)
    hevc = make_sim(cameras=1, gop=10, extra=(*small, "--codec", "h265"))
    clock_off = make_sim(cameras=1, gop=10, extra=(*small, "--clock-error", "30"))
    # A 3 s lease: this test is about the console, not lease timing. It is the suite's longest, so it
    # starts with the other longest ones; 1 s leases (renewal calls answered within 250 ms) did not
    # hold while they all started on 2 cores, and the token rightly moved to rec-b.
    management = Management(tmp_path, sim, ttl="3s")
    config = yaml.safe_load(management.config_path.read_text())
    cameras = [{"id": f"cam{i:03d}", "url": sim.url(f"cam{i}")} for i in range(15)]
    cameras.append({"id": "cam015", "url": clock_off.url("cam0")})  # its clock is 30 s fast
    cameras.append({"id": "cam016", "url": hevc.url("cam0")})
    # Cameras that do not answer (a site has some): listed and alerted, recorded by nobody.
    cameras += [{"id": f"cam{i:03d}", "url": f"rtsp://127.0.0.1:{sim.rtsp_port}/offline{i}"} for i in range(17, 100)]
    config["clusters"][0]["cameras"] = cameras
    management.config_path.write_text(yaml.safe_dump(config))
    members = [managed_recorder(tmp_path, name, management) for name in ("rec-a", "rec-b")]
    try:
        management.start()
        for member in members:
            member.start()
        wait_holder(management, "rec-a")
        with chromium_page(1600, 1000) as page:
            signed_in_with_a_link(page, management)
            settled = []
            for _ in range(3):  # a fresh load each time: navigation start → 100 rows drawn
                page.reload()
                page.wait_for_function(
                    "() => document.querySelectorAll('#cameras tbody tr').length === 100", timeout=30_000
                )
                settled.append(page.evaluate("() => performance.now()"))
            print(json.dumps({"overview_100_cameras_ms": [round(ms) for ms in settled]}))
            page.wait_for_selector("#alerts .alert:has-text('camera cam015: its clock is off by')", timeout=60_000)
            page.wait_for_selector("#alerts .alert:has-text('camera cam099 on rec-a')", timeout=60_000)
            assert min(settled) < 10_000, settled  # the goal (1 s) is reported, not asserted: machines are noisy
            page.screenshot(path=str(SCREENSHOTS / "overview-100-cameras.png"), full_page=False)

            page.goto(f"{management.url}/#live")
            tiles = [f".tile[data-camera=cam{i:03d}]" for i in range(16)]  # 16 H.264 tiles
            wait_for(
                lambda: all(
                    page.evaluate(f"() => document.querySelector('{t} video')?.currentTime > 1") for t in tiles
                ),
                120,
                "16 live tiles to play",
                interval=1,
            )
            hevc_tile = ".tile[data-camera=cam016]"
            if page.evaluate("() => MediaSource.isTypeSupported('video/mp4; codecs=\"hvc1.1.6.L93.B0\"')"):
                tiles.append(hevc_tile)  # this Chromium decodes H.265: the tile must play like the others
                wait_for(lambda: video_time(page, hevc_tile) > 1, 60, "the H.265 tile to play")
            else:
                page.wait_for_selector(f"{hevc_tile} .note:has-text('cannot play H.265')", timeout=60_000)
                note = page.text_content(f"{hevc_tile} .note")
                assert f"{management.url}/api/v1/cameras/cam016/live.m3u8" in note, note
            true_clocks = [t for t in tiles if "cam015" not in t]  # the readout assumes the camera's clock is right
            latencies = [float(page.get_attribute(t, "data-latency") or "nan") for t in true_clocks]
            assert all(0 < latency < 30 for latency in latencies), dict(zip(true_clocks, latencies, strict=True))
            print(json.dumps({"grid_latency_s": sorted(round(x, 2) for x in latencies)}))
            page.screenshot(path=str(SCREENSHOTS / "live-grid-16.png"))
            two_cameras_play_in_step(page, management)
    finally:
        for member in members:
            member.close()
        management.close()


def test_camera_mapping_proposals_are_accepted_in_the_console(tmp_path):
    """Two independent recorders' cameras: one the same hardware (exact, accepted in bulk), one the
    same stream source (main and sub-stream, accepted by hand); an admin does it, a viewer cannot."""
    port = free_port()
    door = {"endpoint": "urn:uuid:5f1c0d2e-door"}
    config = {
        "management": {"listen": f"127.0.0.1:{port}", "data": str(tmp_path / "mgmt"), "api_token": TOKEN},
        "recorders": [
            {"id": "rec-c", "url": f"http://127.0.0.1:{free_port()}", "token": TOKEN, "cameras": [
                {"id": "door", "url": "rtsp://192.0.2.10/stream1", "identity": door},
                {"id": "yard", "url": "rtsp://192.0.2.11/Streaming/Channels/101"},
            ]},
            {"id": "rec-d", "url": f"http://127.0.0.1:{free_port()}", "token": TOKEN, "cameras": [
                {"id": "door-d", "url": "rtsp://192.0.2.10/stream2", "identity": door},
                {"id": "yard-sub", "url": "rtsp://192.0.2.11/Streaming/Channels/102"},
            ]},
        ],
        "credentials": [{"id": "operators", "role": "viewer", "token": VIEWER_TOKEN}],
    }  # fmt: skip
    (tmp_path / "management.yaml").write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{port}"
    proc = Proc([*GAPLESS, "management", "--config", str(tmp_path / "management.yaml")], tmp_path / "m.log").start()
    admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    try:
        wait_for(lambda: admin.get("/api/v1/config").status_code == 200, 60, "management")
        assert admin.post("/api/v1/users", json={"name": "ada", "role": "admin", "password": "ada-pass-1"}).is_success
        link = admin.post("/api/v1/users/ada/link").json()["link"]
        pair = {"a": {"recorder": "rec-c", "camera": "yard"}, "b": {"recorder": "rec-d", "camera": "yard-sub"}}
        as_viewer = httpx.post(f"{url}/api/v1/pairs", json=pair, headers={"Authorization": f"Bearer {VIEWER_TOKEN}"})
        assert as_viewer.status_code == 403
        with chromium_page() as page:
            page.goto(f"{url}/?token={link}#mapping")
            page.wait_for_selector("#proposals tr[data-proposal='door=door-d']", timeout=30_000)
            page.wait_for_selector("#proposals tr[data-proposal='yard=yard-sub']", timeout=30_000)
            reasons = page.text_content("#proposals tr[data-proposal='yard=yard-sub']")
            assert "source" in reasons, reasons
            page.screenshot(path=str(SCREENSHOTS / "mapping.png"))
            page.click("#accept-exact button")
            page.wait_for_selector("#pairs tr[data-pair='rec-c:door']", timeout=30_000)
            page.click("#proposals tr[data-proposal='yard=yard-sub'] button:text-is('Accept')")
            page.wait_for_selector("#pairs tr[data-pair='rec-c:yard']", timeout=30_000)
        pairs = admin.get("/api/v1/pairs").json()["pairs"]
        assert {(p["a"]["camera"], p["b"]["camera"], p["kind"]) for p in pairs} == {
            ("door", "door-d", "identity"),
            ("yard", "yard-sub", "source"),
        }, pairs
    finally:
        admin.close()
        proc.stop()
