"""OpenAPI 3.1 documents generated from the servers' own route tables and the pydantic models their
routes declare (`documented`), served by each server at `/api/v1/openapi.json`: a route added
later appears without anyone remembering to, and its bodies are the models the code uses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from gapless import __version__

OPENAPI_PATH = "/api/v1/openapi.json"
JSON = "application/json"


@dataclass(frozen=True)
class Operation:
    summary: str
    response: type[BaseModel] | None = None  # the JSON body of a success
    media_type: str = JSON  # of a success that is not JSON (video/mp4, a playlist …)
    body: type[BaseModel] | None = None  # the JSON request body
    query: dict[str, str] = field(default_factory=dict)  # query parameter → meaning
    status: int = 200


def documented(
    summary: str,
    response: type[BaseModel] | None = None,
    *,
    media_type: str = JSON,
    body: type[BaseModel] | None = None,
    query: dict[str, str] | None = None,
    status: int = 200,
) -> Callable:
    """Describe a route handler for the OpenAPI document."""

    def mark(handler: Callable) -> Callable:
        handler.gapless_operation = Operation(summary, response, media_type, body, query or {}, status)  # type: ignore[attr-defined]
        return handler

    return mark


class ErrorBody(BaseModel):
    """Every error: `{"error": "…"}` with a 4xx or 5xx status."""

    error: str


def openapi(app: web.Application, title: str, description: str) -> dict[str, Any]:
    operations: list[tuple[str, str, list[str], Operation]] = []
    for route in app.router.routes():
        if route.method in ("HEAD", "*"):
            continue
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("formatter") or info.get("path") or ""
        pattern = info.get("pattern")
        names = list(pattern.groupindex) if pattern is not None else []
        handler = route.handler
        operation = getattr(handler, "gapless_operation", None) or Operation(
            ((handler.__doc__ or handler.__name__).strip().splitlines() or [handler.__name__])[0]
        )
        operations.append((route.method.lower(), path, names, operation))
    models = {m for *_rest, op in operations for m in (op.response, op.body) if m is not None} | {ErrorBody}
    refs, schema = models_json_schema(
        [(model, "serialization") for model in sorted(models, key=lambda m: m.__name__)],
        ref_template="#/components/schemas/{model}",
    )
    paths: dict[str, dict] = {}
    for method, path, names, op in sorted(operations, key=lambda o: (o[1], o[0])):
        parameters = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names]
        parameters += [
            {"name": n, "in": "query", "required": False, "description": meaning, "schema": {"type": "string"}}
            for n, meaning in op.query.items()
        ]
        success: dict[str, Any] = {"description": "success"}
        if op.response is not None:
            success["content"] = {JSON: {"schema": refs[(op.response, "serialization")]}}
        elif op.media_type != JSON:
            success["content"] = {op.media_type: {"schema": {"type": "string", "format": "binary"}}}
        error = {
            "description": "the request was refused or failed",
            "content": {JSON: {"schema": refs[(ErrorBody, "serialization")]}},
        }
        entry: dict[str, Any] = {
            "summary": op.summary,
            "operationId": f"{method}_{path}".replace("/", "_").replace("{", "").replace("}", "").replace(".", "_"),
            "responses": {str(op.status): success, "4XX": error, "5XX": error},
        }
        if parameters:
            entry["parameters"] = parameters
        if op.body is not None:
            entry["requestBody"] = {"required": True, "content": {JSON: {"schema": refs[(op.body, "serialization")]}}}
        paths.setdefault(path, {})[method] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": __version__, "description": description},
        "paths": paths,
        "components": {
            "schemas": schema.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


def openapi_route(title: str, description: str) -> web.RouteDef:
    """`GET /api/v1/openapi.json` for the application it is added to."""

    @documented("This document: the server's routes and bodies (OpenAPI 3.1)")
    async def document(request: web.Request) -> web.Response:
        return web.json_response(openapi(request.app, title, description))

    return web.get(OPENAPI_PATH, document)
