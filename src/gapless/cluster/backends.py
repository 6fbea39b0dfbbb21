"""Pick the coordinator backend named in the cluster configuration."""

from __future__ import annotations

from collections.abc import Callable

from gapless.cluster.coordinator import Coordinator
from gapless.cluster.embedded import EmbeddedCoordinator
from gapless.cluster.etcd import EtcdCoordinator


def connect(
    backend: str, endpoints: list[str], management_url: str, token: str | Callable[[], str], timeout: float
) -> Coordinator:
    """`embedded` is served by the management server (same URL and credential); `etcd` by its endpoints."""
    if backend == "etcd":
        return EtcdCoordinator(endpoints, timeout)
    return EmbeddedCoordinator(management_url, token, timeout)
