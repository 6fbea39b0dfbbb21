"""Client of the embedded coordinator (gapless.cluster.embedded_server) over HTTP."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import httpx
from pydantic import ValidationError

from gapless.cluster.coordinator import Compacted, Coordinator, CoordinatorError, Event, KeyValue, Lease
from gapless.common.http import BearerAuth
from gapless.common.openapi import Body
from gapless.contracts.coordinator import (
    Answer,
    KeyAnswer,
    KeyDelete,
    KeyRead,
    KeyValueBody,
    KeyWrite,
    LeaseAnswer,
    LeaseGrant,
    LeaseRef,
    WatchAnswer,
    WatchRequest,
    WriteAnswer,
)


def _kv(body: KeyValueBody) -> KeyValue:
    return KeyValue(body.key, body.value, body.create_revision, body.mod_revision, body.lease)


Reply = TypeVar("Reply", bound=Answer)


class EmbeddedCoordinator(Coordinator):
    def __init__(self, url: str, token: str | Callable[[], str], timeout: float = 1.0) -> None:
        self.timeout = timeout
        self.http = httpx.Client(base_url=url.rstrip("/") + "/coordinator/v1", auth=BearerAuth(token), timeout=timeout)

    def _call(self, path: str, request: Body, reply: type[Reply], timeout: float | None = None) -> Reply:
        try:
            answer = self.http.post(path, json=request.model_dump(mode="json"), timeout=self.request_timeout(timeout))
        except httpx.HTTPError as exc:
            raise CoordinatorError(f"coordinator {path}: {type(exc).__name__}: {exc}") from None
        if answer.status_code == 410:
            raise Compacted("history compacted")
        if answer.status_code != 200:
            raise CoordinatorError(f"coordinator {path}: HTTP {answer.status_code}: {answer.text[:200]}")
        try:
            return reply.model_validate_json(answer.content)
        except ValidationError as exc:
            raise CoordinatorError(f"coordinator {path}: unexpected answer ({exc.error_count()} problems)") from None

    def grant(self, ttl: float) -> Lease:
        data = self._call("/lease/grant", LeaseGrant(ttl=ttl), LeaseAnswer)
        return Lease(data.id, data.ttl)

    def keepalive(self, lease: int) -> bool:
        return self._call("/lease/keepalive", LeaseRef(id=lease), LeaseAnswer).ttl > 0

    def revoke(self, lease: int) -> None:
        self._call("/lease/revoke", LeaseRef(id=lease), LeaseAnswer)

    def get(self, key: str) -> KeyValue | None:
        found = self._call("/kv/get", KeyRead(key=key), KeyAnswer).kv
        return None if found is None else _kv(found)

    def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        data = self._call("/kv/get", KeyRead(prefix=prefix), KeyAnswer)
        return [_kv(kv) for kv in data.kvs], data.revision

    def _write(self, op: str, request: KeyWrite) -> int | None:
        data = self._call(f"/kv/{op}", request, WriteAnswer)
        return data.written if data.succeeded else None

    def put(self, key: str, value: dict, lease: int = 0) -> int:
        written = self._write("put", KeyWrite(key=key, value=value, lease=lease))
        if written is None:
            raise CoordinatorError(f"coordinator refused to put {key}")
        return written

    def create(self, key: str, value: dict, lease: int = 0) -> int | None:
        return self._write("create", KeyWrite(key=key, value=value, lease=lease))

    def replace(self, key: str, value: dict, mod_revision: int, lease: int = 0) -> int | None:
        return self._write("replace", KeyWrite(key=key, value=value, lease=lease, mod_revision=mod_revision))

    def delete(self, key: str, mod_revision: int | None = None) -> bool:
        return self._call("/kv/delete", KeyDelete(key=key, mod_revision=mod_revision), WriteAnswer).succeeded

    def watch(self, prefix: str, after_revision: int, timeout: float) -> list[Event]:
        request = WatchRequest(prefix=prefix, after_revision=after_revision, timeout=timeout)
        data = self._call("/watch", request, WatchAnswer, timeout=timeout + self.timeout)
        return [Event(e.kind, e.key, e.revision, None if e.kv is None else _kv(e.kv)) for e in data.events]

    def close(self) -> None:
        self.http.close()
