"""The cluster configuration the management server stores and hands out (versioned): the
coordinator, recorders, clusters with their cameras, and credentials. Shared by the management
server, the recorders that fetch their part of it, and the gateway."""

from __future__ import annotations

import hashlib
import ipaddress
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from gapless.common.config import CAMERA_ID_PATTERN, ID_PATTERN, ConfigError, Seconds, Strict, describe_errors
from gapless.config.recorder import BackfillSettings, CameraConfig, Partner, Retention, unique_camera_ids

Role = Literal["admin", "operator", "viewer", "gateway", "recorder"]


def token_digest(token: str) -> str:
    """What the management server stores of a credential's token: its SHA-256 (tokens are random
    and at least 16 characters, so a slow password hash would buy nothing)."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


class Credential(Strict):
    """Who may call the management server, and what for (docs/design/security.md):
    `admin` everything; `operator` watches and acts (switchover, backfill); `viewer` the gateway's
    media routes; `gateway` what a standalone gateway reads; `recorder` its own configuration and
    its own cluster's coordinator keys.
    Written with `token` (kept only as its SHA-256, never shown again) or `token_sha256`."""

    id: str = Field(pattern=ID_PATTERN)
    """The credential's name (in logs and refusals; never its token)."""
    role: Role
    """`admin`, `operator`, `viewer`, `gateway` or `recorder` (docs/design/security.md)."""
    recorder: str | None = Field(default=None, pattern=ID_PATTERN)  # the recorder a `recorder` credential is
    """For role `recorder`: the recorder it is."""
    token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", repr=False)
    """The SHA-256 of its token; write `token: …` (at least 16 characters) and it is stored so. Never shown."""

    @model_validator(mode="before")
    @classmethod
    def _hash_token(cls, data: object) -> object:
        if isinstance(data, dict) and "token" in data:
            data = dict(data)
            token = data.pop("token")
            if "token_sha256" in data:
                raise ValueError("give token or token_sha256, not both")
            if not isinstance(token, str) or len(token) < 16:
                raise ValueError("token: at least 16 characters")
            data["token_sha256"] = token_digest(token)
        return data

    @model_validator(mode="after")
    def _recorder(self) -> Credential:
        if (self.role == "recorder") != (self.recorder is not None):
            raise ValueError("a credential names a recorder if and only if its role is recorder")
        return self


class CoordinatorConfig(Strict):
    backend: Literal["embedded", "etcd"] = "embedded"
    """`embedded` (served by the management server) or `etcd`."""
    endpoints: list[str] = []
    """etcd's client URLs (`http://host:2379`), for the etcd backend."""

    @model_validator(mode="after")
    def _endpoints(self) -> CoordinatorConfig:
        if self.backend == "etcd" and not self.endpoints:
            raise ValueError("the etcd backend needs endpoints, e.g. [http://127.0.0.1:2379]")
        if self.backend == "embedded" and self.endpoints:
            raise ValueError("endpoints are for the etcd backend only")
        for endpoint in self.endpoints:
            if not endpoint.startswith(("http://", "https://")):
                raise ValueError(f"endpoint {endpoint!r} must be an http(s) URL")
        return self


class RecorderEntry(Strict):
    id: str = Field(pattern=ID_PATTERN)
    """The recorder's id (its own file's `recorder.id`)."""
    url: str = Field(pattern=r"^https?://")
    """The recorder's API URL."""
    token: str = Field(min_length=16, repr=False)
    """The recorder's API token (its peer and the gateway read media with it); shown as `<redacted>`."""
    cameras: list[CameraConfig] | None = None
    """An independent recorder's cameras (replacing its file's; a recorder in a cluster records the cluster's). Its
    accepted `pairs` give each camera its backfill partner."""
    managed_by: str | None = Field(default=None, pattern=r"^https?://")
    """The URL of the management server that manages this recorder, when another one does: it is listed here only so
    that pairs can name it across servers (its URL and token); it gets no configuration from here, records no
    cameras of this file, and no credential here may act as it."""

    @field_validator("cameras")
    @classmethod
    def _unique(cls, cameras: list[CameraConfig] | None) -> list[CameraConfig] | None:
        return None if cameras is None else unique_camera_ids(cameras)


class CameraRef(Strict):
    """One recorder's camera."""

    recorder: str = Field(pattern=ID_PATTERN)
    """The recorder's id."""
    camera: str = Field(pattern=CAMERA_ID_PATTERN)
    """The camera's id on that recorder."""

    def __str__(self) -> str:
        return f"{self.recorder}:{self.camera}"


