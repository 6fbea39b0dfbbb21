"""Configuration primitives shared by every Gapless file and API: durations and sizes with units,
identifiers, strict models, YAML loading whose errors name the field."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


class ConfigError(Exception):
    """A configuration that cannot be used; the message names the field."""


def parse_seconds(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"invalid duration {value!r} (use e.g. 500ms, 90s, 12h, 30d)")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def parse_bytes(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"invalid size {value!r} (use e.g. 500MB, 2GiB, 1TB)")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def listen_address(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen must be host:port, not {value!r}")
    return value


Seconds = Annotated[float, BeforeValidator(parse_seconds), Field(gt=0)]
Listen = Annotated[str, AfterValidator(listen_address)]
Bytes = Annotated[int, BeforeValidator(parse_bytes), Field(gt=0)]
#: A signed media URL's lifetime: at least a minute, at most a week.
SignedUrlTtl = Annotated[float, BeforeValidator(parse_seconds), Field(ge=60, le=7 * 86400)]


ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
CAMERA_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"


class Strict(BaseModel):
    """A configuration model: unknown keys are refused, and each field's docstring is its
    documented meaning (docs/configuration.md is generated from them)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)


class Listening(Strict):
    """A server section with `listen: host:port`."""

    listen: Listen
    """Where it listens, `host:port`."""

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


def describe_errors(error: ValidationError, source: str) -> str:
    """A validation error as lines naming each field and what is wrong (never the value)."""
    lines = [f"{source}: invalid configuration"]
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"  {where}: {message}")
    return "\n".join(lines)


Model = TypeVar("Model", bound=BaseModel)


def load_yaml_config(path: Path, model: type[Model], expected: str) -> Model:
    """Read and validate a YAML config file; every problem becomes a ConfigError naming the field."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with {expected}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc, str(path))) from None


def api_token(configured: str | None, path: Path, field: str) -> str:
    """The API token: GAPLESS_API_TOKEN from the environment wins over the file."""
    token = os.environ.get("GAPLESS_API_TOKEN") or configured
    if not token or len(token) < 16:
        raise ConfigError(f"{path}: {field}: required, at least 16 characters (or set GAPLESS_API_TOKEN)")
    return token
