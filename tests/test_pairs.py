"""Asymmetrical pairs end to end: two independent recorders under one management server name and
address the same cameras differently; identified over ONVIF, the management server proposes the
pairs with reasons; exact identities are accepted by policy, a URL-only match is left to a person
(here rejected, and it stays rejected across a restart); an accepted pair makes each camera the
other's backfill partner, so the primary, killed and restarted, holds every frame again."""

from __future__ import annotations

import itertools
import subprocess
import time

import av
import httpx
import yaml
from cluster_harness import (
    VIEWER_TOKEN,
    LiveFramesReader,
    LiveReader,
    Management,
    assert_continuous,
    managed_recorder,
)
from conftest import GAPLESS, TOKEN, Recorder, audit_clean, wait_for, wait_new_fragments

from gapless.client import GatewayClient, ManagementClient
from gapless.common.timeparse import parse_time_us

PASSWORD = "pair-camera-secret-1"
DEVICES = [
    {"manufacturer": "Acme", "model": "DOME-4K", "endpoint": f"urn:uuid:{str(n) * 8}-0000-4000-8000-000000000000",
     "serial": f"ACME-000{n}", "mac": f"00:11:22:33:44:0{n}", "channels": [f"cam{n - 1}"]}
    for n in (1, 2)
]  # fmt: skip


def test_pairs_are_proposed_accepted_persisted_and_backfill_each_other(tmp_path, make_onvif_sim):
    sim, onvif = make_onvif_sim(DEVICES, 3, PASSWORD)
    management = Management(tmp_path, sim)
    secret = {"username": "admin", "password": PASSWORD}
    host, other_host = f"127.0.0.1:{sim.rtsp_port}", f"localhost:{sim.rtsp_port}"
    document = yaml.safe_load(management.config_path.read_text())
    document["clusters"] = []
    cameras = {
        "rec-a": [
            {"id": "lobby", "url": f"rtsp://{host}/cam0", "onvif": f"127.0.0.1:{onvif}", **secret},
            {"id": "gate", "url": f"rtsp://{host}/cam1", "onvif": f"127.0.0.1:{onvif + 1}", **secret},
            {"id": "yard", "url": f"rtsp://{host}/cam2", **secret},
        ],
        "rec-b": [
            {"id": "entrance", "name": "Entrance hall", "url": f"rtsp://{other_host}/cam0",
             "onvif": f"localhost:{onvif}", **secret},
            {"id": "cam-17", "url": f"rtsp://{other_host}/cam1", "onvif": f"localhost:{onvif + 1}", **secret},
            {"id": "yard-2", "url": f"rtsp://{host}/cam2", **secret},
        ],
    }  # fmt: skip
    for recorder in document["recorders"]:
        recorder["cameras"] = cameras[recorder["id"]]
    management.config_path.write_text(yaml.safe_dump(document))
    a = managed_recorder(tmp_path, "rec-a", management)
    b = managed_recorder(tmp_path, "rec-b", management)
    try:
        management.start()
        a.start()
        b.start()
        api = management.api
        identified = api.post("/api/v1/cameras/identify", json={}).json()
        assert identified["cameras"]["rec-a:lobby"]["identity"]["serial"] == "ACME-0001", identified
        assert identified["cameras"]["rec-b:cam-17"]["identity"]["serial"] == "ACME-0002", identified
        assert identified["cameras"]["rec-a:yard"]["error"], identified  # no ONVIF: it cannot say

        def proposals() -> dict:
            mapping = api.get("/api/v1/pairs/proposals", params={"a": "rec-a", "b": "rec-b"}).json()
            return {(p["a"], p["b"]): p for p in mapping["proposals"]}

        found = proposals()
        assert set(found) == {("lobby", "entrance"), ("gate", "cam-17"), ("yard", "yard-2")}, found
        assert found[("lobby", "entrance")]["auto_acceptable"] and found[("gate", "cam-17")]["auto_acceptable"]
        yard = found[("yard", "yard-2")]
        assert yard["kind"] == "source" and not yard["auto_acceptable"]  # an address is not an identity

        rejected = {"a": {"recorder": "rec-a", "camera": "yard"}, "b": {"recorder": "rec-b", "camera": "yard-2"}}
        assert api.post("/api/v1/pairs/reject", json=rejected).status_code == 200
        assert set(proposals()) == {("lobby", "entrance"), ("gate", "cam-17")}
        command = [*GAPLESS, "pairs", "accept", "--management", management.url, "--token", TOKEN]
        exact = [*command, "--exact", "--a", "rec-a", "--b", "rec-b"]
        accepted = subprocess.run(exact, capture_output=True, text=True, timeout=60)
        assert accepted.returncode == 0, accepted.stderr
        assert "accepted rec-a:lobby = rec-b:entrance" in accepted.stdout, accepted.stdout
        assert "accepted rec-a:gate = rec-b:cam-17" in accepted.stdout, accepted.stdout
        twice = api.post("/api/v1/pairs", json={**rejected, "a": {"recorder": "rec-a", "camera": "lobby"}})
        assert twice.status_code == 409 and "two pairs" in twice.text  # lobby is paired already

        stored = [e["message"] for e in api.get("/api/v1/events", params={"kind": "config"}).json()["events"]]
        assert any(m.startswith("configuration version") for m in stored), stored
        management.proc.stop()  # accepted and rejected pairs persist
        management.start()
        listed = ManagementClient(management.url, TOKEN).pairs()  # the Python client, typed
        assert len(listed.pairs) == 2 and listed.rejected_pairs[0].a.camera == "yard"
        shown = subprocess.run(
            [*GAPLESS, "pairs", "list", "--management", management.url, "--token", TOKEN],
            capture_output=True,
            text=True,
        )
        assert "rejected rec-a:yard = rec-b:yard-2 (manual)" in shown.stdout, shown.stdout + shown.stderr
        assert not proposals()

        # rec-a takes the new version (polled), with entrance on rec-b as lobby's partner.
        version = listed.version
        wait_for(lambda: f"configuration version {version} applied" in a.log.read_text(), 60, "rec-a to apply")
        a.wait_fragments("lobby", 3)
        start = time.time()
        time.sleep(2)
        a.proc.kill()
        time.sleep(6)
        a.start()
        a.wait_fragments("lobby", 3)
        audit_clean(a, "lobby", start, time.time() - 3)  # the hole, filled from rec-b's entrance
        jobs = a.api.get("/api/v1/backfill").json()["jobs"]
        assert any(j["source"] == "rec-b" and j["source_camera"] == "entrance" for j in jobs), jobs
    finally:
        for rec in (a, b):
            rec.close()
        management.close()


