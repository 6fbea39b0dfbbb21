"""The standby third level: a pair's standby recorder takes a camera only when both sides have lost
its feed, releases it when one has it again, and both sides backfill what it recorded; the gateway
routes the camera to the standby meanwhile. The choice itself with a fake clock."""

from __future__ import annotations

import time

import yaml
from cluster_harness import Management, managed_recorder
from conftest import TOKEN, audit_clean, free_port, wait_for, wait_new_fragments

from gapless.audit.audit import audit
from gapless.cluster.standby import RELEASE_AFTER_S, TAKE_AFTER_S, StandbyChoice
from gapless.common.timeparse import parse_time_us
from gapless.config.cluster import CameraRef, StandbyCamera
from gapless.config.recorder import CameraConfig

STANDBY_CREDENTIAL = "rec-c-credential-0000000001"


def test_the_standby_takes_only_when_both_sides_lost_the_feed_and_holds_through_flaps():
    now = [0.0]
    choice = StandbyChoice(lambda: now[0])
    cameras = [
        StandbyCamera(
            camera=CameraConfig(id="lobby", url="rtsp://10.0.0.5/cam0"),
            watches=[CameraRef(recorder="rec-a", camera="lobby"), CameraRef(recorder="rec-b", camera="entrance")],
        )
    ]
    both = {("rec-a", "lobby"): "recording", ("rec-b", "entrance"): "recording"}
    assert choice.update(cameras, both) == set()
    one_left = {("rec-a", "lobby"): "down", ("rec-b", "entrance"): "recording"}
    now[0] = 10
    assert choice.update(cameras, one_left) == set()  # one side still records: never taken
    none_left = {("rec-a", "lobby"): "down"}  # rec-b publishes nothing: dead
    now[0] = 20
    assert choice.update(cameras, none_left) == set()  # not yet: the hold
    now[0] = 20 + TAKE_AFTER_S / 2
    assert choice.update(cameras, both) == set()  # a flap resets it
    assert choice.update(cameras, none_left) == set()
    now[0] += TAKE_AFTER_S
    assert choice.update(cameras, none_left) == {"lobby"}
    now[0] += 1
    assert choice.update(cameras, one_left) == {"lobby"}  # held while the side proves itself
    now[0] += RELEASE_AFTER_S / 2
    assert choice.update(cameras, none_left) == {"lobby"}
    assert choice.update(cameras, one_left) == {"lobby"}
    now[0] += RELEASE_AFTER_S
    assert choice.update(cameras, one_left) == set()
    assert choice.update([], none_left) == set()  # the pair gone: nothing kept


def test_a_standby_records_while_both_sides_lose_the_camera_and_both_backfill_from_it(tmp_path, make_sim):
    sim = make_sim(cameras=1)
    management = Management(tmp_path, sim)
    management.recorder_ports["rec-c"] = free_port()
    document = yaml.safe_load(management.config_path.read_text())
    document["clusters"] = []
    cameras = {
        "rec-a": [{"id": "lobby", "url": sim.url("cam0")}],
        "rec-b": [{"id": "entrance", "url": sim.url("cam0")}],
    }
    for recorder in document["recorders"]:
        recorder["cameras"] = cameras[recorder["id"]]
    port = management.recorder_ports["rec-c"]
    document["recorders"].append({"id": "rec-c", "url": f"http://127.0.0.1:{port}", "token": TOKEN, "cameras": []})
    document["credentials"].append(
        {"id": "rec-c-key-1", "role": "recorder", "recorder": "rec-c", "token": STANDBY_CREDENTIAL}
    )
    pair = {"a": {"recorder": "rec-a", "camera": "lobby"}, "b": {"recorder": "rec-b", "camera": "entrance"}}
    document["pairs"] = [{**pair, "standby": "rec-c"}]
    management.config_path.write_text(yaml.safe_dump(document))
    a = managed_recorder(tmp_path, "rec-a", management)
    b = managed_recorder(tmp_path, "rec-b", management)
    c = managed_recorder(tmp_path, "rec-c", management, credential=STANDBY_CREDENTIAL)

    def routed() -> str | None:
        return next(x["holder"] for x in management.api.get("/api/v1/cameras").json()["cameras"] if x["id"] == "lobby")

    def standby_records() -> bool:
        return "lobby" in c.health()["cameras"]

    try:
        management.start()
        for rec in (a, b, c):
            rec.start()
        wait_new_fragments([(a, "lobby"), (b, "entrance")], 2)
        time.sleep(TAKE_AFTER_S + 1)
        assert not standby_records()  # both sides record: the standby pulls nothing
        start = time.time()
        for client in ("(rec-a)", "(rec-b)"):
            sim.control.post("/cameras/cam0/block", params={"client": client, "seconds": 12}).raise_for_status()
        wait_for(standby_records, 30, "the standby to take lobby")
        c.wait_fragments("lobby", 2)
        wait_for(lambda: routed() == "rec-c", 20, "lobby routed to the standby")
        wait_for(lambda: not standby_records(), 60, "the standby to release lobby")
        assert routed() in ("rec-a", "rec-b")
        wait_new_fragments([(a, "lobby"), (b, "entrance")], 2)
        for rec in (a, b):
            wait_for(lambda rec=rec: rec.jobs() and all(j["state"] == "done" for j in rec.jobs()), 60, "backfill")
        end = time.time() - 3
        # From the standby's first frame on, both sides hold every frame: what it recorded while they
        # had lost the feed is backfilled to both. Before it, the seconds until both sides' loss was
        # seen and the standby connected: no recorder received those frames (the camera keeps none).
        taken = audit(c.url, TOKEN, "lobby", str(start), str(end))
        taken_from = parse_time_us(taken.intervals[0][0]) / 1e6
        assert taken.frames > 0 and not taken.missing and not taken.duplicates, taken
        audit_clean(a, "lobby", taken_from, end)
        audit_clean(b, "entrance", taken_from, end)
        for rec, camera in ((a, "lobby"), (b, "entrance")):
            whole = audit(rec.url, TOKEN, camera, str(start), str(end))
            assert all(last < taken.first_frame for _first, last in whole.streams["cam0"].missing), (whole, taken)
        assert any(j["source"] == "rec-c" for j in a.jobs()) and any(j["source"] == "rec-c" for j in b.jobs())
        log = c.log.read_text()
        assert "neither rec-a:lobby and rec-b:entrance records lobby; taking it" in log, log[-2000:]
        assert "records again on a side of its pair; released" in log
    finally:
        for rec in (a, b, c):
            rec.close()
        management.close()
