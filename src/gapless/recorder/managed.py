"""A clustered recorder's configuration: fetched from the management server, cached on disk.

Recording never waits on the management server: when it cannot be reached the cached copy is
used, and only a recorder that never fetched one (no cache) waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from pydantic import ValidationError

from gapless.common.config import ConfigError, describe_errors
from gapless.config.cluster import ClusterConfig, CoordinatorConfig, ManagedConfig, RecorderEntry, StandbyCamera
from gapless.config.recorder import ManagementLink, RecorderConfig

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
            managed = await asyncio.to_thread(fetch, config)
            if managed.version == version:
                continue
            new_config, new_settings = merge(config, managed)
        except httpx.HTTPError as exc:  # unreachable: recording goes on with what it has
            log.debug("configuration poll: %s", exc)
            continue
        except ConfigError as exc:  # refused (a rotated credential?) or unusable
            log.warning("configuration poll: %s", exc)
            continue
        await asyncio.to_thread(save_cache, config, managed)
        recorder.standby = new_settings.standby
        changes = await asyncio.to_thread(recorder.reconfigure, new_config)
        log.info("configuration version %d applied: %s", managed.version, ", ".join(changes) or "no camera changes")
        if _cluster_settings(new_settings) != _cluster_settings(settings):
            log.warning(
                "configuration version %d changes cluster settings: restart this recorder to apply them",
                managed.version,
            )
        version, config, settings = managed.version, new_config, new_settings


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
    peers: list[RecorderEntry]
    standby: list[StandbyCamera]


def fetch(config: RecorderConfig, timeout: float = 5.0) -> ManagedConfig:
    link = _link(config)
    reply = httpx.get(
        f"{link.url.rstrip('/')}/api/v1/recorders/{config.recorder.id}/config",
        headers={"Authorization": f"Bearer {link.current_token()}"},
        timeout=timeout,
    )
    if reply.status_code != 200:
        raise ConfigError(f"management server: HTTP {reply.status_code}: {reply.text[:200]}")
    return _validated(reply.content, "the management server's answer")


def _link(config: RecorderConfig) -> ManagementLink:
    if config.management is None:
        raise ConfigError("this recorder has no management section")
    return config.management


def _validated(raw: bytes | str, source: str) -> ManagedConfig:
    try:
        return ManagedConfig.model_validate_json(raw)
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc, source)) from None


def save_cache(config: RecorderConfig, managed: ManagedConfig) -> None:
    path = Path(config.recorder.storage) / CACHE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:  # peer tokens, passwords
        fh.write(managed.model_dump_json())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load(config: RecorderConfig, wait_forever: bool = True) -> tuple[RecorderConfig, ManagedSettings]:
    """The configuration from management (cached), or from the cache when it is unreachable."""
    cache = Path(config.recorder.storage) / CACHE_NAME
    while True:
        try:
            managed = fetch(config)
            save_cache(config, managed)
            log.info("configuration version %d from %s", managed.version, _link(config).url)
            break
        except (httpx.HTTPError, ConfigError) as exc:
            if cache.exists():
                managed = _validated(cache.read_text(), str(cache))
                log.warning("management server unreachable (%s); using the cached version %d", exc, managed.version)
                break
            if not wait_forever:
                raise ConfigError(f"management server unreachable and no cached configuration: {exc}") from None
            log.error("management server unreachable and no cached configuration yet: %s (retrying)", exc)
            time.sleep(RETRY_S)
    return merge(config, managed)


def merge(config: RecorderConfig, managed: ManagedConfig) -> tuple[RecorderConfig, ManagedSettings]:
    cluster = managed.cluster
    data = config.model_dump()
    data.pop("management")
    if cluster is not None:
        data["cameras"] = [c.model_dump() for c in cluster.cameras]
        data["partners"] = [{"id": p.id, "url": p.url, "token": p.token} for p in managed.peers]
        data["backfill"] = cluster.backfill.model_dump()
        if cluster.retention.max_age or cluster.retention.max_bytes:
            data["recorder"]["retention"] = cluster.retention.model_dump()
    elif managed.cameras is not None:  # an independent recorder: its cameras, paired ones with their partner
        data["cameras"] = [c.model_dump() for c in managed.cameras]
    if managed.standby:  # the cameras it stands by for: off until the standby watcher takes them
        data["cameras"] = [*data.get("cameras", []), *(s.camera.model_dump() for s in managed.standby)]
    try:
        merged = RecorderConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc, f"configuration version {managed.version}")) from None
    merged.management = config.management
    return merged, ManagedSettings(managed.version, cluster, managed.coordinator, managed.peers, managed.standby)
