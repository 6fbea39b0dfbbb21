"""The etcd backend: etcd ≥ 3.4 over its v3 JSON gateway (`/v3/...`), with httpx.

Why not a client library: the Python etcd clients either speak gRPC (a heavy dependency, with its
own threads) or wrap this same JSON gateway without failing over between endpoints. Gapless needs
eight calls, a bounded time for each, and the next endpoint when one node is down; that is this file.

The gateway's habits (see DESIGN.md): keys and values are base64; 64-bit numbers arrive as strings;
fields at their zero value are left out (a failed txn has no "succeeded"); watch is a stream of JSON
objects that may end with an in-band error.
"""

from __future__ import annotations

import base64
import json
import logging
import time

import httpx

from gapless.cluster.coordinator import Compacted, Coordinator, CoordinatorError, Event, KeyValue, Lease, decode, encode

log = logging.getLogger("gapless.coordinator.etcd")


def _b64(raw: bytes | str) -> str:
    return base64.b64encode(raw.encode() if isinstance(raw, str) else raw).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text or "")


def _prefix_end(prefix: str) -> str:
    """etcd's range_end for "every key starting with prefix"."""
    raw = bytearray(prefix.encode())
    while raw and raw[-1] == 0xFF:
        raw.pop()
    raw[-1] += 1
    return _b64(bytes(raw))


def _kv(data: dict) -> KeyValue:
    return KeyValue(
        _unb64(data["key"]).decode(),
        decode(_unb64(data.get("value", ""))),
        int(data.get("create_revision", 0)),
        int(data.get("mod_revision", 0)),
        int(data.get("lease", 0)),
    )


class EtcdCoordinator(Coordinator):
    def __init__(self, endpoints: list[str], timeout: float = 1.0) -> None:
        if not endpoints:
            raise ValueError("etcd needs at least one endpoint")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.timeout = timeout
        self.http = httpx.Client(timeout=timeout)

    def _call(self, path: str, body: dict) -> dict:
        """POST to the first endpoint that answers, within one timeout overall; an endpoint that
        failed goes to the back of the list."""
        deadline = time.monotonic() + self.request_timeout()
        errors = []
        for _ in range(len(self.endpoints)):
            endpoint = self.endpoints[0]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                reply = self.http.post(f"{endpoint}/v3{path}", json=body, timeout=remaining)
            except httpx.HTTPError as exc:
                errors.append(f"{endpoint}: {type(exc).__name__}")
                self.endpoints.append(self.endpoints.pop(0))
                continue
            if reply.status_code != 200:
                message = reply.text[:200]
                if reply.status_code >= 500 or "leader" in message:  # this node cannot serve now
                    errors.append(f"{endpoint}: HTTP {reply.status_code} {message}")
                    self.endpoints.append(self.endpoints.pop(0))
                    continue
                raise CoordinatorError(f"etcd {path}: HTTP {reply.status_code}: {message}")
            return reply.json()
        raise CoordinatorError(f"etcd {path}: no endpoint answered ({'; '.join(errors) or 'timed out'})")

    def grant(self, ttl: float) -> Lease:
        data = self._call("/lease/grant", {"TTL": max(1, round(ttl + 0.499))})
        if data.get("error"):
            raise CoordinatorError(f"etcd lease grant: {data['error']}")
        return Lease(int(data["ID"]), float(data["TTL"]))

    def keepalive(self, lease: int) -> bool:
        data = self._call("/lease/keepalive", {"ID": str(lease)})
        return int(data.get("result", {}).get("TTL", 0)) > 0

    def revoke(self, lease: int) -> None:
        try:
            self._call("/lease/revoke", {"ID": str(lease)})
        except CoordinatorError as exc:
            if "not found" not in str(exc):
                raise

    def get(self, key: str) -> KeyValue | None:
        kvs = self._call("/kv/range", {"key": _b64(key)}).get("kvs", [])
        return _kv(kvs[0]) if kvs else None

    def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        data = self._call("/kv/range", {"key": _b64(prefix), "range_end": _prefix_end(prefix)})
        return [_kv(kv) for kv in data.get("kvs", [])], int(data["header"]["revision"])

    def _put_request(self, key: str, value: dict, lease: int) -> dict:
        request = {"key": _b64(key), "value": _b64(encode(value))}
        if lease:
            request["lease"] = str(lease)
        return request

    def put(self, key: str, value: dict, lease: int = 0) -> int:
        return int(self._call("/kv/put", self._put_request(key, value, lease))["header"]["revision"])

    def _txn(self, compare: dict, success: dict) -> int | None:
        data = self._call("/kv/txn", {"compare": [compare], "success": [success]})
        return int(data["header"]["revision"]) if data.get("succeeded") else None

    def create(self, key: str, value: dict, lease: int = 0) -> int | None:
        compare = {"key": _b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
        return self._txn(compare, {"request_put": self._put_request(key, value, lease)})

    def replace(self, key: str, value: dict, mod_revision: int, lease: int = 0) -> int | None:
        compare = {"key": _b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(mod_revision)}
        return self._txn(compare, {"request_put": self._put_request(key, value, lease)})

    def delete(self, key: str, mod_revision: int | None = None) -> bool:
        if mod_revision is None:
            return int(self._call("/kv/deleterange", {"key": _b64(key)}).get("deleted", 0)) > 0
        compare = {"key": _b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(mod_revision)}
        return self._txn(compare, {"request_delete_range": {"key": _b64(key)}}) is not None

    def watch(self, prefix: str, after_revision: int, timeout: float) -> list[Event]:
        request = {
            "create_request": {
                "key": _b64(prefix),
                "range_end": _prefix_end(prefix),
                "start_revision": str(after_revision + 1),
            }
        }
        endpoint = self.endpoints[0]
        events: list[Event] = []
        decoder = json.JSONDecoder()
        text = ""
        limits = httpx.Timeout(self.timeout, read=timeout)
        try:
            with self.http.stream("POST", f"{endpoint}/v3/watch", json=request, timeout=limits) as reply:
                if reply.status_code != 200:
                    raise CoordinatorError(f"etcd watch: HTTP {reply.status_code}")
                for chunk in reply.iter_text():
                    text += chunk
                    while text.strip():
                        try:
                            message, end = decoder.raw_decode(text.lstrip())
                        except ValueError:
                            break  # incomplete: wait for more
                        text = text.lstrip()[end:]
                        events += self._watch_events(message)
                    if events:
                        return events
        except httpx.ReadTimeout:
            return events
        except httpx.HTTPError as exc:
            self.endpoints.append(self.endpoints.pop(0))
            raise CoordinatorError(f"etcd watch at {endpoint}: {type(exc).__name__}") from None
        return events

    @staticmethod
    def _watch_events(message: dict) -> list[Event]:
        if "error" in message:
            raise CoordinatorError(f"etcd watch: {message['error']}")
        result = message.get("result", {})
        if int(result.get("compact_revision", 0)) > 0:
            raise Compacted(f"etcd compacted up to {result['compact_revision']}")
        if result.get("canceled"):
            raise CoordinatorError(f"etcd watch canceled: {result.get('cancel_reason', '')}")
        out = []
        for event in result.get("events", []):
            kv = event["kv"]
            key, revision = _unb64(kv["key"]).decode(), int(kv.get("mod_revision", 0))
            if event.get("type") == "DELETE":
                out.append(Event("delete", key, revision, None))
            else:
                out.append(Event("put", key, revision, _kv(kv)))
        return out

    def close(self) -> None:
        self.http.close()
