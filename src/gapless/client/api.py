"""Clients of the management API and the gateway: every call typed by the servers' own models,
with a timeout, connection retries, and an `ApiError` carrying the server's status and words."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from gapless.config.cluster import CameraPair, CameraRef
from gapless.config.recorder import CameraConfig
from gapless.contracts.gateway import ClusterView, RoutedCameraList, Timeline
from gapless.contracts.management import (
    BackfillOrder,
    BackfillOverview,
    Done,
    LoginLink,
    NewUser,
    StoredConfig,
    UserChange,
    UserEntry,
    UserList,
    UserRole,
    Whoami,
)
from gapless.contracts.recorder import JobInfo
from gapless.identity.mapping import Mapping
from gapless.management.identify import IdentifyAnswer, IdentifyRequest
from gapless.management.pairs import Accepted, PairList, as_pair, proposals_between

Answer = TypeVar("Answer", bound=BaseModel)
#: Connection attempts retried this many times (a server restarting); a request that reached the
#: server is never repeated (it may have changed something).
CONNECT_RETRIES = 2


class ApiError(Exception):
    """A refusal or failure: `status` (0 when the server could not be reached) and its message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status


def _refusal(reply: httpx.Response) -> ApiError:
    try:
        message = str(reply.json().get("error", reply.text))
    except ValueError:
        message = reply.text
    return ApiError(reply.status_code, message.strip()[:500])


class _Client:
    def __init__(self, url: str, token: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            transport=httpx.HTTPTransport(retries=CONNECT_RETRIES),
        )

    def _call(self, model: type[Answer], method: str, path: str, **kwargs: object) -> Answer:
        try:
            reply = self.http.request(method, path, **kwargs)  # type: ignore[arg-type]
        except httpx.HTTPError as exc:
            raise ApiError(0, f"cannot reach {self.url}: {type(exc).__name__}: {exc}") from None
        if reply.status_code >= 300:
            raise _refusal(reply)
        try:
            return model.model_validate_json(reply.content)
        except ValidationError as exc:
            raise ApiError(reply.status_code, f"unexpected answer from {self.url}{path}: {exc}") from None

    def close(self) -> None:
        self.http.close()

    def __enter__(self):
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class ManagementClient(_Client):
    """The management API (an admin credential for most calls)."""

    def config(self) -> StoredConfig:
        return self._call(StoredConfig, "GET", "/api/v1/config")

    def identify(self, cameras: list[str] | None = None, timeout: float = 10.0) -> IdentifyAnswer:
        body = IdentifyRequest(cameras=cameras or [], timeout=timeout).model_dump()
        return self._call(IdentifyAnswer, "POST", "/api/v1/cameras/identify", json=body)

    def proposals(self, a: str, b: str) -> Mapping:
        return self._call(Mapping, "GET", "/api/v1/pairs/proposals", params={"a": a, "b": b})

    def pairs(self) -> PairList:
        return self._call(PairList, "GET", "/api/v1/pairs")

    def accept(self, a: CameraRef, b: CameraRef) -> Accepted:
        return self.accept_pair(CameraPair(a=a, b=b))

    def accept_pair(self, pair: CameraPair) -> Accepted:
        """A pair with its kind and reasons (as a proposal made it)."""
        return self._call(Accepted, "POST", "/api/v1/pairs", json=pair.model_dump())

    def accept_exact(self, a: str, b: str) -> Accepted:
        return self._call(Accepted, "POST", "/api/v1/pairs/accept-exact", params={"a": a, "b": b})

    def reject(self, a: CameraRef, b: CameraRef) -> Accepted:
        return self._call(Accepted, "POST", "/api/v1/pairs/reject", json=CameraPair(a=a, b=b).model_dump())

    def whoami(self) -> Whoami:
        return self._call(Whoami, "GET", "/api/v1/whoami")

    def users(self) -> UserList:
        return self._call(UserList, "GET", "/api/v1/users")

    def add_user(self, name: str, role: UserRole, password: str) -> UserEntry:
        body = NewUser(name=name, role=role, password=password).model_dump()
        return self._call(UserEntry, "POST", "/api/v1/users", json=body)

    def change_user(self, name: str, role: UserRole | None = None, password: str | None = None) -> UserEntry:
        body = UserChange(role=role, password=password).model_dump(exclude_none=True)
        return self._call(UserEntry, "PATCH", f"/api/v1/users/{name}", json=body)

    def remove_user(self, name: str) -> Done:
        return self._call(Done, "DELETE", f"/api/v1/users/{name}")

    def login_link(self, name: str) -> LoginLink:
        return self._call(LoginLink, "POST", f"/api/v1/users/{name}/link")

    def backfill_jobs(self) -> BackfillOverview:
        return self._call(BackfillOverview, "GET", "/api/v1/backfill")

    def start_backfill(self, order: BackfillOrder) -> JobInfo:
        return self._call(JobInfo, "POST", "/api/v1/backfill", json=order.model_dump(mode="json"))


