"""Every server describes itself: an OpenAPI 3.1 document generated from its own route table and
the pydantic models its routes declare, valid, and naming every route with a summary."""

from __future__ import annotations

import pytest
from openapi_spec_validator import validate
from test_fuzz import management_routes, recorder_routes, sim_routes

from gapless.common.openapi import openapi


def apps():
    from types import SimpleNamespace

    from gapless.gateway.gateway import gateway_routes
    from gapless.management.server import build_app
    from gapless.recorder.api import build_api
    from gapless.sim.control import build_control_app

    recorder = build_api(SimpleNamespace(config=SimpleNamespace(recorder=SimpleNamespace(api_token="x" * 16))))
    management = build_app(SimpleNamespace(embedded=None, config=None, document=None, admin_token="x" * 16))
    management.add_routes(gateway_routes(None))
    return {
        "recorder": (recorder, recorder_routes()),
        "management": (management, management_routes()),
        "camera-sim": (build_control_app({}), sim_routes()),
    }


@pytest.mark.parametrize("name", ["recorder", "management", "camera-sim"])
def test_the_document_is_valid_and_names_every_route(name):
    app, routes = apps()[name]
    document = openapi(app, name, "test")
    validate(document)
    for method, path, _pattern in routes:
        if method in ("HEAD", "*"):
            continue
        operation = document["paths"].get(path, {}).get(method.lower())
        assert operation is not None, f"{method} {path} is not in the document"
        assert " " in operation["summary"], f"{method} {path} has no summary (decorate it with @documented)"
    assert "/api/v1/openapi.json" in document["paths"]


def test_bodies_are_the_models_the_code_uses():
    document = openapi(apps()["recorder"][0], "recorder", "test")
    fragments = document["paths"]["/api/v1/cameras/{camera}/fragments"]["get"]
    schema = fragments["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/FragmentList"}
    listed = document["components"]["schemas"]["FragmentInfo"]["properties"]
    assert {"start_us", "end_us", "sha256", "init", "keyframe_first"} <= set(listed)
    backfill = document["paths"]["/api/v1/backfill"]["post"]["requestBody"]["content"]["application/json"]
    assert backfill["schema"] == {"$ref": "#/components/schemas/BackfillRequest"}
