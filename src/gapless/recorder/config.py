"""Recorder configuration (YAML), validated with pydantic; errors name the field."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from gapless.recorder.rtsp import parse_camera_url

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


class ConfigError(Exception):
    """A configuration that cannot be used; the message names the field."""


def _seconds(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"invalid duration {value!r} (use e.g. 500ms, 90s, 12h, 30d)")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def _bytes(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"invalid size {value!r} (use e.g. 500MB, 2GiB, 1TB)")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def listen_address(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen must be host:port, not {value!r}")
    return value


Seconds = Annotated[float, BeforeValidator(_seconds), Field(gt=0)]
Listen = Annotated[str, AfterValidator(listen_address)]
Bytes = Annotated[int, BeforeValidator(_bytes), Field(gt=0)]
#: A signed media URL's lifetime: at least a minute, at most a week.
SignedUrlTtl = Annotated[float, BeforeValidator(_seconds), Field(ge=60, le=7 * 86400)]


_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_CAMERA_ID = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Retention(Strict):
    max_age: Seconds | None = None
    max_bytes: Bytes | None = None


class ChunkSettings(Strict):
    max_bytes: Bytes = 64 * 2**20
    max_duration: Seconds = 600.0


class Listening(Strict):
    """A server section with `listen: host:port`."""

    listen: Listen

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class RecorderSection(Listening):
    id: str = Field(pattern=_ID)
    listen: Listen = "127.0.0.1:7101"
    storage: Path
    api_token: str | None = Field(default=None, min_length=16, repr=False)
    retention: Retention = Retention()
    chunk: ChunkSettings = ChunkSettings()
    #: How long the media URLs in this recorder's playlists stay valid.
    signed_url_ttl: SignedUrlTtl = 6 * 3600.0
    #: Bytes per second the background scrub re-reads to find damage before anyone needs it; 0: off.
    scrub_rate: Annotated[int, BeforeValidator(_bytes), Field(ge=0)] = 8 * 2**20


class Partner(Strict):
    """A recorder that records the same camera (its camera id may differ): a backfill source."""

    id: str = Field(pattern=_ID)
    url: str | None = Field(default=None, pattern=r"^https?://")
    token: str | None = Field(default=None, min_length=16, repr=False)
    camera: str | None = Field(default=None, pattern=_CAMERA_ID)


def camera_url(value: str) -> str:
    parse_camera_url(value)  # raises ValueError naming what is wrong
    return value


class CameraConfig(Strict):
    id: str = Field(pattern=_CAMERA_ID)
    #: rtsp://[user:password@]host[:port]/path[?query]; reserved characters in credentials percent-encoded.
    url: Annotated[str, AfterValidator(camera_url)]
    #: Credentials given apart from the URL (any characters); they win over the URL's.
    username: str | None = None
    password: str | None = Field(default=None, repr=False)
    retention: Retention = Retention()
    enabled: bool = True
    #: Replaces the recorder-wide partners for this camera; an entry may name only a partner's id
    #: (and its camera id there) and take url and token from the recorder-wide list.
    partners: list[Partner] | None = None

    @property
    def source(self) -> tuple[str, str | None, str | None]:
        """What ingest connects with: a change of any of it restarts the camera's ingest."""
        return self.url, self.username, self.password


def unique_camera_ids(cameras: list[CameraConfig]) -> list[CameraConfig]:
    seen: set[str] = set()
    for camera in cameras:
        if camera.id in seen:
            raise ValueError(f"camera id {camera.id!r} appears twice")
        seen.add(camera.id)
    return cameras


class BackfillSettings(Strict):
    concurrency: int = Field(default=4, ge=1, le=64)
    max_rate: Bytes | None = None  # bytes per second over all jobs; none = unlimited
    order: Literal["newest", "oldest"] = "newest"
    scan_interval: Seconds = 60.0
    lookback: Seconds = 600.0


