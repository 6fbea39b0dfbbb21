"""The management API's own bodies (the configuration document itself is `config.cluster`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from gapless.common.openapi import Body


class StoredConfig(BaseModel):
    """`GET /api/v1/config`: the configuration, secrets shown as `<redacted>`."""

    version: int
    config: dict


class StoredVersion(BaseModel):
    version: int


class RecorderEntry(BaseModel):
    id: str
    url: str
    cluster: str | None  # None: the recorder is in no cluster


class RecorderList(BaseModel):
    recorders: list[RecorderEntry]


class SwitchoverRequest(Body):
    to: str | None = None
    """The member to hand the token to (default: the other one)."""


class SwitchoverAnswer(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    cluster: str
    previous: str | None = Field(alias="from")  # the holder when it was asked (None: nobody)
    to: str