class CameraPair(Strict):
    """Two independent recorders' cameras that are one camera (an asymmetrical pair): each is the
    other's backfill partner; `a` is the primary viewers are routed to while its feed is healthy."""

    a: CameraRef
    """The primary."""
    b: CameraRef
    """The secondary."""
    failback: Literal["at-once", "backfilled"] = "at-once"
    """When viewers go back to the primary: `at-once` once its feed has recorded for 3 s; `backfilled` also only
    once its backfill of the camera is done (its recent footage whole again)."""
    kind: Literal["identity", "source", "name", "manual"] = "manual"
    """What the pair was accepted on: a proposal's evidence, or a person's word."""
    reasons: list[str] = []
    """The proposal's reasons, kept for the record."""
    standby: str | None = Field(default=None, pattern=ID_PATTERN)
    """A third, standby recorder (an independent recorder managed here): it pulls the camera (the primary's stream,
    under the primary's camera id) only while neither `a` nor `b` records it, releases it when one does again, and
    what it recorded is backfilled to both. One standby may serve a group of pairs."""

    def cameras(self) -> tuple[tuple[str, str], tuple[str, str]]:
        return (self.a.recorder, self.a.camera), (self.b.recorder, self.b.camera)


class VirtualAddress(Strict):
    vip: str
    """The virtual IP with its prefix length (`198.18.0.100/24`), on the token holder only."""
    interface: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,15}$")
    """The network interface it is added to."""

    @field_validator("vip")
    @classmethod
    def _vip(cls, value: str) -> str:
        try:
            iface = ipaddress.ip_interface(value)
        except ValueError:
            raise ValueError(
                f"vip must be an address with prefix length, e.g. 198.18.0.100/24, not {value!r}"
            ) from None
        if "/" not in value:
            raise ValueError(f"vip needs a prefix length, e.g. {value}/24")
        return str(iface)


class ClusterConfig(Strict):
    id: str = Field(pattern=ID_PATTERN)
    """The cluster's id."""
    members: list[str] = Field(min_length=2, max_length=2)  # the first is the primary
    """Two recorder ids; the first is the primary (preferred token holder)."""
    lease_ttl: Seconds = 1.0
    """The token lease (0.5 s to 60 s): a dead holder is replaced within about this."""
    failback: Literal["auto", "manual"] = "auto"
    """`auto`: the primary takes the token back once ready; `manual`: only by a switchover."""
    address: VirtualAddress | None = None
    """An optional virtual IP moved with the token."""
    retention: Retention = Retention()
    """Both members' retention."""
    backfill: BackfillSettings = BackfillSettings()
    """Both members' backfill settings."""
    cameras: list[CameraConfig] = []
    """The cameras both members record (their `partners` come from the cluster)."""

    @field_validator("lease_ttl")
    @classmethod
    def _ttl(cls, value: float) -> float:
        if not 0.5 <= value <= 60:
            raise ValueError("lease_ttl must be between 0.5s and 60s")
        return value

    _unique_cameras = field_validator("cameras")(unique_camera_ids)

    @field_validator("members")
    @classmethod
    def _distinct(cls, members: list[str]) -> list[str]:
        if len(set(members)) != len(members):
            raise ValueError("members must be two different recorders")
        return members


