"""Client of the embedded coordinator (gapless.cluster.embedded_server) over HTTP."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from gapless.cluster.coordinator import Compacted, Coordinator, CoordinatorError, Event, KeyValue, Lease
from gapless.common.http import BearerAuth


def _kv(data: dict) -> KeyValue:
    return KeyValue(data["key"], data["value"], data["create_revision"], data["mod_revision"], data["lease"])


class EmbeddedCoordinator(Coordinator):
    def __init__(self, url: str, token: str | Callable[[], str], timeout: float = 1.0) -> None:
        self.timeout = timeout
        self.http = httpx.Client(base_url=url.rstrip("/") + "/coordinator/v1", auth=BearerAuth(token), timeout=timeout)

    def _call(self, path: str, body: dict, timeout: float | None = None) -> dict:
        try:
            reply = self.http.post(path, json=body, timeout=self.request_timeout(timeout))
        except httpx.HTTPError as exc:
            raise CoordinatorError(f"coordinator {path}: {type(exc).__name__}: {exc}") from None
        if reply.status_code == 410:
            raise Compacted("history compacted")
        if reply.status_code != 200:
            raise CoordinatorError(f"coordinator {path}: HTTP {reply.status_code}: {reply.text[:200]}")
        return reply.json()

    def grant(self, ttl: float) -> Lease:
        data = self._call("/lease/grant", {"ttl": ttl})
        return Lease(data["id"], data["ttl"])

    def keepalive(self, lease: int) -> bool:
        return self._call("/lease/keepalive", {"id": lease})["ttl"] > 0

    def revoke(self, lease: int) -> None:
        self._call("/lease/revoke", {"id": lease})

    def get(self, key: str) -> KeyValue | None:
        found = self._call("/kv/get", {"key": key})["kv"]
        return None if found is None else _kv(found)

    def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        data = self._call("/kv/get", {"prefix": prefix})
        return [_kv(kv) for kv in data["kvs"]], data["revision"]

    def _write(self, op: str, body: dict) -> int | None:
        data = self._call(f"/kv/{op}", body)
        return data["written"] if data["succeeded"] else None

    def put(self, key: str, value: dict, lease: int = 0) -> int:
        return self._call("/kv/put", {"key": key, "value": value, "lease": lease})["written"]

    def create(self, key: str, value: dict, lease: int = 0) -> int | None:
        return self._write("create", {"key": key, "value": value, "lease": lease})

    def replace(self, key: str, value: dict, mod_revision: int, lease: int = 0) -> int | None:
        return self._write("replace", {"key": key, "value": value, "lease": lease, "mod_revision": mod_revision})

    def delete(self, key: str, mod_revision: int | None = None) -> bool:
        return self._call("/kv/delete", {"key": key, "mod_revision": mod_revision})["succeeded"]

    def watch(self, prefix: str, after_revision: int, timeout: float) -> list[Event]:
        body = {"prefix": prefix, "after_revision": after_revision, "timeout": timeout}
        data = self._call("/watch", body, timeout=timeout + self.timeout)
        return [Event(e["kind"], e["key"], e["revision"], e["kv"] and _kv(e["kv"])) for e in data["events"]]

    def close(self) -> None:
        self.http.close()
