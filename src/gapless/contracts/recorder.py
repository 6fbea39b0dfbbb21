"""The recorder API's bodies (what partners, the gateway and the audit read)."""

from __future__ import annotations

from pydantic import BaseModel, ValidationError


class FragmentInfo(BaseModel):
    """One stored fragment (a GOP, or a piece of one), as `GET /api/v1/cameras/{id}/fragments` lists it."""

    id: int
    camera: str
    run: str  # the RTSP session (or backfilled run) it came from
    seq: int  # its place in the run
    start_us: int  # camera time of its first frame
    end_us: int  # camera time where the next fragment starts
    frames: int
    bytes: int
    sha256: str  # of its moof+mdat
    init: str  # the init segment it refers to
    origin: str  # the recorder that received it from the camera
    keyframe_first: bool = True  # False for the later pieces of a GOP
    arrival_us: int | None = None  # when that recorder received its first frame


class FragmentList(BaseModel):
    camera: str
    fragments: list[FragmentInfo]


class Coverage(BaseModel):
    """`GET /api/v1/cameras/{id}/coverage`: recorded spans, ISO 8601, gap threshold 1.5 frame intervals."""

    camera: str
    intervals: list[tuple[str, str]]


class ApiError(BaseModel):
    """Every error body: what went wrong, in words (never a secret the client sent)."""

    error: str
    corrupt: bool = False  # a fragment whose stored bytes fail their checksum


def corrupt_refusal(body: bytes) -> ApiError | None:
    """The recorder's answer for a fragment whose stored bytes fail their checksum (else None):
    the one way backfill and the audit tell a damaged copy from a failed request."""
    try:
        answer = ApiError.model_validate_json(body)
    except ValidationError:
        return None
    return answer if answer.corrupt else None