class ClusterDocument(Strict):
    """What the management server stores and hands out (versioned)."""

    coordinator: CoordinatorConfig = CoordinatorConfig()
    """Where leases and the token live."""
    recorders: list[RecorderEntry] = []
    """Every recorder the management server knows."""
    clusters: list[ClusterConfig] = []
    """Symmetrical clusters of two recorders."""
    credentials: list[Credential] = []
    """Who else may call the management server, and for what."""
    pairs: list[CameraPair] = []
    """Accepted asymmetrical pairs (`gapless pairs accept`)."""
    rejected_pairs: list[CameraPair] = []
    """Proposals a person turned down: never proposed again."""

    @model_validator(mode="after")
    def _references(self) -> ClusterDocument:
        ids = [r.id for r in self.recorders]
        if len(set(ids)) != len(ids):
            raise ValueError("recorders: an id appears twice")
        credential_ids = [c.id for c in self.credentials]
        if len(set(credential_ids)) != len(credential_ids):
            raise ValueError("credentials: an id appears twice")
        for credential in self.credentials:
            if credential.recorder is not None and credential.recorder not in ids:
                raise ValueError(f"credentials.{credential.id}: recorder {credential.recorder!r} is not in recorders")
        seen_members: dict[str, str] = {}
        seen_cameras: dict[str, str] = {}
        cluster_ids = set()
        for cluster in self.clusters:
            if cluster.id in cluster_ids:
                raise ValueError(f"clusters: id {cluster.id!r} appears twice")
            cluster_ids.add(cluster.id)
            for member in cluster.members:
                if member not in ids:
                    raise ValueError(f"clusters.{cluster.id}.members: {member!r} is not in recorders")
                if member in seen_members:
                    raise ValueError(f"recorder {member!r} is in two clusters ({seen_members[member]}, {cluster.id})")
                seen_members[member] = cluster.id
            for camera in cluster.cameras:
                if camera.id in seen_cameras:
                    where = f"{seen_cameras[camera.id]}, {cluster.id}"
                    raise ValueError(f"camera {camera.id!r} is in two clusters ({where})")
                seen_cameras[camera.id] = cluster.id
                if camera.partners is not None:
                    raise ValueError(f"clusters.{cluster.id}.cameras.{camera.id}: partners come from the cluster")
        for recorder in self.recorders:
            if recorder.cameras is not None and recorder.id in seen_members:
                raise ValueError(f"recorders.{recorder.id}.cameras: it records its cluster's cameras")
            if recorder.managed_by is not None and (recorder.cameras is not None or recorder.id in seen_members):
                raise ValueError(
                    f"recorders.{recorder.id}: managed by {recorder.managed_by}: no cameras or cluster here"
                )
        for credential in self.credentials:
            entry = self.recorder(credential.recorder) if credential.recorder else None
            if entry is not None and entry.managed_by is not None:
                raise ValueError(f"credentials.{credential.id}: recorder {entry.id!r} is managed by {entry.managed_by}")
        self._check_pairs()
        return self

    def _check_pairs(self) -> None:
        """Each side a camera of an independent recorder here, or of a recorder another management
        server manages (whose cameras that server knows); at least one side here."""
        cameras = {(r.id, c.id) for r in self.recorders for c in r.cameras or []}
        elsewhere = {r.id for r in self.recorders if r.managed_by is not None}
        paired: set[tuple[str, str]] = set()
        for pair in self.pairs:
            if pair.a.recorder in elsewhere and pair.b.recorder in elsewhere:
                raise ValueError(f"pairs: {pair.a} = {pair.b}: neither recorder is managed here")
            for side in pair.cameras():
                if side not in cameras and side[0] not in elsewhere:
                    raise ValueError(f"pairs: {side[0]}:{side[1]} is not a camera of an independent recorder")
                if side in paired:
                    raise ValueError(f"pairs: {side[0]}:{side[1]} is in two pairs")
                paired.add(side)
            if pair.a.recorder == pair.b.recorder:
                raise ValueError(f"pairs: {pair.a} and {pair.b} are on one recorder")
        standbys = [pair for pair in self.pairs if pair.standby is not None]
        for pair in standbys:
            entry = self.recorder(pair.standby or "")
            members = {m for c in self.clusters for m in c.members}
            if entry is None or entry.managed_by is not None or entry.id in members:
                raise ValueError(f"pairs: {pair.a}: standby {pair.standby!r} is not an independent recorder here")
            if pair.standby in (pair.a.recorder, pair.b.recorder):
                raise ValueError(f"pairs: {pair.a}: the standby must be a third recorder")
            if (pair.a.recorder, pair.a.camera) not in cameras:
                raise ValueError(f"pairs: {pair.a}: a standby needs the primary's camera here (its stream)")
            if any(c.id == pair.a.camera for c in entry.cameras or []):
                raise ValueError(f"pairs: {pair.a}: standby {entry.id} already records a camera {pair.a.camera!r}")
        gateway_ids = [camera.id for cluster in self.clusters for camera in cluster.cameras]
        for pair in self.pairs:  # a pair is one camera on the gateway, named by its primary
            if pair.a.camera in gateway_ids:
                raise ValueError(f"pairs: {pair.a}: the gateway already has a camera {pair.a.camera!r}")
            gateway_ids.append(pair.a.camera)

    def pair_of(self, recorder_id: str, camera_id: str) -> tuple[CameraPair, CameraRef] | None:
        """The accepted pair a recorder's camera is in, and the other side of it."""
        for pair in self.pairs:
            if (pair.a.recorder, pair.a.camera) == (recorder_id, camera_id):
                return pair, pair.b
            if (pair.b.recorder, pair.b.camera) == (recorder_id, camera_id):
                return pair, pair.a
        return None

    def standing_by(self, recorder_id: str) -> list[CameraPair]:
        """The pairs this recorder is the standby of."""
        return [pair for pair in self.pairs if pair.standby == recorder_id]

    def recorder(self, recorder_id: str) -> RecorderEntry | None:
        return next((r for r in self.recorders if r.id == recorder_id), None)

    def cluster_of(self, recorder_id: str) -> ClusterConfig | None:
        return next((c for c in self.clusters if recorder_id in c.members), None)

    def cluster_of_camera(self, camera_id: str) -> ClusterConfig | None:
        return next((c for c in self.clusters if any(cam.id == camera_id for cam in c.cameras)), None)


