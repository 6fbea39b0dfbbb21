"""Recorder configuration (YAML), validated with pydantic; errors name the field."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, PrivateAttr, field_validator, model_validator

from gapless.common.config import (
    CAMERA_ID_PATTERN,
    ID_PATTERN,
    Bytes,
    ConfigError,
    Listen,
    Listening,
    Seconds,
    SignedUrlTtl,
    Strict,
    api_token,
    load_yaml_config,
    parse_bytes,
)
from gapless.common.urls import parse_camera_url


class Retention(Strict):
    max_age: Seconds | None = None
    """Delete footage older than this (a duration: `30d`, `12h`); none: no age limit."""
    max_bytes: Bytes | None = None
    """Delete the oldest footage while more than this is stored (a size: `500GB`, `2TiB`); none: no size limit."""


class ChunkSettings(Strict):
    max_bytes: Bytes = 64 * 2**20
    """A chunk file is closed at this size; retention deletes whole chunks."""
    max_duration: Seconds = 600.0
    """A chunk file is closed after this much footage."""


class RecorderSection(Listening):
    id: str = Field(pattern=ID_PATTERN)
    """This recorder's id (letters, digits, `_.-`, up to 64): partners and the management server name it so."""
    listen: Listen = "127.0.0.1:7101"
    """Where the HTTP API listens, `host:port`."""
    storage: Path
    """The storage directory (chunk files, index, cached configuration); one recorder owns it."""
    api_token: str | None = Field(default=None, min_length=16, repr=False)
    """The token every API call presents (at least 16 characters); `GAPLESS_API_TOKEN` in the environment wins.
    Required."""
    retention: Retention = Retention()
    """The recorder's retention (a camera's own wins for that camera)."""
    chunk: ChunkSettings = ChunkSettings()
    """How chunk files are cut."""
    signed_url_ttl: SignedUrlTtl = 6 * 3600.0
    """How long the signed media URLs in this recorder's playlists stay valid (1 minute to 7 days)."""
    scrub_rate: Annotated[int, BeforeValidator(parse_bytes), Field(ge=0)] = 8 * 2**20
    """Bytes per second the background scrub re-reads the archive to find damage before anyone needs it; 0 turns it
    off."""


class Partner(Strict):
    """A recorder that records the same camera (its camera id may differ): a backfill source."""

    id: str = Field(pattern=ID_PATTERN)
    """The partner recorder's id."""
    url: str | None = Field(default=None, pattern=r"^https?://")
    """The partner's API URL (`http(s)://host:port`); in a camera's list, may be left out to take the recorder-wide
    entry's."""
    token: str | None = Field(default=None, min_length=16, repr=False)
    """The partner's API token (for reading its fragments); like `url`, may come from the recorder-wide entry."""
    camera: str | None = Field(default=None, pattern=CAMERA_ID_PATTERN)
    """The camera's id on the partner, when it differs (e.g. its sub-stream)."""


@dataclass(frozen=True)
class PartnerLink:
    """A partner as the recorder uses it for one camera: every field known."""

    id: str
    url: str
    token: str
    camera: str  # the camera's id on the partner


def camera_url(value: str) -> str:
    parse_camera_url(value)  # raises ValueError naming what is wrong
    return value


class CameraIdentity(Strict):
    """What the camera's ONVIF device service answered (`gapless cameras identify`): the hardware
    identity that pairs one camera across recorders, whatever its URL or name there."""

    endpoint: str | None = None
    """The device's endpoint reference (`urn:uuid:…`, what WS-Discovery announces)."""
    manufacturer: str | None = None
    """GetDeviceInformation's manufacturer."""
    model: str | None = None
    """GetDeviceInformation's model (many units may share it)."""
    firmware: str | None = None
    """GetDeviceInformation's firmware version."""
    serial: str | None = None
    """GetDeviceInformation's serial number."""
    hardware_id: str | None = None
    """GetDeviceInformation's hardware id."""
    macs: list[str] = []
    """The MAC addresses of its network interfaces (GetNetworkInterfaces), lower case."""
    video_source: str | None = None
    """The token of the video source this camera's stream comes from (a channel of a multi-channel encoder)."""
    video_sources: int = 1
    """How many video sources the device has (more than one: an encoder; the source token tells the channels apart)."""