def test_a_paired_camera_alone_is_rerouted_while_its_primary_feed_is_lost(tmp_path, make_sim):
    """Two paired cameras on two independent recorders. The primary loses one camera's feed: the
    gateway routes that camera alone to the secondary (a live reader sees every frame, in order),
    the other stays on the primary; the feed back, the camera is routed back and the primary
    backfills what it missed."""
    sim = make_sim(cameras=2)
    management = Management(tmp_path, sim)
    document = yaml.safe_load(management.config_path.read_text())
    document["clusters"] = []
    names = {"rec-a": ("lobby", "gate"), "rec-b": ("entrance", "cam-17")}
    for recorder in document["recorders"]:
        first, second = names[recorder["id"]]
        recorder["cameras"] = [{"id": first, "url": sim.url("cam0")}, {"id": second, "url": sim.url("cam1")}]
    document["pairs"] = [
        {
            "a": {"recorder": "rec-a", "camera": "lobby"},
            "b": {"recorder": "rec-b", "camera": "entrance"},
            "failback": "backfilled",  # back to rec-a only once its hole is filled
        },
        {"a": {"recorder": "rec-a", "camera": "gate"}, "b": {"recorder": "rec-b", "camera": "cam-17"}},
    ]
    management.config_path.write_text(yaml.safe_dump(document))
    a = managed_recorder(tmp_path, "rec-a", management)
    b = managed_recorder(tmp_path, "rec-b", management)
    reader = None
    try:
        management.start()
        a.start()
        b.start()
        wait_new_fragments([(a, "lobby"), (b, "entrance")], 2)

        def routed() -> dict[str, str]:
            listed = management.api.get("/api/v1/cameras").json()["cameras"]
            return {c["id"]: c["holder"] for c in listed}

        assert routed() == {"lobby": "rec-a", "gate": "rec-a"}
        reader = LiveReader(management.url, "lobby")
        reader.start()
        frames = LiveFramesReader(management.url, "lobby")  # the sub-second live stream, beside HLS
        frames.start()
        wait_for(lambda: len(reader.sequences) >= 3, 60, "the live reader to play")
        start = time.time()
        sim.control.post("/cameras/cam0/block", params={"client": "(rec-a)", "seconds": 12}).raise_for_status()
        wait_for(lambda: routed() == {"lobby": "rec-b", "gate": "rec-a"}, 20, "lobby alone routed to rec-b")
        time.sleep(4)  # while rec-a lacks lobby: the merged timeline and playback fill its hole from rec-b
        viewer = {"Authorization": f"Bearer {VIEWER_TOKEN}"}
        span = {"start": f"{start - 8:.3f}", "end": f"{time.time() - 1:.3f}"}
        with GatewayClient(management.url, VIEWER_TOKEN) as gateway:
            timeline = gateway.timeline("lobby", span["start"], span["end"])
        sources = [(i.recorder, i.camera) for i in timeline.intervals]
        assert sources == [("rec-a", "lobby"), ("rec-b", "entrance")], timeline  # nothing missing between
        playback = httpx.get(f"{management.url}/api/v1/cameras/lobby/playback.m3u8", params=span, headers=viewer)
        assert playback.status_code == 200 and "#EXT-X-GAP" not in playback.text, playback.text
        assert "#EXT-X-DISCONTINUITY" not in playback.text, playback.text  # one camera time, one profile
        uris = [line for line in playback.text.splitlines() if line and not line.startswith("#")]
        assert len(uris) >= 4, playback.text
        for uri in uris:
            assert httpx.get(f"{management.url}{uri}" if uri.startswith("/") else uri).status_code == 200, uri
        wait_for(lambda: routed()["lobby"] == "rec-a", 60, "lobby routed back to rec-a")
        jobs = [j for j in a.jobs() if j["camera"] == "lobby"]
        assert jobs and all(j["state"] == "done" for j in jobs), jobs  # whole again before viewers return
        a.wait_fragments("lobby", 3)
        time.sleep(4)
        reader.stop()
        frames.stop()
        assert_continuous(reader)  # every segment once, in order, no gap: frame numbers continuous
        steps = [b - a for a, b in itertools.pairwise(frames.frames)]
        assert len(frames.frames) > 500 and all(step == 1 for step in steps), frames.frames[:5]  # none twice or skipped
        assert frames.sources == ["rec-a", "rec-b", "rec-a"], (frames.sources, frames.errors)
        audit_clean(a, "lobby", start, time.time() - 3)  # the primary backfilled what it missed
        log = (tmp_path / "mgmt.log").read_text()
        assert "pair lobby: rec-a:lobby's feed is not recording; routed to rec-b:entrance" in log
        assert "pair gate" not in log
        listed = management.api.get("/api/v1/events", params={"kind": "route"}).json()["events"]  # the event log
        routes = [(e["camera"], e["message"]) for e in listed]
        assert routes[0] == ("lobby", "pair lobby: rec-a:lobby's feed is not recording; routed to rec-b:entrance")
        assert routes[-1] == ("lobby", "pair lobby: rec-a:lobby records again; routed back to it"), routes

    finally:
        if reader is not None:
            reader.stop()
            frames.stop()
        for rec in (a, b):
            rec.close()
        management.close()


