"""Edge trimming: keep exactly the frames of a partner's fragment that this recorder lacks.

Two recorders of one camera give a frame the same camera time, so "lacks" is decided per frame by
camera time: a frame is held when one of our fragments spans its time (with half a frame of slack
for rounding and jitter). Whatever our own archive holds wins; from the partner's fragment only the
frames that fall into our holes are kept, as one new fragment per contiguous run. A run may begin
with a frame that is not a keyframe (our own fragment before it ends mid-GOP): played in order it
decodes, because the frames it depends on are the ones we already hold, but only when what we hold
just before it is the same stream (`continues`). A partner recording another profile (a pair's
sub-stream) encodes other frames: a run of its that begins mid-GOP after our own footage depends
on frames we do not have, so it begins at its next keyframe instead (the frames before stay on the
partner, which the merged timeline plays).

Audio goes with the video of its time: a fragment holds exactly the audio units whose time falls in
its span (ingest/fragmenter.py), so a kept run takes the partner's audio units in the run's span.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gapless.media.fmp4 import AUDIO_TRACK_ID, TRACK_ID, Sample, build_fragment, parse_tracks, ticks_to_us


@dataclass(frozen=True, slots=True)
class KeptRun:
    start_us: int
    end_us: int
    frames: int
    payload: bytes
    keyframe_first: bool
    whole: bool = False  # the partner's fragment unchanged (its verified checksum still holds)


def _held(time_us: int, slack_us: int, covered: list[tuple[int, int]]) -> bool:
    return any(start - slack_us <= time_us < end - slack_us for start, end in covered)


def missing_runs(
    payload: bytes,
    start_us: int,
    end_us: int,
    seq: int,
    covered: list[tuple[int, int]],
    audio_rate: int | None = None,
    continues: Callable[[int], bool] | None = None,
) -> list[KeptRun]:
    """The runs of frames in the fragment `payload` (spanning start_us..end_us) that no interval in
    `covered` holds, each fitted between what is held (see `_fit`), with the audio of their span
    (`audio_rate`: the audio track's timescale, when the camera has audio). The whole fragment comes
    back unchanged when nothing of it is held and it fits as it is. `continues(t)`: whether what we
    hold just before time t is the partner's stream (None: always); a run beginning mid-GOP where
    it is not begins at its next keyframe, or is dropped without one."""
    tracks = parse_tracks(payload)
    samples = tracks.get(TRACK_ID, [])
    audio = tracks.get(AUDIO_TRACK_ID, []) if audio_rate else []
    runs: list[list[Sample]] = []
    current: list[Sample] = []
    for sample in samples:
        slack = ticks_to_us(sample.duration) // 2
        if _held(ticks_to_us(sample.dts + sample.cts_offset), slack, covered):  # presentation time
            if current:
                runs.append(current)
                current = []
        else:
            current.append(sample)
    if current:
        runs.append(current)
    if continues is not None:
        runs = [_decodable(run, samples, start_us, continues) for run in runs]
    kept = []
    for run in filter(None, runs):
        first, last = run[0], run[-1]
        shown = [s.dts + s.cts_offset for s in run]
        run_start = start_us if first is samples[0] else ticks_to_us(min(shown))
        run_end = end_us if last is samples[-1] else ticks_to_us(max(shown) + last.duration)
        fitted = _fit(run, run_start, run_end, covered)
        if fitted is None and len(run) == len(samples):
            return [KeptRun(start_us, end_us, len(samples), payload, samples[0].keyframe, whole=True)]
        if fitted is not None:
            run, run_start, run_end = fitted
        span = [a for a in audio if run_start <= a.dts * 1_000_000 // (audio_rate or 1) < run_end]
        kept.append(KeptRun(run_start, run_end, len(run), build_fragment(seq, run, span), first.keyframe))
    return kept


def _decodable(
    run: list[Sample], samples: list[Sample], start_us: int, continues: Callable[[int], bool]
) -> list[Sample]:
    """The run from its first frame that decodes with what we hold before it ([] if none does)."""
    at = start_us if run[0] is samples[0] else ticks_to_us(run[0].dts + run[0].cts_offset)
    if run[0].keyframe or continues(at):
        return run
    first_key = next((i for i, sample in enumerate(run) if sample.keyframe), None)
    return [] if first_key is None else run[first_key:]


def _fit(
    run: list[Sample], start_us: int, end_us: int, covered: list[tuple[int, int]]
) -> tuple[list[Sample], int, int] | None:
    """The run moved to start where a held interval around its start ends, and its last frame cut
    to end where the next held interval starts; None when it already fits.

    Two recorders' times for one frame can differ by a few milliseconds (each confirms the camera's
    clock from its own sender reports), so a partner's frame that we lack can overlap our neighbour
    by less than half a frame (more, and it would count as held). One camera's archive never holds
    two fragments that overlap in time, so the borrowed frames give way, never ours."""
    shift = max((end - start_us for start, end in covered if start <= start_us < end), default=0)
    limit = min((start for start, _end in covered if start_us < start < end_us + shift), default=None)
    cut = 0 if limit is None else end_us + shift - limit
    if shift == 0 and cut <= 0:
        return None
    shift_ticks = -(-shift * 9 // 100)  # µs to 90 kHz ticks, rounded up: never short of the neighbour
    moved = [Sample(s.data, s.dts + shift_ticks, s.duration, s.cts_offset, s.keyframe) for s in run]
    if cut > 0:
        last = moved[-1]
        duration = max(1, last.duration - -(-cut * 9 // 100))
        moved[-1] = Sample(last.data, last.dts, duration, last.cts_offset, last.keyframe)
    return moved, start_us + shift, min(end_us + shift, limit) if limit is not None else end_us + shift