class CameraConfig(Strict):
    id: str = Field(pattern=CAMERA_ID_PATTERN)
    """The camera id (letters, digits, `_-`, up to 64), in URLs and the archive."""
    name: str | None = Field(default=None, max_length=200)
    """A display name for people (mapping cameras between recorders compares names too)."""
    url: Annotated[str, AfterValidator(camera_url)]
    """`rtsp://[user:password@]host[:port]/path[?query]`; reserved characters in credentials percent-encoded."""
    username: str | None = None
    """The RTSP user, given apart from the URL (wins over the URL's)."""
    password: str | None = Field(default=None, repr=False)
    """The RTSP password, any characters (wins over the URL's); never logged or shown by an API."""
    retention: Retention = Retention()
    """This camera's retention (wins over the recorder's)."""
    enabled: bool = True
    """false: configured but not recorded."""
    partners: list[Partner] | None = None
    """Replaces the recorder-wide partners for this camera; an entry may name only a partner's id (and its camera id
    there)."""
    onvif: str | None = Field(default=None, pattern=r"^[A-Za-z0-9.:\[\]-]+:[0-9]{1,5}$")
    """`host:port` of the camera's ONVIF device service (default: the RTSP URL's host, port 80)."""
    identity: CameraIdentity | None = None
    """The hardware identity the camera gave over ONVIF (written by `gapless cameras identify`)."""

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
    """Backfill jobs run at once (1 to 64)."""
    max_rate: Bytes | None = None  # bytes per second over all jobs; none = unlimited
    """Bytes per second fetched from partners over all jobs; none: unlimited."""
    order: Literal["newest", "oldest"] = "newest"
    """`newest` (recent holes first) or `oldest`."""
    scan_interval: Seconds = 60.0
    """How often each camera is compared with its partners for holes."""
    lookback: Seconds = 600.0
    """How far back the periodic scan looks (a start-up scan covers the whole downtime)."""


class ManagementLink(Strict):
    """A clustered recorder's file names only itself and its management server, with this
    recorder's own credential (role `recorder`): in the file, or in a file of its own that is
    read again before every call, so the credential can be rotated without a restart."""

    url: str = Field(pattern=r"^https?://")
    """The management server's URL."""
    token: str | None = Field(default=None, min_length=16, repr=False)
    """This recorder's own management credential (role `recorder`)."""
    token_file: Path | None = None
    """A file holding the credential instead, read again before every call: rotate it without a restart."""
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
    """The recorder's own settings."""
    management: ManagementLink | None = None
    """A clustered recorder: cameras, partners and backfill settings come from this management server (then leave them
    out here)."""
    partners: list[Partner] = []
    """Recorders that record the same cameras: backfill sources."""
    backfill: BackfillSettings = BackfillSettings()
    """How holes are found and filled."""
    cameras: list[CameraConfig] = []
    """The cameras this recorder records."""

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

    def partners_of(self, camera: CameraConfig) -> list[PartnerLink]:
        """The partners that record this camera, complete (url, token, their camera id; the
        validators above guarantee a partner named only by id is in the recorder-wide list)."""
        known = {p.id: p for p in self.partners}
        chosen = self.partners if camera.partners is None else camera.partners
        resolved = []
        for partner in chosen:
            base = known.get(partner.id, partner)
            url, token = partner.url or base.url, partner.token or base.token
            assert url is not None and token is not None
            resolved.append(PartnerLink(partner.id, url, token, partner.camera or camera.id))
        return resolved


def load_recorder_config(path: Path) -> RecorderConfig:
    config = load_yaml_config(path, RecorderConfig, "'recorder' and 'cameras'")
    config.recorder.api_token = api_token(config.recorder.api_token, path, "recorder.api_token")
    if config.management is not None:
        config.management.current_token()  # a token_file that cannot be read is named now
    return config