def test_a_sub_stream_secondary_with_shorter_retention(tmp_path, make_sim):
    """The primary records the 25 fps main stream; the secondary the 10 fps sub-stream, keeping 20 s.
    The primary loses the feed: live goes to the secondary; the primary backfills the hole at the
    sub-stream's rate; the gateway's timeline, playback and export carry on across the switch of
    resolution and frame rate. The secondary, down longer than it keeps footage, backfills only what
    its retention keeps; the timeline never shows what neither side holds."""
    # Longer than the primary takes from losing the feed to backfilling (a 6 s block, the reconnect
    # back-off, settling its time, its first 2 s GOP: ~14 s here, more under load), or the secondary's
    # retention would drop the hole's first GOPs before the primary asks for them.
    keep_s = 20
    sim = make_sim(cameras=1, substream="320x180@10")
    management = Management(tmp_path, sim)
    document = yaml.safe_load(management.config_path.read_text())
    document["clusters"] = []
    sub = {"id": "entrance", "url": sim.url("cam0-sub"), "retention": {"max_age": f"{keep_s}s"}}
    cameras = {"rec-a": [{"id": "lobby", "url": sim.url("cam0")}], "rec-b": [sub]}
    for recorder in document["recorders"]:
        recorder["cameras"] = cameras[recorder["id"]]
    pair = {"recorder": "rec-a", "camera": "lobby"}, {"recorder": "rec-b", "camera": "entrance"}
    document["pairs"] = [{"a": pair[0], "b": pair[1], "failback": "backfilled"}]
    management.config_path.write_text(yaml.safe_dump(document))
    a = managed_recorder(tmp_path, "rec-a", management)
    b = managed_recorder(tmp_path, "rec-b", management, chunk={"max_duration": "2s"})  # retention deletes chunks
    gateway = GatewayClient(management.url, VIEWER_TOKEN)

    def held(rec: Recorder, camera: str, start: float, end: float) -> list[tuple[float, float]]:
        span = {"start": f"{start:.3f}", "end": f"{end:.3f}"}
        found = rec.api.get(f"/api/v1/cameras/{camera}/coverage", params=span).json()["intervals"]
        return [(parse_time_us(s) / 1e6, parse_time_us(e) / 1e6) for s, e in found]

    try:
        management.start()
        a.start()
        b.start()
        wait_new_fragments([(a, "lobby"), (b, "entrance")], 2)
        first = time.time()

        blocked = time.time()
        sim.control.post("/cameras/cam0/block", params={"client": "(rec-a)", "seconds": 6}).raise_for_status()
        wait_for(lambda: gateway.cameras().cameras[0].holder == "rec-b", 20, "lobby routed to rec-b")
        time.sleep(2)
        during = gateway.timeline("lobby", f"{blocked - 3:.3f}", f"{time.time() - 0.5:.3f}")
        assert [(i.recorder, i.camera) for i in during.intervals] == [("rec-a", "lobby"), ("rec-b", "entrance")]
        wait_for(lambda: gateway.cameras().cameras[0].holder == "rec-a", 60, "lobby routed back to rec-a")
        a.wait_fragments("lobby", 2)
        end = time.time() - 1

        span = {"start": f"{blocked - 4:.3f}", "end": f"{end:.3f}"}
        timeline = gateway.timeline("lobby", span["start"], span["end"])
        # The primary holds the hole again at the sub-stream's rate, from the sub-stream's first keyframe
        # in it: the frames of the sub-stream GOP that straddles the hole's start depend on frames the
        # primary does not have (another profile's), so they stay on the secondary only, for its
        # retention (20 s here: by now they may be gone). No other gap; what the secondary still holds
        # of the hole's edges, the merged timeline plays from it.
        sub_gop_s = 1.0  # the simulator's sub-stream: 10 fps, a keyframe every 10 frames
        bounds = [(parse_time_us(i.start) / 1e6, parse_time_us(i.end) / 1e6) for i in timeline.intervals]
        gaps = [(a[1], b[0]) for a, b in itertools.pairwise(bounds) if b[0] - a[1] >= 0.01]
        assert all(blocked - 0.5 <= s and e <= s + sub_gop_s + 0.1 for s, e in gaps), (blocked, bounds)
        assert len(gaps) <= 1, (blocked, bounds)
        from_b = [(s, e) for (s, e), i in zip(bounds, timeline.intervals, strict=True) if i.recorder == "rec-b"]
        assert sum(e - s for s, e in from_b) <= 2.2 and all(blocked - 1 <= s for s, _e in from_b), timeline
        playback = gateway.http.get("/api/v1/cameras/lobby/playback.m3u8", params=span)
        assert playback.status_code == 200 and "#EXT-X-GAP" not in playback.text, playback.text
        assert playback.text.count("#EXT-X-MAP") >= 3 and "#EXT-X-DISCONTINUITY" in playback.text, playback.text
        uris = [line for line in playback.text.splitlines() if line and not line.startswith("#")]
        for uri in uris:
            assert httpx.get(f"{management.url}{uri}").status_code == 200, uri
        path = tmp_path / "lobby.mp4"
        size = gateway.export("lobby", span["start"], span["end"], path)
        assert size == path.stat().st_size > 0
        sizes, last, frames = set(), None, 0
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                assert last is None or frame.pts > last
                last, frames = frame.pts, frames + 1
                sizes.add((frame.width, frame.height))
        # main, the backfilled sub-stream, main
        assert sizes == {(640, 360), (320, 180)}, (sizes, timeline)
        assert frames >= (end - blocked - 6) * 25 + 6 * 10 - 30, frames

        earlier = {j["id"] for j in b.jobs()}
        b.proc.kill()  # the secondary, down longer than it keeps footage
        time.sleep(keep_s + 4)
        b.start()
        back = time.time()

        def refilled() -> list[dict]:
            jobs = [j for j in b.jobs() if j["id"] not in earlier]
            return jobs if jobs and all(j["state"] == "done" for j in jobs) else []

        jobs = wait_for(refilled, 60, "rec-b to backfill its downtime")
        floor_us = (back - keep_s - 1) * 1e6
        assert all(j["start_us"] >= floor_us for j in jobs), (back, jobs)  # never what it would delete
        wait_for(lambda: held(b, "entrance", first - 60, time.time())[0][0] > end, 30, "rec-b's retention")
        # Up to the end of what the primary has stored: its newest GOP (2 s) may still be in the
        # making while the secondary's 1 s GOPs are stored, and the timeline rightly fills that tail.
        now = held(a, "lobby", first - 2, time.time())[-1][1]
        timeline = gateway.timeline("lobby", f"{first - 2:.3f}", f"{now:.3f}")
        union = held(a, "lobby", first - 2, now) + held(b, "entrance", first - 2, now)
        for interval in timeline.intervals:  # nothing shown that neither side holds
            s, e = parse_time_us(interval.start) / 1e6, parse_time_us(interval.end) / 1e6
            assert any(u0 <= s + 1e-3 and e - 1e-3 <= u1 for u0, u1 in union), (interval, union)
        bounds = [(parse_time_us(i.start) / 1e6, parse_time_us(i.end) / 1e6) for i in timeline.intervals]
        sources = [i.recorder for i in timeline.intervals]
        assert set(sources) == {"rec-a"}, (blocked, back, now, bounds, sources)
        gaps = [(a[1], b[0]) for a, b in itertools.pairwise(bounds)]
        assert all(blocked - 0.5 <= s and e <= s + sub_gop_s + 0.1 for s, e in gaps), (blocked, bounds)
        old = tmp_path / "old.mp4"  # only the primary keeps this now: the export comes from it
        gateway.export("lobby", f"{first - 2:.3f}", f"{first - 0.2:.3f}", old, layout="progressive")
        with av.open(str(old)) as container:
            assert {(f.width, f.height) for f in container.decode(video=0)} == {(640, 360)}
        refused = gateway.http.get("/api/v1/cameras/lobby/export.mp4", params={"start": "1", "end": "x"})
        assert refused.status_code == 400 and "end" in refused.json()["error"], refused.text
    finally:
        gateway.close()
        for rec in (a, b):
            rec.close()
        management.close()
