"""A clustered recorder's configuration: fetched from the management server, cached on disk.

Recording never waits on the management server: when it cannot be reached the cached copy is
used, and only a recorder that never fetched one (no cache) waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from gapless.management.config import ClusterConfig, CoordinatorConfig
from gapless.recorder.config import ConfigError, Partner, RecorderConfig

log = logging.getLogger("gapless.managed")

CACHE_NAME = "managed-config.json"
RETRY_S = 5.0
POLL_S = 10.0


async def follow(recorder, config: RecorderConfig, settings: ManagedSettings, stop: asyncio.Event) -> None:
    """Apply new configuration versions while running: cameras start and stop on both members of a
    cluster within POLL_S of the change. Cluster settings (members, TTL, failback, address,
    coordinator) are read at start only; a change to them is logged as needing a restart."""
    version = settings.version
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), POLL_S)
        if stop.is_set():
            break
        try:
            raw = await asyncio.to_thread(fetch, config)
            if raw["version"] == version:
                continue
            new_config, new_settings = merge(config, raw)
        except httpx.HTTPError as exc:  # unreachable: recording goes on with what it has
            log.debug("configuration poll: %s", exc)
            continue
        except (ConfigError, ValueError, KeyError) as exc:  # refused (a rotated credential?) or unusable
            log.warning("configuration poll: %s", exc)
            continue
        await asyncio.to_thread(save_cache, config, raw)
        changes = await asyncio.to_thread(recorder.reconfigure, new_config)
        log.info("configuration version %d applied: %s", raw["version"], ", ".join(changes) or "no camera changes")
        if _cluster_settings(new_settings) != _cluster_settings(settings):
            log.warning(
                "configuration version %d changes cluster settings: restart this recorder to apply them", raw["version"]
            )
        version, config, settings = raw["version"], new_config, new_settings


def _cluster_settings(settings: ManagedSettings) -> tuple:
    cluster = settings.cluster
    shape = (
        None if cluster is None else (cluster.id, cluster.members, cluster.lease_ttl, cluster.failback, cluster.address)
    )
    return shape, settings.coordinator


@dataclass
class ManagedSettings:
    version: int
    cluster: ClusterConfig | None
    coordinator: CoordinatorConfig
    peers: list[Partner]


def fetch(config: RecorderConfig, timeout: float = 5.0) -> dict:
    link = config.management
    reply = httpx.get(
        f"{link.url.rstrip('/')}/api/v1/recorders/{config.recorder.id}/config",
        headers={"Authorization": f"Bearer {link.current_token()}"},
        timeout=timeout,
    )
    if reply.status_code != 200:
        raise ConfigError(f"management server: HTTP {reply.status_code}: {reply.text[:200]}")
    return reply.json()


def save_cache(config: RecorderConfig, raw: dict) -> None:
    path = Path(config.recorder.storage) / CACHE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:  # peer tokens, passwords
        json.dump(raw, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load(config: RecorderConfig, wait_forever: bool = True) -> tuple[RecorderConfig, ManagedSettings]:
    """The configuration from management (cached), or from the cache when it is unreachable."""
    cache = Path(config.recorder.storage) / CACHE_NAME
    while True:
        try:
            raw = fetch(config)
            save_cache(config, raw)
            log.info("configuration version %d from %s", raw["version"], config.management.url)
            break
        except (httpx.HTTPError, ConfigError, ValueError) as exc:
            if cache.exists():
                raw = json.loads(cache.read_text())
                log.warning("management server unreachable (%s); using the cached version %d", exc, raw["version"])
                break
            if not wait_forever:
                raise ConfigError(f"management server unreachable and no cached configuration: {exc}") from None
            log.error("management server unreachable and no cached configuration yet: %s (retrying)", exc)
            time.sleep(RETRY_S)
    return merge(config, raw)


def merge(config: RecorderConfig, raw: dict) -> tuple[RecorderConfig, ManagedSettings]:
    cluster = ClusterConfig.model_validate(raw["cluster"]) if raw.get("cluster") else None
    peers = [Partner(id=p["id"], url=p["url"], token=p["token"]) for p in raw.get("peers", [])]
    data = config.model_dump()
    data.pop("management")
    if cluster is not None:
        data["cameras"] = [c.model_dump() for c in cluster.cameras]
        data["partners"] = [p.model_dump() for p in peers]
        data["backfill"] = cluster.backfill.model_dump()
        if cluster.retention.max_age or cluster.retention.max_bytes:
            data["recorder"]["retention"] = cluster.retention.model_dump()
    merged = RecorderConfig.model_validate(data)
    merged.management = config.management
    settings = ManagedSettings(raw["version"], cluster, CoordinatorConfig.model_validate(raw["coordinator"]), peers)
    return merged, settings
