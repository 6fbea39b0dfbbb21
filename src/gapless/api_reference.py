"""docs/api.md, generated from the OpenAPI documents the servers serve (the same route tables and
pydantic models), so the reference cannot drift from the code: `python -m gapless.api_reference >
docs/api.md`, and a test fails when the file is stale."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from gapless.common.openapi import openapi
from gapless.gateway.gateway import gateway_routes
from gapless.management.server import DESCRIPTION, build_app
from gapless.recorder.api import build_api
from gapless.sim.control import build_control_app

INTRO = """\
# HTTP API reference

Generated from the servers' own route tables and models (`python -m gapless.api_reference >
docs/api.md`); each server also serves its document at `GET /api/v1/openapi.json` (OpenAPI 3.1)
for client generators. Every request needs a bearer token (`Authorization: Bearer …`); the media
paths a player opens itself also take `?token=` or a signed URL (`?exp=&sig=`). Every error is
`{"error": "…"}` with its status. Queries and bodies are checked before a route runs: a wrong one
is a 400 naming each field (never echoing a value).
"""


def documents() -> dict[str, dict[str, Any]]:
    """Each server's OpenAPI document, built from its routes without serving (the object the routes
    act on is only referred to, never called)."""
    unbound: Any = SimpleNamespace(embedded=None)
    management = build_app(unbound)
    management.add_routes(gateway_routes(unbound))
    return {
        "Recorder": openapi(
            build_api(unbound), "Gapless recorder", "Live, playback, export, fragments and backfill of one recorder."
        ),
        "Management server (with the embedded coordinator and gateway)": openapi(
            management, "Gapless management server", DESCRIPTION
        ),
        "Camera simulator (fault injection)": openapi(
            build_control_app({}), "Gapless camera simulator", "Fault injection for the simulated cameras."
        ),
    }


def _type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    if "anyOf" in schema:
        return " or ".join(_type(option) for option in schema["anyOf"])
    if "enum" in schema:
        return " \\| ".join(f"`{value}`" for value in schema["enum"])
    if "const" in schema:
        return f"`{schema['const']}`"
    kind = schema.get("type", "any")
    if kind == "array":
        return f"list of {_type(schema.get('items', {}))}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"map to {_type(schema['additionalProperties'])}"
    if kind == "null":
        return "null"
    return str(kind)


def _cell(text: object) -> str:
    return str(text or "").replace("|", "\\|").replace("\n", " ")


def _operation(method: str, path: str, op: dict[str, Any]) -> list[str]:
    lines = [f"#### `{method.upper()} {path}`", "", op["summary"], ""]
    parameters = [p for p in op.get("parameters", []) if p["in"] == "query"]
    if parameters:
        lines += ["| query | type | required | meaning |", "| --- | --- | --- | --- |"]
        for p in parameters:
            required = "yes" if p["required"] else "no"
            lines.append(f"| `{p['name']}` | {_type(p['schema'])} | {required} | {_cell(p.get('description'))} |")
        lines.append("")
    body = op.get("requestBody")
    if body:
        lines.append(f"Body: {_type(body['content']['application/json']['schema'])}")
        lines.append("")
    for status, answer in op["responses"].items():
        if status.startswith(("4", "5")):
            continue
        content = answer.get("content", {})
        if "application/json" in content:
            lines.append(f"Answer {status}: {_type(content['application/json']['schema'])}")
        elif content:
            lines.append(f"Answer {status}: `{next(iter(content))}`")
        else:
            lines.append(f"Answer {status}")
    return [*lines, ""]


def _model(name: str, schema: dict[str, Any]) -> list[str]:
    lines = [f"#### {name}", ""]
    if schema.get("description"):
        lines += [schema["description"].strip().replace("\n", " "), ""]
    properties = schema.get("properties", {})
    if properties:
        required = set(schema.get("required", []))
        lines += ["| field | type | required | meaning |", "| --- | --- | --- | --- |"]
        for field, prop in properties.items():
            need = "yes" if field in required else "no"
            lines.append(f"| `{field}` | {_type(prop)} | {need} | {_cell(prop.get('description'))} |")
        lines.append("")
    return lines


def reference() -> str:
    lines = [INTRO]
    for title, document in documents().items():
        lines += [f"## {title}", "", document["info"]["description"], ""]
        for path, operations in document["paths"].items():
            for method, op in operations.items():
                lines += _operation(method, path, op)
        lines += ["### Bodies", ""]
        for name, schema in sorted(document["components"]["schemas"].items()):
            lines += _model(name, schema)
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(reference(), end="")
