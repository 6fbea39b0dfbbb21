"""The gateway's per-camera choice for a pair, with a fake clock and fake feed states: away from
the primary only to a secondary that records, back only after the primary has recorded for the
hold time, and a flapping primary does not flap viewers; what a pair's live view holds back, and where its
segments are fetched from."""

from __future__ import annotations

import dataclasses

from gapless.config.cluster import CameraPair, CameraRef
from gapless.gateway.gateway import Listing, Row, without_cut_gop
from gapless.gateway.routing import EXPORT_TIE_US, FAILBACK_HOLD_S, Feed, PairRouting, export_order
from gapless.media.hls import side_segment_path, vod_playlist

PAIR = CameraPair(a=CameraRef(recorder="rec-a", camera="lobby"), b=CameraRef(recorder="rec-b", camera="entrance"))


class World:
    def __init__(self, pair: CameraPair = PAIR) -> None:
        self.now, self.pair = 100.0, pair
        self.feeds: dict[tuple[str, str], str | None] = {
            ("rec-a", "lobby"): "recording",
            ("rec-b", "entrance"): "recording",
        }
        self.backlog = 0  # the primary's open backfill jobs of the camera

        def feed_of(recorder: str, camera: str) -> Feed | None:
            state = self.feeds.get((recorder, camera))
            return None if state is None else Feed(state, self.backlog if recorder == "rec-a" else 0)

        self.routing = PairRouting(feed_of, lambda: self.now)

    def active(self) -> str:
        return self.routing.route(self.pair).sources[0].recorder

    def primary(self, state: str | None) -> None:
        self.feeds[("rec-a", "lobby")] = state


def test_primary_while_it_records_and_the_secondary_when_it_does_not():
    world = World()
    assert world.active() == "rec-a"
    route = world.routing.route(PAIR)
    assert [(s.recorder, s.camera) for s in route.sources] == [("rec-a", "lobby"), ("rec-b", "entrance")]
    for lost in ("down", "lagging", None):  # None: rec-a publishes nothing (dead, its lease gone)
        world = World()
        world.primary(lost)
        assert world.active() == "rec-b"
        assert [s.camera for s in world.routing.route(PAIR).sources] == ["entrance", "lobby"]


def test_back_to_the_primary_only_after_it_recorded_for_the_hold_time():
    world = World()
    world.primary("down")
    assert world.active() == "rec-b"
    world.primary("recording")
    assert world.active() == "rec-b"
    world.now += FAILBACK_HOLD_S - 0.1
    assert world.active() == "rec-b"
    world.now += 0.2
    assert world.active() == "rec-a"


def test_a_flapping_primary_does_not_flap_viewers():
    world = World()
    world.primary("down")
    assert world.active() == "rec-b"
    for _ in range(10):  # up for a second, down again, ten times
        world.primary("recording")
        assert world.active() == "rec-b"
        world.now += 1.0
        world.primary("lagging")
        assert world.active() == "rec-b"
        world.now += 1.0
    world.primary("recording")
    world.now += FAILBACK_HOLD_S / 2
    assert world.active() == "rec-b"


def test_nowhere_better_to_go_stays_put():
    world = World()
    world.primary("down")
    world.feeds[("rec-b", "entrance")] = "down"
    assert world.active() == "rec-a"  # the secondary does not record either: no move
    world.feeds[("rec-b", "entrance")] = "recording"
    assert world.active() == "rec-b"
    world.feeds[("rec-b", "entrance")] = "down"
    world.primary("recording")
    assert world.active() == "rec-a"  # the secondary lost it too: back without waiting


def test_failback_backfilled_waits_until_the_primary_is_whole_again():
    for policy, back_after_hold in (("at-once", True), ("backfilled", False)):
        world = World(PAIR.model_copy(update={"failback": policy}))
        world.primary("down")
        assert world.active() == "rec-b"
        world.primary("recording")
        world.backlog = 1  # the primary fills its hole from the secondary
        assert world.active() == "rec-b"  # seen recording again: the hold may start
        world.now += FAILBACK_HOLD_S + 1
        assert (world.active() == "rec-a") == back_after_hold, policy
    world.backlog = 0  # backfill done: the hold starts now
    assert world.active() == "rec-b"
    world.now += FAILBACK_HOLD_S + 0.1
    assert world.active() == "rec-a"


def _row(start_s: float, run: str, keyframe_first: bool = True, frames: int = 25) -> Row:
    start = int(start_s * 1e6)
    return Row(start, start + frames * 40_000, frames, "init", keyframe_first, run, "rec-a")


def test_a_gop_cut_by_the_end_of_its_session_is_held_back_from_a_pairs_live_view():
    """The newest GOP of an ended run may be cut short (the feed was lost inside it): a viewer who
    took it could never take the secondary's fuller copy (same media sequence), so it waits."""
    rows = [_row(0, "r1"), _row(1, "r1"), _row(2, "r1", frames=10)]
    assert without_cut_gop(Listing(rows, "rec-a", "r1")) == rows  # still recording: nothing held
    assert without_cut_gop(Listing(rows, "rec-a", None)) == rows[:2]  # session over
    assert without_cut_gop(Listing(rows, "rec-a", "r2")) == rows[:2]  # a new session has not delivered yet
    split = [*rows[:2], _row(2, "r1", frames=6), _row(2.4, "r1", keyframe_first=False, frames=4)]
    assert without_cut_gop(Listing(split, "rec-a", None)) == rows[:2]  # every piece of the cut GOP
    new_run = [*rows, _row(5, "r2")]
    assert without_cut_gop(Listing(new_run, "rec-a", "r2")) == new_run  # the old run's end is not the newest
    assert without_cut_gop(Listing([_row(0, "r1")], "rec-a", None)) == []
    assert without_cut_gop(Listing([], "rec-a", None)) == []


def test_a_pairs_playlist_names_the_recorder_of_each_segment():
    first, second = _row(0, "r1"), _row(1, "r1")
    rows = [first, dataclasses.replace(second, source="rec-b")]
    text = vod_playlist(
        rows,
        segment_uri=lambda s: side_segment_path("lobby", s.source, s.start_us),
        init_uri=lambda init: f"/inits/{init}.mp4",
    )
    assert "/api/v1/cameras/lobby/recorders/rec-a/segments/0.m4s" in text
    assert "/api/v1/cameras/lobby/recorders/rec-b/segments/1000000.m4s" in text


def test_an_export_comes_from_the_side_holding_more_unless_they_nearly_tie():
    """Within EXPORT_TIE_US the active side (first) wins; beyond it, the side holding more."""
    second = 1_000_000
    assert export_order([20 * second, 21 * second]) == [0, 1]  # a backfilled primary, one GOP short
    assert export_order([21 * second, 20 * second]) == [0, 1]
    assert export_order([5 * second, 21 * second]) == [1, 0]  # the primary lost most of the range
    assert export_order([21 * second - EXPORT_TIE_US, 21 * second]) == [1, 0]
    assert export_order([0, 0]) == [0, 1]
    assert export_order([3 * second, 30 * second, 10 * second]) == [1, 2, 0]
