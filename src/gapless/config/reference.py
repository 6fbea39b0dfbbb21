"""docs/configuration.md, generated from the configuration models themselves (every key, its type,
default and meaning), so the reference cannot drift from the code: `python -m
gapless.config.reference > docs/configuration.md`, and a test fails when the file is stale."""

from __future__ import annotations

import types
import typing

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from gapless.common.docstrings import field_description
from gapless.config.cluster import ClusterDocument
from gapless.config.management import ManagementSection
from gapless.config.recorder import RecorderConfig

FILES: list[tuple[str, str, type[BaseModel], str]] = [
    (
        "Recorder",
        "`gapless recorder --config FILE`",
        RecorderConfig,
        "A recorder's YAML file. Durations take a unit (`500ms`, `90s`, `10m`, `12h`, `30d`, `2w`),"
        " sizes too (`500MB`, `64MiB`, `2TB`). Unknown keys are refused, naming the field.",
    ),
    (
        "Cluster configuration",
        "`PUT /api/v1/config` on the management server (seeded from `management.yaml` on first start)",
        ClusterDocument,
        "What the management server stores in numbered versions and hands out: each recorder fetches"
        " its part. Secrets are write-only (`<redacted>` on read, docs/design/security.md).",
    ),
]


def _unit(metadata: list) -> str | None:
    """ "duration", "size" or "host:port" for a value parsed with units, else None."""
    names = {getattr(getattr(m, "func", None), "__name__", "") for m in metadata}
    for parser, unit in (("parse_seconds", "duration"), ("parse_bytes", "size"), ("listen_address", "host:port")):
        if parser in names:
            return unit
    return None


def _type_name(annotation: object, metadata: list | None = None) -> str:
    if metadata and (unit := _unit(metadata)):
        return unit
    if annotation is type(None):
        return "none"
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *meta = typing.get_args(annotation)
        return _type_name(base, meta)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in typing.get_args(annotation))
    if origin is typing.Literal:
        return " or ".join(f"`{value}`" for value in typing.get_args(annotation))
    if origin is list:
        (item,) = typing.get_args(annotation)
        return f"list of {_type_name(item)}s"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    if isinstance(annotation, type):
        names = {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "Path": "path"}
        return names.get(annotation.__name__, annotation.__name__)
    return str(annotation)


def _human(value: float, unit: str | None) -> str:
    if unit == "size" and isinstance(value, int) and value and value % 2**20 == 0:
        return f"{value >> 20}MiB"
    if unit == "duration":
        for name, seconds in (("d", 86400), ("h", 3600), ("m", 60)):
            if value and value % seconds == 0:
                return f"{int(value // seconds)}{name}"
        return f"{value:g}s"
    return str(value)


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    default = field.get_default(call_default_factory=True)
    if default is None or default is PydanticUndefined:
        return "none"
    if isinstance(default, BaseModel):
        return "(below)"
    if isinstance(default, list):
        return "`[]`" if not default else f"`{default}`"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, int | float):
        return f"`{_human(default, _unit(field.metadata))}`"
    return f"`{default}`"


def _nested(annotation: object) -> list[type[BaseModel]]:
    """The configuration models a field holds (itself, in a list, or optional)."""
    found = []
    for arg in (annotation, *typing.get_args(annotation)):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            found.append(arg)
        elif typing.get_origin(arg) is list:
            found += _nested(typing.get_args(arg)[0])
    return found


def _section(prefix: str, model: type[BaseModel], lines: list[str], seen: set[str]) -> None:
    rows, children = [], []
    for name, field in model.model_fields.items():
        key = f"{prefix}.{name}" if prefix else name
        meaning = " ".join(field_description(model, name).split())
        kind = _type_name(field.annotation, field.metadata)
        rows.append(f"| `{key}` | {kind} | {_default(field)} | {meaning} |")
        for child in _nested(field.annotation):
            is_list = kind.startswith("list of")
            children.append((f"{key}[]" if is_list else key, child))
    if rows:
        lines += [f"### `{prefix}`" if prefix else "### top level", "", "| key | type | default | meaning |"]
        lines += ["| --- | --- | --- | --- |", *rows, ""]
    for child_prefix, child in children:
        if child_prefix not in seen:
            seen.add(child_prefix)
            _section(child_prefix, child, lines, seen)


def reference() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Generated from the configuration models (`python -m gapless.config.reference`); a test keeps it",
        "current. `management.yaml` holds the management server's own section (below) and, on first",
        "start, a cluster configuration.",
        "",
    ]

    for title, where, model, about in FILES:
        lines += [f"## {title}", "", f"{where}. {about}", ""]
        _section("", model, lines, set())
    lines += ["## Management server", "", "The `management:` section of `management.yaml`.", ""]
    _section("management", ManagementSection, lines, set())
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    print(reference(), end="")


if __name__ == "__main__":
    main()
