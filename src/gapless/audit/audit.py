"""`gapless audit`: prove what a recorder's archive holds for one camera and time range.

Reads the coverage and every fragment's bytes through the recorder's API (verifying each
checksum), then reports coverage gaps and, for streams stamped with the Gapless SEI, missing and
duplicated frame numbers.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field

import httpx

from gapless.media.fmp4 import parse_fragment
from gapless.media.h264 import find_stamp, split_avcc
from gapless.recorder.timeparse import parse_time_us


@dataclass
class AuditReport:
    camera: str
    intervals: list[tuple[str, str]]
    fragments: int = 0
    frames: int = 0
    first_frame: int | None = None
    last_frame: int | None = None
    missing: list[tuple[int, int]] = field(default_factory=list)  # inclusive ranges of frame numbers
    duplicates: list[int] = field(default_factory=list)
    bad_checksums: list[int] = field(default_factory=list)

    @property
    def gaps(self) -> int:
        return max(0, len(self.intervals) - 1)

    @property
    def lost(self) -> bool:
        return bool(self.gaps or self.missing or self.duplicates or self.bad_checksums or not self.intervals)


def audit(recorder_url: str, token: str, camera: str, start: str, end: str, timeout: float = 30.0) -> AuditReport:
    start_us, end_us = parse_time_us(start), parse_time_us(end)
    params = {"start": f"{start_us / 1e6:.6f}", "end": f"{end_us / 1e6:.6f}"}
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=recorder_url.rstrip("/"), headers=headers, timeout=timeout) as client:
        cov = client.get(f"/api/v1/cameras/{camera}/coverage", params=params)
        cov.raise_for_status()
        report = AuditReport(camera, [tuple(i) for i in cov.json()["intervals"]])
        listing = client.get(f"/api/v1/cameras/{camera}/fragments", params=params)
        listing.raise_for_status()
        numbers: list[int] = []
        for meta in listing.json()["fragments"]:
            body = client.get(f"/api/v1/fragments/{meta['id']}")
            body.raise_for_status()
            report.fragments += 1
            if hashlib.sha256(body.content).hexdigest() != meta["sha256"]:
                report.bad_checksums.append(meta["id"])
                continue
            for sample in parse_fragment(body.content):
                report.frames += 1
                stamp = find_stamp(split_avcc(sample.data))
                if stamp is not None:
                    numbers.append(stamp.frame)
    if numbers:
        numbers.sort()
        report.first_frame, report.last_frame = numbers[0], numbers[-1]
        for prev, cur in itertools.pairwise(numbers):
            if cur == prev:
                report.duplicates.append(cur)
            elif cur > prev + 1:
                report.missing.append((prev + 1, cur - 1))
    return report
