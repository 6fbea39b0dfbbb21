"""Which camera of one recorder is which camera of another: proposals, each with a confidence, its
reasons and its conflicts (docs/design/identity.md, "Mapping").

Evidence, strongest first:
1. **hardware identity** (what the cameras said over ONVIF): the same endpoint reference, serial
   (of one manufacturer) or MAC, and the same video source for an encoder's channels. The only
   evidence that may be accepted without a person, and only when nothing conflicts with it;
2. **stream source**: the same host, port, path and channel once credentials and stream-profile
   markers (main/sub, `subtype=`, Hikvision's 101/102) are taken out. An address can be given to
   another device tomorrow (DHCP), so this is never called exact;
3. **name**: names alike once case and punctuation are ignored. A hint for a person, no more.

A pair whose identities disagree is never proposed, whatever its address or name say: its address
now belongs to another device, which is reported as a conflict.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Literal
from urllib.parse import parse_qsl, urlencode

from pydantic import BaseModel

from gapless.common.urls import parse_camera_url
from gapless.config.recorder import CameraConfig, CameraIdentity

Kind = Literal["identity", "source", "name"]
CONFIDENCE = {"identity": 1.0, "source": 0.7, "name": 0.4}
#: Names at least this alike (difflib ratio of the normalised names) make a name proposal.
NAME_SIMILARITY = 0.8
#: Query parameters that choose a stream profile, not a camera or channel.
PROFILE_PARAMETERS = {"subtype", "stream", "streamtype", "profile", "profiletoken", "resolution"}
#: Path endings that choose a profile of the same camera: /cam0-sub, /live/main, /h264_stream2 …
PROFILE_SUFFIX = re.compile(r"([-_/.]?(main|sub|substream|mainstream|second|stream[12]|ch[0-9]+_[01]))$", re.I)
#: Hikvision's /Streaming/Channels/101 (channel 1, main) and /102 (channel 1, sub).
HIKVISION_CHANNEL = re.compile(r"(/streaming/channels/)([0-9]+?)0[1-9]$", re.I)


class Proposal(BaseModel):
    """Camera `a` of the first side is camera `b` of the second."""

    a: str
    b: str
    kind: Kind
    confidence: float
    reasons: list[str]
    conflicts: list[str] = []
    auto_acceptable: bool = False  # exact identity and no conflict: a policy may accept it unasked


class Mapping(BaseModel):
    proposals: list[Proposal]
    warnings: list[str]  # what was not proposed, and why (an address now used by another device …)


@dataclass(frozen=True)
class _Evidence:
    kind: Kind | None
    reasons: list[str]
    contradiction: str | None = None  # both identities known and different


def stream_source(url: str) -> tuple[str, int, str]:
    """host, port and path+query of a camera URL with credentials and profile markers taken out."""
    parsed = parse_camera_url(url)
    path, _, query = parsed.path.partition("?")
    path = path.rstrip("/").lower() or "/"
    path = HIKVISION_CHANNEL.sub(lambda m: f"{m.group(1)}{m.group(2)}", path)
    path = PROFILE_SUFFIX.sub("", path) or "/"
    kept = sorted((k.lower(), v) for k, v in parse_qsl(query) if k.lower() not in PROFILE_PARAMETERS)
    return parsed.host.lower(), parsed.port, path + (f"?{urlencode(kept)}" if kept else "")


def _name(camera: CameraConfig) -> str:
    return re.sub(r"[^a-z0-9]", "", (camera.name or camera.id).lower())


def _identity(a: CameraIdentity | None, b: CameraIdentity | None) -> _Evidence:
    if a is None or b is None:
        return _Evidence(None, [])
    reasons: list[str] = []
    differences: list[str] = []
    if a.endpoint and b.endpoint:
        (reasons if a.endpoint == b.endpoint else differences).append(f"endpoint {a.endpoint} / {b.endpoint}")
    if a.serial and b.serial and a.manufacturer == b.manufacturer:
        (reasons if a.serial == b.serial else differences).append(f"serial {a.serial} / {b.serial}")
    shared_macs = set(a.macs) & set(b.macs)
    if a.macs and b.macs:
        if shared_macs:
            reasons.append(f"MAC {', '.join(sorted(shared_macs))}")
        else:
            differences.append(f"MAC {', '.join(a.macs)} / {', '.join(b.macs)}")
    if reasons and (a.video_sources > 1 or b.video_sources > 1):
        if a.video_source is None or a.video_source != b.video_source:
            return _Evidence(None, [], f"another channel of the same device ({a.video_source} / {b.video_source})")
        reasons.append(f"video source {a.video_source}")
    if differences and not reasons:
        return _Evidence(None, [], "different devices: " + "; ".join(differences))
    if differences:  # one field agrees, another does not: not something to accept unasked
        return _Evidence(None, [], "identities disagree: " + "; ".join(differences))
    if reasons:
        return _Evidence("identity", ["same " + r.split(" / ")[0] for r in reasons])
    return _Evidence(None, [])


def _evidence(a: CameraConfig, b: CameraConfig) -> _Evidence:
    identity = _identity(a.identity, b.identity)
    if identity.kind is not None or identity.contradiction is not None:
        return identity
    if stream_source(a.url) == stream_source(b.url):
        host, port, path = stream_source(a.url)
        return _Evidence("source", [f"same stream source {host}:{port}{path}"])
    ratio = SequenceMatcher(None, _name(a), _name(b)).ratio()
    if ratio >= NAME_SIMILARITY:
        return _Evidence("name", [f"names alike ({a.name or a.id} / {b.name or b.id}, {ratio:.2f})"])
    return _Evidence(None, [])


def propose(side_a: list[CameraConfig], side_b: list[CameraConfig]) -> Mapping:
    """Every pair the evidence supports, strongest first; a camera proposed with two others has
    each of those proposals marked as a conflict (none of them is auto-acceptable)."""
    proposals: list[Proposal] = []
    warnings: list[str] = []
    for a in side_a:
        for b in side_b:
            found = _evidence(a, b)
            if found.contradiction is not None and stream_source(a.url) == stream_source(b.url):
                warnings.append(f"{a.id} / {b.id}: the same address, but {found.contradiction}: not proposed")
            if found.kind is None:
                continue
            proposals.append(
                Proposal(a=a.id, b=b.id, kind=found.kind, confidence=CONFIDENCE[found.kind], reasons=found.reasons)
            )
    _mark_conflicts(proposals, side_a, side_b)
    proposals.sort(key=lambda p: (-p.confidence, p.a, p.b))
    return Mapping(proposals=proposals, warnings=warnings)


def _mark_conflicts(proposals: list[Proposal], side_a: list[CameraConfig], side_b: list[CameraConfig]) -> None:
    for proposal in proposals:
        others_a = [p.b for p in proposals if p.a == proposal.a and p is not proposal]
        others_b = [p.a for p in proposals if p.b == proposal.b and p is not proposal]
        if others_a:
            proposal.conflicts.append(f"{proposal.a} also matches {', '.join(others_a)}")
        if others_b:
            proposal.conflicts.append(f"{proposal.b} also matches {', '.join(others_b)}")
        proposal.auto_acceptable = proposal.kind == "identity" and not proposal.conflicts
    units: dict[tuple[str | None, str | None], int] = {}
    for camera in [*side_a, *side_b]:
        if camera.identity is not None and camera.identity.model:
            key = (camera.identity.manufacturer, camera.identity.model)
            units[key] = units.get(key, 0) + 1
    by_id = {camera.id: camera for camera in side_a}
    for proposal in proposals:
        identity = by_id[proposal.a].identity
        if proposal.kind == "identity" or identity is None or not identity.model:
            continue
        count = units.get((identity.manufacturer, identity.model), 0)
        if count > 2:  # more units than this one pair: a model says nothing about which one
            proposal.conflicts.append(f"{count} cameras are a {identity.manufacturer} {identity.model}")
