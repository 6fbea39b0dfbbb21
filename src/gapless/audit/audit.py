"""`gapless audit`: prove what a recorder's archive holds for one camera and time range.

Reads the coverage and every fragment's bytes through the recorder's API (verifying each
checksum), then reports coverage gaps and, for streams stamped with the Gapless SEI, missing and
duplicated frame numbers per stamped stream. It also checks time itself: fragments that overlap,
fragments shorter than their frames, and fragments whose time disagrees with when they arrived
beyond the bound of docs/design/storage.md. For cameras with audio it checks that the audio is
continuous where the video is (every unit starts where the one before it ends, within half a unit),
and that it never overlaps itself. `compare` lists what a second recorder holds that the first
lacks: time, frame-exact for SEI streams, and audio units by their bytes.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import defaultdict
from dataclasses import dataclass, field

import httpx

from gapless.common.timeparse import iso, parse_time_us
from gapless.contracts.recorder import Coverage, FragmentInfo, FragmentList, corrupt_refusal
from gapless.ingest.clock import ARRIVAL_BOUND_US
from gapless.media.audio import AudioFormat, audio_of_init
from gapless.media.fmp4 import AUDIO_TRACK_ID, TRACK_ID, parse_tracks
from gapless.media.h264 import find_stamp, split_avcc
from gapless.storage.coverage import holes, intersect

#: An edge of the audited window counts as uncovered beyond this (a fragment ends on a frame time).
EDGE_SLACK_US = 100_000
#: How far past an uncovered edge the audit looks for footage that would make the edge a hole.
EDGE_LOOK_US = 3_600_000_000
#: A fragment's first frame arrives within this of its time: the clock's bound, plus the stream
#: reader's wait (0.5 s) and a camera's encoding and network latency.
ARRIVAL_SLACK_US = ARRIVAL_BOUND_US + 1_500_000
#: No frame is shorter than this (1000 frames a second).
MIN_FRAME_US = 1_000


@dataclass
class StreamFrames:
    """The frame numbers of one SEI-stamped stream (a camera's main or sub-stream)."""

    frames: int = 0
    first: int | None = None
    last: int | None = None
    missing: list[tuple[int, int]] = field(default_factory=list)  # inclusive ranges
    duplicates: list[int] = field(default_factory=list)


@dataclass
class AuditReport:
    camera: str
    intervals: list[tuple[str, str]]
    fragments: int = 0
    frames: int = 0
    first_frame: int | None = None
    last_frame: int | None = None
    missing: list[tuple[int, int]] = field(default_factory=list)  # inclusive ranges, over all streams
    duplicates: list[int] = field(default_factory=list)
    bad_checksums: list[int] = field(default_factory=list)
    #: Time that cannot be true: overlapping fragments, fragments shorter than their frames, time
    #: that disagrees with arrival beyond ARRIVAL_SLACK_US. Not loss, but `gapless audit` exits 1.
    time_problems: list[str] = field(default_factory=list)
    streams: dict[str, StreamFrames] = field(default_factory=dict)
    audio_units: int = 0
    #: Holes in the audio inside covered video, as (time, seconds); the audio's own loss.
    audio_gaps: list[tuple[str, float]] = field(default_factory=list)
    #: Seconds of the window before the first / after the last covered interval, and whether the
    #: recorder holds footage beyond that edge (then the uncovered edge is a hole, i.e. loss; else
    #: the window simply reaches past what was recorded, e.g. into the GOP being recorded now).
    uncovered_head_s: float = 0.0
    uncovered_tail_s: float = 0.0
    head_is_hole: bool = False
    tail_is_hole: bool = False

    @property
    def gaps(self) -> int:
        """Holes between covered intervals, plus uncovered edges that recorded footage encloses."""
        return max(0, len(self.intervals) - 1) + int(self.head_is_hole) + int(self.tail_is_hole)

    @property
    def lost(self) -> bool:
        return bool(
            self.gaps or self.missing or self.duplicates or self.bad_checksums or self.audio_gaps or not self.intervals
        )

    @property
    def failed(self) -> bool:
        return self.lost or bool(self.time_problems)


@dataclass
class CompareReport:
    """What recorder B holds of a camera that recorder A lacks."""

    camera: str
    only_in_b: list[tuple[int, int]]  # camera-time intervals (µs)
    frames_only_in_b: dict[str, list[tuple[int, int]]]  # per stamped stream, inclusive ranges
    audio_only_in_b: int = 0  # audio units (by their bytes) that B holds and A does not

    @property
    def lost(self) -> bool:
        return bool(self.only_in_b or any(self.frames_only_in_b.values()) or self.audio_only_in_b)


def _ranges(numbers: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for number in sorted(set(numbers)):
        if out and number == out[-1][1] + 1:
            out[-1] = (out[-1][0], number)
        else:
            out.append((number, number))
    return out


def _client(url: str, token: str, timeout: float) -> httpx.Client:
    return httpx.Client(base_url=url.rstrip("/"), headers={"Authorization": f"Bearer {token}"}, timeout=timeout)


@dataclass(frozen=True, slots=True)
class _AudioUnit:
    start_us: int
    end_us: int
    sha256: str


@dataclass
class _Archive:
    """What the audit read: the report so far, frame numbers per stamped stream, and audio units."""

    report: AuditReport
    numbers: dict[str, list[int]]
    audio: list[_AudioUnit]


def _read(client: httpx.Client, camera: str, params: dict) -> _Archive:
    cov = client.get(f"/api/v1/cameras/{camera}/coverage", params=params)
    cov.raise_for_status()
    report = AuditReport(camera, list(Coverage.model_validate_json(cov.content).intervals))
    listing = client.get(f"/api/v1/cameras/{camera}/fragments", params=params)
    listing.raise_for_status()
    numbers: dict[str, list[int]] = defaultdict(list)
    audio: list[_AudioUnit] = []
    formats: dict[str, AudioFormat | None] = {}
    metas = FragmentList.model_validate_json(listing.content).fragments
    report.time_problems = time_problems(metas)
    for meta in metas:
        body = client.get(f"/api/v1/fragments/{meta.id}")
        report.fragments += 1
        if body.status_code == 500 and corrupt_refusal(body.content):  # the recorder's own copy is damaged
            report.bad_checksums.append(meta.id)
            continue
        body.raise_for_status()
        if hashlib.sha256(body.content).hexdigest() != meta.sha256:
            report.bad_checksums.append(meta.id)
            continue
        tracks = parse_tracks(body.content)
        for sample in tracks.get(TRACK_ID, []):
            report.frames += 1
            stamp = find_stamp(split_avcc(sample.data))
            if stamp is not None:
                numbers[stamp.camera].append(stamp.frame)
        if AUDIO_TRACK_ID in tracks:
            if meta.init not in formats:
                init = client.get(f"/api/v1/inits/{meta.init}")
                init.raise_for_status()
                formats[meta.init] = audio_of_init(init.content)
            audio += _audio_units(tracks[AUDIO_TRACK_ID], formats[meta.init])
    audio.sort(key=lambda unit: unit.start_us)
    report.audio_units = len(audio)
    return _Archive(report, numbers, audio)


def _audio_units(samples: list, audio: AudioFormat | None) -> list[_AudioUnit]:
    if audio is None:
        return []
    rate = audio.rate
    return [
        _AudioUnit(
            s.dts * 1_000_000 // rate,
            (s.dts + audio.samples_in(s.data)) * 1_000_000 // rate,
            hashlib.sha256(s.data).hexdigest(),
        )
        for s in samples
    ]


def audio_problems(
    units: list[_AudioUnit], covered: list[tuple[int, int]]
) -> tuple[list[tuple[str, float]], list[str]]:
    """Gaps in the audio where the video is covered, and audio that overlaps itself (units sorted)."""
    gaps: list[tuple[str, float]] = []
    overlaps: list[str] = []
    for prev, cur in itertools.pairwise(units):
        slack = (prev.end_us - prev.start_us) // 2
        if cur.start_us < prev.end_us - slack:
            overlaps.append(f"audio units at {iso(prev.start_us)} and {iso(cur.start_us)} overlap")
        elif cur.start_us > prev.end_us + slack and intersect([(prev.end_us, cur.start_us)], covered):
            gaps.append((iso(prev.end_us), (cur.start_us - prev.end_us) / 1e6))
    return gaps, overlaps


def time_problems(metas: list[FragmentInfo]) -> list[str]:
    """What in a fragment listing (sorted by start) cannot be true of time."""
    problems = []
    previous: FragmentInfo | None = None
    for meta in metas:
        start, end, frames = meta.start_us, meta.end_us, meta.frames
        if end - start < frames * MIN_FRAME_US:
            problems.append(f"fragment {meta.id} at {iso(start)}: {frames} frames in {end - start} µs")
        arrival = meta.arrival_us
        if arrival is not None and abs(arrival - start) > ARRIVAL_SLACK_US:
            problems.append(
                f"fragment {meta.id} at {iso(start)} arrived {(arrival - start) / 1e6:+.1f} s from its time"
            )
        if previous is not None and start < previous.end_us:
            problems.append(
                f"fragments {previous.id} and {meta.id} overlap by {previous.end_us - start} µs at {iso(start)}"
            )
        if previous is None or end > previous.end_us:
            previous = meta
    return problems


def _recorded_between(client: httpx.Client, camera: str, start_us: int, end_us: int) -> bool:
    listing = client.get(
        f"/api/v1/cameras/{camera}/fragments", params={"start": f"{start_us / 1e6:.6f}", "end": f"{end_us / 1e6:.6f}"}
    )
    listing.raise_for_status()
    return bool(FragmentList.model_validate_json(listing.content).fragments)


def _edges(client: httpx.Client, report: AuditReport, start_us: int, end_us: int) -> None:
    if not report.intervals:
        return
    first, last = parse_time_us(report.intervals[0][0]), parse_time_us(report.intervals[-1][1])
    if first - start_us > EDGE_SLACK_US:
        report.uncovered_head_s = (first - start_us) / 1e6
        report.head_is_hole = _recorded_between(client, report.camera, start_us - EDGE_LOOK_US, start_us)
    if end_us - last > EDGE_SLACK_US:
        report.uncovered_tail_s = (end_us - last) / 1e6
        report.tail_is_hole = _recorded_between(client, report.camera, end_us, end_us + EDGE_LOOK_US)


def audit(recorder_url: str, token: str, camera: str, start: str, end: str, timeout: float = 30.0) -> AuditReport:
    params = _params(start, end)
    with _client(recorder_url, token, timeout) as client:
        archive = _read(client, camera, params)
        report, numbers = archive.report, archive.numbers
        _edges(client, report, parse_time_us(start), parse_time_us(end))
    covered = [(parse_time_us(a), parse_time_us(b)) for a, b in report.intervals]
    report.audio_gaps, overlaps = audio_problems(archive.audio, covered)
    report.time_problems += overlaps
    for stream, found in sorted(numbers.items()):
        found.sort()
        frames = StreamFrames(len(found), found[0], found[-1])
        for prev, cur in itertools.pairwise(found):
            if cur == prev:
                frames.duplicates.append(cur)
            elif cur > prev + 1:
                frames.missing.append((prev + 1, cur - 1))
        report.streams[stream] = frames
        report.missing += frames.missing
        report.duplicates += frames.duplicates
    if len(report.streams) == 1:
        only = next(iter(report.streams.values()))
        report.first_frame, report.last_frame = only.first, only.last
    return report


def compare(
    recorder_a: str,
    token_a: str,
    recorder_b: str,
    token_b: str,
    camera: str,
    start: str,
    end: str,
    camera_b: str | None = None,
    timeout: float = 30.0,
) -> CompareReport:
    params = _params(start, end)
    with _client(recorder_a, token_a, timeout) as client_a, _client(recorder_b, token_b, timeout) as client_b:
        archive_a = _read(client_a, camera, params)
        archive_b = _read(client_b, camera_b or camera, params)
    report_a, numbers_a, report_b, numbers_b = archive_a.report, archive_a.numbers, archive_b.report, archive_b.numbers
    covered_a = [(parse_time_us(a), parse_time_us(b)) for a, b in report_a.intervals]
    covered_b = [(parse_time_us(a), parse_time_us(b)) for a, b in report_b.intervals]
    lo, hi = parse_time_us(start), parse_time_us(end)
    only_in_b = intersect(holes(covered_a, lo, hi), covered_b)
    frames_only_in_b = {
        stream: _ranges(sorted(set(found) - set(numbers_a.get(stream, ()))))
        for stream, found in sorted(numbers_b.items())
    }
    audio_a = {unit.sha256 for unit in archive_a.audio}
    audio_only_in_b = sum(unit.sha256 not in audio_a for unit in archive_b.audio)
    return CompareReport(camera, only_in_b, frames_only_in_b, audio_only_in_b)


def _params(start: str, end: str) -> dict:
    start_us, end_us = parse_time_us(start), parse_time_us(end)
    return {"start": f"{start_us / 1e6:.6f}", "end": f"{end_us / 1e6:.6f}"}