def validate_document(raw: object, source: str) -> ClusterDocument:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected an object with coordinator, recorders and clusters")
    try:
        return ClusterDocument.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc, source)) from None


class StandbyCamera(Strict):
    """A camera a standby recorder pulls only while both sides of its pair have lost it."""

    camera: CameraConfig
    watches: list[CameraRef]
    """The pair's sides, whose published feeds decide."""


class ManagedConfig(Strict):
    """What one recorder fetches (`GET /api/v1/recorders/{id}/config`) and caches: its cluster
    (cameras, settings), its peers (with the media token it reads their fragments with), and the
    coordinator."""

    version: int
    recorder: str
    coordinator: CoordinatorConfig
    cluster: ClusterConfig | None = None
    peers: list[RecorderEntry] = []
    cameras: list[CameraConfig] | None = None
    """An independent recorder's cameras, each with its pair's other side (and the pair's standby) as
    its partners (None: its file's cameras)."""
    standby: list[StandbyCamera] = []
    """The cameras this recorder stands by for (a pair's `standby`): recorded only while neither side does."""

    @classmethod
    def of(cls, version: int, document: ClusterDocument, recorder_id: str) -> ManagedConfig:
        cluster = document.cluster_of(recorder_id)
        members = cluster.members if cluster is not None else []
        peers = [r for r in document.recorders if r.id in members and r.id != recorder_id]
        entry = document.recorder(recorder_id)
        cameras = None
        if cluster is None and entry is not None and entry.cameras is not None:
            cameras = [_with_pair_partner(document, recorder_id, camera) for camera in entry.cameras]
        standby = [
            StandbyCamera(camera=_standby_camera(document, pair), watches=[pair.a, pair.b])
            for pair in document.standing_by(recorder_id)
        ]
        return cls(
            version=version,
            recorder=recorder_id,
            coordinator=document.coordinator,
            cluster=cluster,
            peers=peers,
            cameras=cameras,
            standby=standby,
        )


def _with_pair_partner(document: ClusterDocument, recorder_id: str, camera: CameraConfig) -> CameraConfig:
    """The camera with the other side of its accepted pair as its partner, and the pair's standby
    (what the standby recorded is backfilled to both); its own list when it is in no pair."""
    found = document.pair_of(recorder_id, camera.id)
    if found is None:
        return camera
    pair, other = found
    sides = [(other.recorder, other.camera)]
    if pair.standby is not None:
        sides.append((pair.standby, pair.a.camera))
    partners = []
    for recorder, camera_there in sides:
        entry = document.recorder(recorder)
        assert entry is not None  # the document validates its pairs
        partners.append(Partner(id=entry.id, url=entry.url, token=entry.token, camera=camera_there))
    return camera.model_copy(update={"partners": partners})


def _standby_camera(document: ClusterDocument, pair: CameraPair) -> CameraConfig:
    """The primary's camera as its standby records it: same id, stream and credentials; no partners
    (the standby records only while both sides lack the feed and backfills nothing into itself; the
    sides backfill from it) and no identity (the standby does not ask the device)."""
    entry = document.recorder(pair.a.recorder)
    assert entry is not None and entry.cameras is not None  # validated: the primary's camera is here
    camera = next(c for c in entry.cameras if c.id == pair.a.camera)
    return camera.model_copy(update={"partners": [], "identity": None, "onvif": None, "enabled": False})
