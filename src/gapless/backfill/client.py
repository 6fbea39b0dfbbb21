"""The partner side of backfill: a recorder's fragment API, read with verification."""

from __future__ import annotations

import hashlib
from typing import TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from gapless.common.timeparse import parse_time_us
from gapless.contracts.recorder import Coverage, FragmentInfo, FragmentList, corrupt_refusal

#: The partner's API allows at most 24 h per fragment listing; ask in windows of this size.
LISTING_WINDOW_US = 6 * 3_600_000_000


Answer = TypeVar("Answer", bound=BaseModel)


class PartnerError(Exception):
    """The partner answered, but not with something usable (retrying may help)."""


class CorruptFragment(Exception):
    """A fragment's bytes do not match its checksum or length: refused, never stored."""


class PartnerClient:
    def __init__(self, url: str, token: str, timeout: float = 30.0) -> None:
        self.http = httpx.AsyncClient(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout, connect=5.0),
        )

    async def __aenter__(self) -> PartnerClient:
        return self

    async def __aexit__(self, *_exc) -> None:
        await self.http.aclose()

    async def _get(self, path: str, **params) -> httpx.Response:
        response = await self.http.get(path, params=params or None)
        if response.status_code == 404 and "/fragments/" not in path:
            return response
        if response.status_code == 500 and (refusal := corrupt_refusal(response.content)) is not None:
            raise CorruptFragment(f"{path}: the partner's own copy fails its checksum: {refusal.error}")
        if response.status_code != 200:
            raise PartnerError(f"{path}: HTTP {response.status_code}: {response.text[:200]}")
        return response

    async def coverage(self, camera: str, start_us: int, end_us: int) -> list[tuple[int, int]]:
        response = await self._get(f"/api/v1/cameras/{camera}/coverage", start=_secs(start_us), end=_secs(end_us))
        if response.status_code == 404:
            raise PartnerError(f"partner has no camera {camera!r}")
        return [
            (parse_time_us(a), parse_time_us(b)) for a, b in Coverage.model_validate_json(response.content).intervals
        ]

    async def fragments(self, camera: str, start_us: int, end_us: int) -> list[FragmentInfo]:
        """Fragment metadata overlapping [start, end), oldest first, asked in windows."""
        found: dict[int, FragmentInfo] = {}
        window_start = start_us
        while window_start < end_us:
            window_end = min(end_us, window_start + LISTING_WINDOW_US)
            response = await self._get(
                f"/api/v1/cameras/{camera}/fragments", start=_secs(window_start), end=_secs(window_end)
            )
            if response.status_code == 404:
                raise PartnerError(f"partner has no camera {camera!r}")
            for meta in _parsed(FragmentList, response).fragments:
                found[meta.id] = meta
            window_start = window_end
        return sorted(found.values(), key=lambda m: (m.start_us, m.id))

    async def fragment_bytes(self, meta: FragmentInfo) -> bytes:
        response = await self._get(f"/api/v1/fragments/{meta.id}")
        data = response.content
        digest = hashlib.sha256(data).hexdigest()
        if len(data) != meta.bytes or digest != meta.sha256 or response.headers.get("X-Gapless-SHA256") != digest:
            raise CorruptFragment(
                f"fragment {meta.id} from {meta.start_us} µs: {len(data)} bytes with sha256 {digest[:12]}…,"
                f" expected {meta.bytes} bytes with {meta.sha256[:12]}…"
            )
        return data

    async def init_segment(self, init_id: str) -> bytes:
        return (await self._get(f"/api/v1/inits/{init_id}")).content


def _secs(us: int) -> str:
    return f"{us / 1e6:.6f}"


def _parsed(model: type[Answer], response: httpx.Response) -> Answer:
    try:
        return model.model_validate_json(response.content)
    except ValidationError:
        raise PartnerError(f"{response.url.path}: not a {model.__name__} answer") from None
