"""Typed routes and the OpenAPI 3.1 documents generated from them.

A handler declares its query and JSON body as pydantic models (`documented(query=…, body=…)`);
the route layer validates them before the handler runs (a 400 naming each field, never echoing a
value) and hands the handler the parsed models. Each server serves, at `/api/v1/openapi.json`, a
document generated from its own route table and those same models: a route added later appears
without anyone remembering to, and what it documents is what it checks."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.json_schema import models_json_schema

from gapless import __version__
from gapless.common.docstrings import FieldDocs
from gapless.common.http import error, json_body

OPENAPI_PATH = "/api/v1/openapi.json"
JSON = "application/json"


class Query(BaseModel):
    """A route's query parameters, converted from their text and checked. Parameters a route does
    not declare are ignored: `token`, `exp` and `sig` belong to authentication, not to the route."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False, defer_build=True)


class Reply(BaseModel):
    """A route's JSON answer; each field's docstring is its documented meaning (docs/api.md)."""

    model_config = ConfigDict(defer_build=True)


class Body(BaseModel):
    """A route's JSON request body: unknown fields are refused (a misspelt one is not ignored), and
    types are strict (true is not 1, "5" is not 5)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, defer_build=True)


@dataclass(frozen=True)
class Operation:
    summary: str
    response: type[BaseModel] | None = None  # the JSON body of a success
    media_type: str = JSON  # of a success that is not JSON (video/mp4, a playlist …)
    body: type[BaseModel] | None = None  # the JSON request body
    query: type[Query] | None = None
    status: int = 200


Parsed = TypeVar("Parsed", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TypedHandler = Callable[..., Awaitable[web.StreamResponse]]  # (request, query=…, body=…)


def parsed(model: type[Parsed], data: object, what: str) -> Parsed:
    """`data` as `model`, or a 400 naming each wrong field and what is wrong with it (never its
    value: a body may carry a secret)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or what}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors(include_input=False, include_url=False)
        )
        raise error(web.HTTPBadRequest, f"invalid {what}: {problems}") from None


def documented(
    summary: str,
    response: type[BaseModel] | None = None,
    *,
    media_type: str = JSON,
    body: type[BaseModel] | None = None,
    query: type[Query] | None = None,
    status: int = 200,
    parses_body: bool = True,
) -> Callable[[TypedHandler], Handler]:
    """Declare a route: its summary and answer for the OpenAPI document, and the query and body
    models the route layer validates and passes to the handler as `query=` and `body=`.
    `parses_body=False` documents a body the handler reads itself (the management server restores
    `<redacted>` secrets before validating a configuration)."""
    operation = Operation(summary, response, media_type, body, query, status)

    def mark(
        handler: Callable[..., Awaitable[web.StreamResponse]],
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        @functools.wraps(handler)
        async def typed(request: web.Request) -> web.StreamResponse:
            arguments: dict[str, BaseModel] = {}
            if query is not None:
                arguments["query"] = parsed(query, dict(request.query), "query")
            if body is not None and parses_body:
                arguments["body"] = parsed(body, await json_body(request), "body")
            return await handler(request, **arguments)

        typed.gapless_operation = operation  # type: ignore[attr-defined]
        return typed

    return mark


def _query_parameters(query: type[Query]) -> list[dict[str, Any]]:
    schema = query.model_json_schema(mode="validation", schema_generator=FieldDocs)
    required = set(schema.get("required", []))
    parameters = []
    for name, prop in schema.get("properties", {}).items():
        prop = dict(prop)
        description = prop.pop("description", None)
        prop.pop("title", None)
        parameter: dict[str, Any] = {"name": name, "in": "query", "required": name in required, "schema": prop}
        if description:
            parameter["description"] = description
        parameters.append(parameter)
    return parameters


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
    responses = {op.response for *_rest, op in operations if op.response is not None} | {ErrorBody}
    bodies = {op.body for *_rest, op in operations if op.body is not None}
    refs, schema = models_json_schema(
        [(model, "serialization") for model in sorted(responses, key=lambda m: m.__name__)]
        + [(model, "validation") for model in sorted(bodies, key=lambda m: m.__name__)],
        ref_template="#/components/schemas/{model}",
        schema_generator=FieldDocs,
    )
    paths: dict[str, dict] = {}
    for method, path, names, op in sorted(operations, key=lambda o: (o[1], o[0])):
        parameters = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names]
        if op.query is not None:
            parameters += _query_parameters(op.query)
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
            entry["requestBody"] = {"required": True, "content": {JSON: {"schema": refs[(op.body, "validation")]}}}
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