class ManagementLink(Strict):
    """A clustered recorder's file names only itself and its management server, with this
    recorder's own credential (role `recorder`): in the file, or in a file of its own that is
    read again before every call, so the credential can be rotated without a restart."""

    url: str = Field(pattern=r"^https?://")
    token: str | None = Field(default=None, min_length=16, repr=False)
    token_file: Path | None = None
    _last_read: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _one_token(self) -> ManagementLink:
        if (self.token is None) == (self.token_file is None):
            raise ValueError("give token or token_file (exactly one)")
        return self

    def current_token(self) -> str:
        """The credential as of now. A token_file is read at every call (it is a few bytes); while
        it cannot be read (being replaced, say), the last token read from it is used."""
        if self.token is not None:
            return self.token
        assert self.token_file is not None
        try:
            token = self.token_file.read_text().strip()
            problem = None if len(token) >= 16 else "needs a token of at least 16 characters"
        except OSError as exc:
            problem = exc.strerror or type(exc).__name__
        if problem is None:
            self._last_read = token
            return token
        if self._last_read is None:
            raise ConfigError(f"management.token_file {self.token_file}: {problem}")
        return self._last_read


class RecorderConfig(Strict):
    recorder: RecorderSection
    management: ManagementLink | None = None
    partners: list[Partner] = []
    backfill: BackfillSettings = BackfillSettings()
    cameras: list[CameraConfig] = []

    _unique = field_validator("cameras")(unique_camera_ids)

    @model_validator(mode="after")
    def _managed_alone(self) -> RecorderConfig:
        if self.management is not None and (self.cameras or self.partners):
            raise ValueError("with management, cameras and partners come from the management server: remove them")
        return self

    @model_validator(mode="after")
    def _partners_complete(self) -> RecorderConfig:
        known = {p.id: p for p in self.partners}
        for index, partner in enumerate(self.partners):
            if not (partner.url and partner.token):
                raise ValueError(f"partners.{index}: url and token are required")
        for cam_index, camera in enumerate(self.cameras):
            for index, partner in enumerate(camera.partners or []):
                if not (partner.url and partner.token) and partner.id not in known:
                    raise ValueError(
                        f"cameras.{cam_index}.partners.{index}: {partner.id!r} is not in the recorder-wide"
                        " partners, so it needs url and token"
                    )
        return self

    def partners_of(self, camera: CameraConfig) -> list[Partner]:
        """The partners that record this camera, complete (url, token, their camera id)."""
        known = {p.id: p for p in self.partners}
        chosen = self.partners if camera.partners is None else camera.partners
        resolved = []
        for partner in chosen:
            base = known.get(partner.id)
            resolved.append(
                Partner(
                    id=partner.id,
                    url=partner.url or base.url,
                    token=partner.token or base.token,
                    camera=partner.camera or camera.id,
                )
            )
        return resolved


def _format(error: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"  {where}: {message}")
    return "\n".join(lines)


Model = TypeVar("Model", bound=BaseModel)


def load_yaml_config(path: Path, model: type[Model], expected: str) -> Model:
    """Read and validate a YAML config file; every problem becomes a ConfigError naming the field."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with {expected}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format(exc, str(path))) from None


def api_token(configured: str | None, path: Path, field: str) -> str:
    """The API token: GAPLESS_API_TOKEN from the environment wins over the file."""
    token = os.environ.get("GAPLESS_API_TOKEN") or configured
    if not token or len(token) < 16:
        raise ConfigError(f"{path}: {field}: required, at least 16 characters (or set GAPLESS_API_TOKEN)")
    return token


def load_recorder_config(path: Path) -> RecorderConfig:
    config = load_yaml_config(path, RecorderConfig, "'recorder' and 'cameras'")
    config.recorder.api_token = api_token(config.recorder.api_token, path, "recorder.api_token")
    if config.management is not None:
        config.management.current_token()  # a token_file that cannot be read is named now
    return config
