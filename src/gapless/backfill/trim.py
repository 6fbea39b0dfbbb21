"""Edge trimming: keep exactly the frames of a partner's fragment that this recorder lacks.

Two recorders of one camera give a frame the same camera time, so "lacks" is decided per frame by
camera time: a frame is held when one of our fragments spans its time (with half a frame of slack
for rounding and jitter). Whatever our own archive holds wins; from the partner's fragment only the
frames that fall into our holes are kept, as one new fragment per contiguous run. A run may begin
with a frame that is not a keyframe (our own fragment before it ends mid-GOP): played in order it
decodes, because the frames it depends on are the ones we already hold.
"""

from __future__ import annotations

from dataclasses import dataclass

from gapless.media.fmp4 import Sample, build_fragment, parse_fragment, ticks_to_us


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


def missing_runs(payload: bytes, start_us: int, end_us: int, seq: int, covered: list[tuple[int, int]]) -> list[KeptRun]:
    """The runs of frames in the fragment `payload` (spanning start_us..end_us) that no interval in
    `covered` holds. The whole fragment comes back unchanged when nothing of it is held."""
    samples = parse_fragment(payload)
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
    if len(runs) == 1 and len(runs[0]) == len(samples):
        return [KeptRun(start_us, end_us, len(samples), payload, samples[0].keyframe, whole=True)]
    kept = []
    for run in runs:
        first, last = run[0], run[-1]
        shown = [s.dts + s.cts_offset for s in run]
        run_start = start_us if first is samples[0] else ticks_to_us(min(shown))
        run_end = end_us if last is samples[-1] else ticks_to_us(max(shown) + last.duration)
        kept.append(KeptRun(run_start, run_end, len(run), build_fragment(seq, run), first.keyframe))
    return kept
