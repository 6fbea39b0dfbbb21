"""The management API's own bodies (the configuration document itself is `config.cluster`)."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from gapless.common.openapi import Body, Reply


class StoredConfig(Reply):
    """`GET /api/v1/config`: the configuration, secrets shown as `<redacted>`."""

    version: int
    config: dict


class StoredVersion(Reply):
    version: int


class RecorderEntry(Reply):
    id: str
    url: str
    cluster: str | None
    """None: the recorder is in no cluster."""


class RecorderList(Reply):
    recorders: list[RecorderEntry]


class SwitchoverRequest(Body):
    to: str | None = None
    """The member to hand the token to (default: the other one)."""


class SwitchoverAnswer(Reply):
    model_config = ConfigDict(populate_by_name=True)

    cluster: str
    previous: str | None = Field(alias="from")
    """The holder when it was asked (None: nobody)"""
    to: str