class Federation:
    """Several management servers, for pairs whose recorders are managed by different ones (each
    server lists the other's recorder with `managed_by`): proposals are made here from both servers'
    cameras, pairs and rejections; a pair accepted or rejected is stored on every server that names
    both of its recorders, so each recorder gets the other as its camera's partner."""

    def __init__(self, servers: list[ManagementClient]) -> None:
        self.servers = servers

    def _documents(self) -> list[dict]:
        return [server.config().config for server in self.servers]

    @staticmethod
    def _cameras(documents: list[dict], recorder: str) -> list[CameraConfig]:
        for document in documents:
            for entry in document.get("recorders", []):
                if entry.get("id") == recorder and entry.get("cameras") is not None and not entry.get("managed_by"):
                    return [CameraConfig.model_validate(camera) for camera in entry["cameras"]]
        raise ApiError(404, f"no management server manages an independent recorder {recorder!r} with cameras")

    @staticmethod
    def _pairs(documents: list[dict], key: str) -> list[CameraPair]:
        found: dict[frozenset, CameraPair] = {}
        for document in documents:
            for data in document.get(key, []):
                pair = CameraPair.model_validate(data)
                found.setdefault(frozenset(pair.cameras()), pair)
        return list(found.values())

    def proposals(self, a: str, b: str) -> Mapping:
        documents = self._documents()
        return proposals_between(
            a,
            self._cameras(documents, a),
            b,
            self._cameras(documents, b),
            self._pairs(documents, "pairs"),
            self._pairs(documents, "rejected_pairs"),
        )

    def pairs(self) -> tuple[list[CameraPair], list[CameraPair]]:
        """Accepted and rejected pairs of every server, each once."""
        documents = self._documents()
        return self._pairs(documents, "pairs"), self._pairs(documents, "rejected_pairs")

    def _naming_both(self, pair: CameraPair) -> list[ManagementClient]:
        documents = self._documents()
        chosen = [
            server
            for server, document in zip(self.servers, documents, strict=True)
            if {pair.a.recorder, pair.b.recorder} <= {entry.get("id") for entry in document.get("recorders", [])}
        ]
        if not chosen:
            raise ApiError(404, f"no management server names both {pair.a.recorder} and {pair.b.recorder}")
        return chosen

    def accept(self, pair: CameraPair) -> list[Accepted]:
        return [server.accept_pair(pair) for server in self._naming_both(pair)]

    def accept_exact(self, a: str, b: str) -> list[CameraPair]:
        """Every exact-identity proposal with no conflict, accepted on the servers naming both."""
        chosen = [as_pair(a, b, p) for p in self.proposals(a, b).proposals if p.auto_acceptable]
        for pair in chosen:
            self.accept(pair)
        return chosen

    def reject(self, pair: CameraPair) -> list[Accepted]:
        return [server.reject(pair.a, pair.b) for server in self._naming_both(pair)]


class GatewayClient(_Client):
    """The gateway (a viewer credential): cameras, where to watch them live, what is recorded."""

    def cameras(self) -> RoutedCameraList:
        return self._call(RoutedCameraList, "GET", "/api/v1/cameras")

    def cluster(self, cluster_id: str) -> ClusterView:
        """A cluster's health: members (alive, ready, open backfill jobs), holder, fence, lease."""
        return self._call(ClusterView, "GET", f"/api/v1/clusters/{cluster_id}")

    def live_url(self, camera: str) -> str:
        """The camera's live HLS playlist on this gateway (open it with the same credential)."""
        return f"{self.url}/api/v1/cameras/{camera}/live.m3u8"

    def timeline(self, camera: str, start: str, end: str) -> Timeline:
        """What is recorded between start and end (ISO 8601 with a zone, or epoch seconds)."""
        return self._call(Timeline, "GET", f"/api/v1/cameras/{camera}/timeline", params={"start": start, "end": end})

    def export(
        self,
        camera: str,
        start: str,
        end: str,
        to: Path,
        layout: str = "fragmented",
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """The range as an MP4 file at `to` (written beside it, then renamed: never a half file
        under its name); `progress` is told the bytes received so far. Returns the file's size."""
        params = {"start": start, "end": end, "layout": layout}
        partial = to.with_name(f".{to.name}.part")
        received = 0
        try:
            with self.http.stream("GET", f"/api/v1/cameras/{camera}/export.mp4", params=params) as reply:
                if reply.status_code != 200:
                    reply.read()
                    raise _refusal(reply)
                with partial.open("wb") as out:
                    for data in reply.iter_bytes():
                        out.write(data)
                        received += len(data)
                        if progress is not None:
                            progress(received)
        except httpx.HTTPError as exc:
            partial.unlink(missing_ok=True)
            raise ApiError(0, f"export from {self.url} failed: {type(exc).__name__}: {exc}") from None
        except ApiError:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(to)
        return received
