"""The management server's own file, `management.yaml`: its settings (listen, data, api_token) and,
on first start, the cluster configuration it seeds its store with (gapless.config.cluster). After
that the stored configuration is changed through the API, validated whole: an invalid change is
refused whole.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError

from gapless.common.config import (
    ConfigError,
    Listen,
    Listening,
    SignedUrlTtl,
    Strict,
    api_token,
    describe_errors,
    load_yaml_config,
)
from gapless.config.cluster import (
    CameraPair,
    ClusterConfig,
    ClusterDocument,
    CoordinatorConfig,
    Credential,
    RecorderEntry,
)


class ManagementSection(Listening):
    listen: Listen = "127.0.0.1:7000"
    """Where the API (and, by default, the gateway) listens, `host:port`."""
    data: Path
    """The data directory (configuration versions, embedded coordinator)."""
    api_token: str | None = Field(default=None, min_length=16, repr=False)
    """The administrator's token (every right); `GAPLESS_API_TOKEN` in the environment wins. Required."""
    gateway: bool = True  # serve the gateway's routes on the same port
    """Serve the gateway's routes on the same port."""
    signed_url_ttl: SignedUrlTtl = 6 * 3600.0
    """How long the signed media URLs in the gateway's playlists stay valid (1 minute to 7 days)."""


class ManagementConfig(Strict):
    management: ManagementSection
    """The management server's own settings."""
    coordinator: CoordinatorConfig = CoordinatorConfig()
    """Seeds the stored configuration on first start (then: `PUT /api/v1/config`)."""
    recorders: list[RecorderEntry] = []
    """Seeds the stored configuration on first start."""
    clusters: list[ClusterConfig] = []
    """Seeds the stored configuration on first start."""
    credentials: list[Credential] = []
    """Seeds the stored configuration on first start."""
    pairs: list[CameraPair] = []
    """Seeds the stored configuration on first start (then: `gapless pairs accept`)."""
    rejected_pairs: list[CameraPair] = []
    """Seeds the stored configuration on first start."""

    def document(self) -> ClusterDocument:
        return ClusterDocument(
            coordinator=self.coordinator,
            recorders=self.recorders,
            clusters=self.clusters,
            credentials=self.credentials,
            pairs=self.pairs,
            rejected_pairs=self.rejected_pairs,
        )


def load_management_config(path: Path) -> ManagementConfig:
    config = load_yaml_config(path, ManagementConfig, "'management'")
    try:
        config.document()  # the cross-references between recorders, clusters and cameras
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc, str(path))) from None
    config.management.api_token = api_token(config.management.api_token, path, "management.api_token")
    return config
