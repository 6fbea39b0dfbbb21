"""The recorder API's bodies and queries (what partners, the gateway, the audit, the backfill
command and peer HA agents send and read)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import (
    BeforeValidator,
    Field,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from gapless.common.config import CAMERA_ID_PATTERN
from gapless.common.openapi import Body, Query, Reply
from gapless.common.timeparse import iso, parse_time_us

TIME_TEXT = "ISO 8601 with a zone, or epoch seconds"
HOUR_US = 3_600_000_000

#: A time in a request: read from ISO 8601 or epoch seconds into microseconds since the epoch,
#: and written back as ISO 8601 (so a client's model round-trips).
RequestTime = Annotated[
    int,
    BeforeValidator(lambda value: parse_time_us(str(value))),
    PlainSerializer(iso, return_type=str),
    WithJsonSchema({"type": "string", "description": TIME_TEXT}),
]


class FragmentInfo(Reply):
    """One stored fragment (a GOP, or a piece of one), as `GET /api/v1/cameras/{id}/fragments` lists it."""

    id: int
    camera: str
    run: str
    """The RTSP session (or backfilled run) it came from."""
    seq: int
    """Its place in the run."""
    start_us: int
    """Camera time of its first frame."""
    end_us: int
    """Camera time where the next fragment starts."""
    frames: int
    bytes: int
    sha256: str
    """Of its moof+mdat."""
    init: str
    """The init segment it refers to."""
    origin: str
    """The recorder that received it from the camera."""
    keyframe_first: bool = True
    """False for the later pieces of a GOP."""
    arrival_us: int | None = None
    """When that recorder received its first frame."""


class FragmentList(Reply):
    camera: str
    fragments: list[FragmentInfo]
    open_run: str | None = None
    """The run still being recorded (None: the camera's session ended). The newest fragment of any
    other run was cut by the end of its run: its GOP may go on at a recorder that kept the feed."""


class Coverage(Reply):
    """`GET /api/v1/cameras/{id}/coverage`: recorded spans, ISO 8601, gap threshold 1.5 frame intervals."""

    camera: str
    intervals: list[tuple[str, str]]


class ApiError(Reply):
    """Every error body: what went wrong, in words (never a secret the client sent)."""

    error: str
    corrupt: bool = False
    """A fragment whose stored bytes fail their checksum."""


def corrupt_refusal(body: bytes) -> ApiError | None:
    """The recorder's answer for a fragment whose stored bytes fail their checksum (else None):
    the one way backfill and the audit tell a damaged copy from a failed request."""
    try:
        answer = ApiError.model_validate_json(body)
    except ValidationError:
        return None
    return answer if answer.corrupt else None


def _ordered(start: int, end: int, longest_us: int, what: str) -> None:
    if end <= start:
        raise ValueError("end must be after start")
    if end - start > longest_us:
        raise ValueError(f"range too long for {what}: at most {longest_us / HOUR_US:g} h")


class TimeRange(Query):
    """A range of camera time (fragments, playback: at most 24 h)."""

    longest_us: ClassVar[int] = 24 * HOUR_US
    what: ClassVar[str] = "a listing"

    start: RequestTime
    """Where the range starts: ISO 8601 with a zone, or epoch seconds."""
    end: RequestTime
    """Where it ends (after start)."""

    @model_validator(mode="after")
    def _bounded(self) -> TimeRange:
        _ordered(self.start, self.end, self.longest_us, self.what)
        return self


class CoverageRange(TimeRange):
    """Coverage is asked for up to 31 days at once."""

    longest_us: ClassVar[int] = 31 * 24 * HOUR_US
    what: ClassVar[str] = "coverage"


#: A progressive export's header naming what it left out (JSON: start, end, why); a fragmented
#: export says it in a trailing `free` box instead.
LEFT_OUT_HEADER = "X-Gapless-Left-Out"


class ExportQuery(TimeRange):
    longest_us: ClassVar[int] = 6 * HOUR_US
    what: ClassVar[str] = "export"

    layout: Literal["fragmented", "progressive"] = "fragmented"
    """fragmented: streamed as read; progressive: moov first, built before sending."""


class LiveQuery(Query):
    after_us: int | None = Field(default=None, ge=0, lt=10**18)
    """Resume after this camera decode time (µs): a gateway switching recorders; none: from the newest keyframe."""


class KeyframesQuery(Query):
    since_us: int = Field(default=0, ge=0, lt=10**18)
    """Only keyframes from this camera time (microseconds) on."""


JobState = Literal["waiting", "running", "done", "partial"]


class JobsQuery(Query):
    state: JobState | None = None
    """Only jobs in this state."""


class BackfillRequest(Body):
    """`POST /api/v1/backfill`: copy what a source holds of a camera's range into this recorder."""

    camera: str
    """This recorder's camera."""
    source: str
    """A configured partner's id, or a recorder URL (then source_token too)."""
    start: RequestTime
    """Where the range starts."""
    end: RequestTime
    """Where it ends (at most 31 days after start)."""
    source_camera: str | None = Field(default=None, pattern=CAMERA_ID_PATTERN)
    """The camera's id on the source, when it differs."""
    source_token: str | None = Field(default=None, min_length=16)
    """The source's API token, when the source is a URL."""

    @field_validator("source")
    @classmethod
    def _no_credentials_in_url(cls, value: str) -> str:
        """A URL's user:password would be stored, listed and logged with the job: refused."""
        if "://" in value and "@" in urlsplit(value).netloc:
            raise ValueError("the source URL must not carry credentials; give the source's token as source_token")
        return value

    @model_validator(mode="after")
    def _bounded(self) -> BackfillRequest:
        _ordered(self.start, self.end, CoverageRange.longest_us, "backfill")
        return self


class JobInfo(Reply):
    """A backfill job as the API shows it (its source token never)."""

    id: int
    camera: str
    source: str
    """A partner's id, or the source recorder's address."""
    source_url: str
    source_camera: str
    state: JobState
    automatic: bool
    """Queued by the gap scanner (not by a request)"""
    start: str
    end: str
    cursor: str
    """Everything before this is done."""
    start_us: int
    end_us: int
    cursor_us: int
    fragments_total: int
    fragments_done: int
    bytes_total: int
    bytes_done: int
    stored_fragments: int
    stored_frames: int
    refused: int
    """Fragments whose bytes failed their checksum at the source."""
    errors: list[str]
    """The last 20, each with its time."""
    attempts: int
    next_try_us: int
    next_try: str | None
    """When a waiting job runs again."""
    active_s: float
    rate_bytes_per_s: int | None
    eta_s: float | None
    created_us: int
    finished_us: int | None


class JobList(Reply):
    jobs: list[JobInfo]


class CameraState(Reply):
    id: str
    enabled: bool
    state: str
    """Starting | connecting | recording | reconnecting | failed | disabled."""


class CameraList(Reply):
    cameras: list[CameraState]


class FailsafeRequest(Body):
    """A holder that cannot reach the coordinator asks each peer whether it may keep the token."""

    cluster: str
    holder: str
    fence: int = Field(ge=0, lt=2**63)


class FailsafeAnswer(Reply):
    ack: bool


class TokenChange(Reply):
    at_us: int
    change: Literal["taken", "released", "lost"]
    reason: str
    fence: int


class HaState(Reply):
    """`GET /api/v1/cluster`: this member's view of its cluster."""

    cluster: str
    member: str
    role: str
    """Starting | standby | holder | failsafe-holder | no-coordinator | expiring."""
    presenting: bool
    """Serving as the cluster now."""
    holder: str | None
    fence: int
    lease_ttl: float
    lease_remaining: float | None
    coordinator_reachable: bool
    changes: list[TokenChange]
    """The last 20 token changes."""


class FeedHealth(Reply):
    """One camera's feed, as the recorder sees it."""

    state: str
    """Starting | connecting | recording | reconnecting | failed."""
    reason: str
    """Why it is not recording, in words."""
    reconnects: int
    fragments: int
    """Fragments the feed delivered since the recorder started (handed to the storage writer;
    `storage.queue_depth` counts those not stored yet)."""
    frames: int
    last_fragment_time: str | None
    lost_packets: int
    time_source: str
    """Sender reports | sender report (unconfirmed) | estimated: …."""
    camera_clock_offset_ms: int | None
    """The camera's clock minus the recorder's, when it reports one."""
    clock_discontinuities: int
    timing_rejected: int
    """Sender reports that disagreed once and were not followed."""
    audio: str
    """"" (none), its format, or why it is not recorded."""
    audio_frames: int
    audio_dropped: int
    audio_lost_packets: int


class BackfillHealth(Reply):
    jobs: dict[JobState, int]
    """How many jobs in each state."""
    last_scan_error: str | None


class StorageHealth(Reply):
    disk_free_bytes: int
    queue_depth: int
    """Fragments waiting for the storage writer."""
    last_error: str | None
    corrupt_fragments: int
    """Quarantined: never served; the gap scanner has a partner fill their time."""
    damaged_spans: int
    damaged_bytes: int
    index_rebuilt: dict | None
    """Why the index was rebuilt from the chunk files, and what it found."""


class RecorderHealth(Reply):
    """`GET /api/v1/health`."""

    recorder: str
    cameras: dict[str, FeedHealth]
    backfill: BackfillHealth
    cluster: HaState | None
    """None: not a cluster member."""
    storage: StorageHealth
