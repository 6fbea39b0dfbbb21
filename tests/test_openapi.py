"""Every server describes itself: an OpenAPI 3.1 document generated from its own route table and
the pydantic models its routes declare, valid, and naming every route with a summary."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from openapi_spec_validator import validate
from pydantic import Field
from test_fuzz import management_routes, recorder_routes, sim_routes

from gapless.api_reference import documents, reference
from gapless.common.http import application
from gapless.common.openapi import Body, Query, documented

DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"
SERVERS = {"recorder": "Recorder", "management": "Management server", "camera-sim": "Camera simulator"}


def document_of(name: str) -> dict:
    return next(doc for title, doc in documents().items() if title.startswith(SERVERS[name]))


def test_the_api_reference_matches_the_servers():
    assert DOC.read_text() == reference(), "regenerate: python -m gapless.api_reference > docs/api.md"


@pytest.mark.parametrize("name", list(SERVERS))
def test_the_document_is_valid_and_names_every_route(name):
    routes = {"recorder": recorder_routes, "management": management_routes, "camera-sim": sim_routes}[name]()
    document = document_of(name)
    validate(document)
    for method, path, _pattern in routes:
        if method in ("HEAD", "*"):
            continue
        operation = document["paths"].get(path, {}).get(method.lower())
        assert operation is not None, f"{method} {path} is not in the document"
        assert " " in operation["summary"], f"{method} {path} has no summary (decorate it with @documented)"
    assert "/api/v1/openapi.json" in document["paths"]


def test_bodies_are_the_models_the_code_uses():
    document = document_of("recorder")
    fragments = document["paths"]["/api/v1/cameras/{camera}/fragments"]["get"]
    schema = fragments["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/FragmentList"}
    listed = document["components"]["schemas"]["FragmentInfo"]["properties"]
    assert {"start_us", "end_us", "sha256", "init", "keyframe_first"} <= set(listed)
    backfill = document["paths"]["/api/v1/backfill"]["post"]["requestBody"]["content"]["application/json"]
    assert backfill["schema"] == {"$ref": "#/components/schemas/BackfillRequest"}


class Window(Query):
    seconds: float = Field(ge=0, le=60)
    """How long."""


class Order(Body):
    camera: str
    count: int = 1


def test_the_route_layer_checks_queries_and_bodies_before_the_handler():
    """A wrong query or body is a 400 naming the field (never its value); the handler gets models."""
    seen: list[tuple[Window, Order]] = []

    @documented("test", query=Window, body=Order)
    async def handler(_request: web.Request, query: Window, body: Order) -> web.Response:
        seen.append((query, body))
        return web.json_response({"ok": True})

    async def scenario() -> list[tuple[int, str]]:
        app = application()
        app.router.add_post("/x", handler)
        async with (
            TestServer(app, host="127.0.0.1") as server,
            httpx.AsyncClient(base_url=str(server.make_url(""))) as c,
        ):
            answers = []
            for params, body in [
                ({"seconds": "5", "token": "ignored"}, {"camera": "cam0", "count": 2}),  # valid
                ({"seconds": "secret-value"}, {"camera": "cam0"}),
                ({"seconds": "nan"}, {"camera": "cam0"}),
                ({"seconds": "61"}, {"camera": "cam0"}),
                ({}, {"camera": "cam0"}),
                ({"seconds": "1"}, {"camera": "cam0", "count": True}),  # strict: true is not 1
                ({"seconds": "1"}, {"camera": "cam0", "cuont": 3}),  # a misspelt field
                ({"seconds": "1"}, ["cam0"]),
            ]:
                reply = await c.post("/x", params=params, json=body)
                answers.append((reply.status_code, reply.text))
            return answers

    answers = asyncio.run(scenario())
    assert answers[0][0] == 200 and len(seen) == 1
    query, body = seen[0]
    assert query.seconds == 5.0 and body.camera == "cam0" and body.count == 2
    expected = ["query: seconds", "seconds", "seconds", "query: seconds", "count", "cuont", "body"]
    for (status, text), field in zip(answers[1:], expected, strict=True):
        assert status == 400 and field in text and text.startswith('{"error": "invalid'), text
    assert "secret-value" not in answers[1][1]
