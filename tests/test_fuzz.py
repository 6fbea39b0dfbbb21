"""Fuzz every HTTP route of every Gapless server (recorder, management with its coordinator and
gateway, camera simulator) with hypothesis: any path parameter, query, header and body, absurd
numbers, bytes outside ASCII, deeply nested JSON. No request may get a 5xx or hang, no server may
log a traceback, and the recorder loses no frame meanwhile.

The routes come from the servers' own route tables (the same factories the processes run), so a
route added later is fuzzed without anyone remembering to."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import httpx
import pytest
import yaml
from conftest import GAPLESS, TOKEN, Proc, Sim, audit_clean, free_port, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate

from gapless.gateway.gateway import gateway_routes
from gapless.management.server import build_app
from gapless.recorder.api import build_api
from gapless.sim.control import build_control_app

EXAMPLES = 1000  # per server
#: Answers that are open streams (Server-Sent Events): their status and headers are the answer.
STREAMS = "text/event-stream"
REQUEST_TIMEOUT_S = 40.0  # longer than any bounded wait a route may do (a coordinator watch: 30 s)
RECORDER_CREDENTIAL, VIEWER = "fuzz-recorder-credential-1", "fuzz-viewer-credential-1"

NASTY = [
    "", "0", "-1", "inf", "-inf", "NaN", "1e308", "-1e308", "1e-320", "99999999999999999999999999",
    "2026-11-25T10:00:00Z", "9999-12-31T23:59:59Z", "0001-01-01T00:00:00", "1970-01-01", "\uff11\uff12\uff13", "\x00",
    "é", "../../etc/passwd", "%00", "a" * 3000, "true", "null", "[]", "{}", "progressive", "fragmented",
    "cam", "main", "rec-a", "lobby",
]  # fmt: skip
QUERY_KEYS = [
    "start", "end", "exp", "sig", "token", "layout", "since_us", "state", "seconds", "client", "every",
    "packets", "to", "id",
]  # fmt: skip
BODY_KEYS = [
    "key", "prefix", "value", "lease", "ttl", "id", "mod_revision", "after_revision", "timeout", "camera",
    "source", "start", "end", "source_camera", "source_token", "holder", "fence", "to", "config",
    "recorders", "clusters", "credentials", "coordinator",
]  # fmt: skip

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.sampled_from(NASTY)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
keyed_bodies = st.dictionaries(st.sampled_from(BODY_KEYS), json_values, max_size=6)
raw_bodies = st.sampled_from(
    [b"[" * 100_000, b"{" * 50_000, b'{"a":' * 20_000, b"\xff\xfe\x00", b"{", b"", b"null", b"x" * (2 << 20)]
)
text_values = st.sampled_from(NASTY) | st.text(max_size=40) | st.integers(min_value=-(2**70), max_value=2**70).map(str)


Route = tuple[str, str, "re.Pattern | None"]  # method, path with {name} parameters, the path's regex


#: Any bytes HTTP lets a header value carry (bytes outside ASCII included; the client library
#: refuses to send control characters and surrounding white space at all).
header_bytes = st.binary(max_size=60).map(lambda raw: bytes(b if b > 0x20 and b != 0x7F else 0x41 for b in raw))


def route_table(app) -> list[Route]:
    table = []
    for route in app.router.routes():
        info = route.resource.get_info()
        table.append((route.method, info.get("formatter", info.get("path")), info.get("pattern")))
    return sorted(table, key=lambda r: (r[0], r[1]))


def recorder_routes() -> list[Route]:
    stub = SimpleNamespace(config=SimpleNamespace(recorder=SimpleNamespace(api_token=TOKEN)))
    return route_table(build_api(stub))


def management_routes() -> list[Route]:
    app = build_app(SimpleNamespace(embedded=None, config=None, document=None))
    app.add_routes(gateway_routes(None))
    return route_table(app)


def sim_routes() -> list[Route]:
    return route_table(build_control_app({}))


def draw_path(data, formatter: str, pattern: re.Pattern | None, known: list[str]) -> str:
    """Each parameter: a known id, any text, or (half the time) a value the route's regex accepts."""
    if pattern is None:
        return formatter
    valid = pattern.fullmatch(data.draw(st.from_regex(pattern, fullmatch=True)))
    assert valid is not None
    values = {}
    for name in pattern.groupindex:
        drawn = data.draw(st.sampled_from([valid.group(name)]) | st.sampled_from(known) | text_values)
        values[name] = quote(drawn, safe="")
    return formatter.format_map(values)


def fuzz(base_url: str, routes: list[Route], tokens: list[str], known: list[str]) -> int:
    """Send EXAMPLES fuzzed requests; fail on any 5xx or a request that does not end. Returns how
    many answers were 2xx (a fuzz that never gets past the front door tests little)."""
    client = httpx.Client(base_url=base_url, timeout=REQUEST_TIMEOUT_S)
    successes = 0
    valid = st.sampled_from([f"Bearer {t}".encode() for t in tokens] or [b"Bearer"])
    invalid = header_bytes.map(lambda b: b"Bearer " + b if b else b"Bearer") | header_bytes | st.none()

    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def one_request(data) -> None:
        nonlocal successes
        method, formatter, pattern = data.draw(st.sampled_from(routes))
        path = draw_path(data, formatter, pattern, known)
        params = data.draw(st.dictionaries(st.sampled_from(QUERY_KEYS) | st.text(max_size=8), text_values, max_size=4))
        headers = {}
        # Mostly a valid credential: what lies behind authentication is where the handlers are.
        auth = data.draw(valid if data.draw(st.integers(0, 9)) < 7 else invalid)
        if auth is not None:
            headers["Authorization"] = auth
        if data.draw(st.booleans()):
            headers["If-Match"] = data.draw(header_bytes)
        body = b""
        if method in ("POST", "PUT", "DELETE"):
            choice = data.draw(st.sampled_from(["keyed", "keyed", "any", "raw", "raw"]))
            if choice == "raw":
                body = data.draw(raw_bodies)
            else:
                value = data.draw(keyed_bodies if choice == "keyed" else json_values)
                if (
                    path.endswith("/watch")
                    and isinstance(value, dict)
                    and isinstance(value.get("timeout"), int | float)
                ):
                    value["timeout"] = min(value["timeout"], 2)  # a valid watch waits its timeout out
                body = json.dumps(value).encode()
        try:
            with client.stream(method, path, params=params, headers=headers, content=body) as reply:
                if reply.status_code >= 300 or not reply.headers.get("content-type", "").startswith(STREAMS):
                    reply.read()  # an event stream stays open by design: its answer is its status
        except httpx.TimeoutException:
            raise AssertionError(f"{method} {path} {params} did not end within {REQUEST_TIMEOUT_S:.0f} s") from None
        assert reply.status_code < 500, (
            f"{method} {path} {params} {body[:200]!r} -> {reply.status_code} {reply.text[:300]}"
        )
        successes += reply.status_code < 300

    try:
        one_request()
    finally:
        client.close()
    return successes


def conforms(document_url: str, headers: dict) -> None:
    """schemathesis (a fuzzer we did not write) against a served document: no 5xx, and every
    answer conforms to the schema the document gives it."""
    args = [str(Path(sys.executable).parent / "schemathesis"), "run", document_url, "-n", "20"]
    args += ["--checks", "not_a_server_error,response_schema_conformance"]
    # A valid watch waits its timeout (up to 30 s) out when nothing changes: hundreds of those would
    # take the suite's time, and our own fuzz above covers the route (with the wait capped).
    args += ["--exclude-path", "/coordinator/v1/watch"]
    # The event stream stays open by design (our fuzz above reads its status and closes it).
    args += ["--exclude-path", "/api/v1/events/stream"]
    # A schema-valid configuration names recorders and cameras at any address, and identifying
    # cameras connects to them: traffic must stay on loopback. Both routes are in our fuzz above
    # (with bodies that are not valid configurations), and test_cluster / test_identity store real ones.
    args += ["--exclude-method", "PUT", "--exclude-path", "/api/v1/cameras/identify"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    run = subprocess.run(args, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, f"schemathesis on {document_url}:\n{run.stdout[-4000:]}"


def no_tracebacks(*logs) -> None:
    for log in logs:
        text = log.read_text(errors="replace")
        assert "Traceback" not in text and "Error handling request" not in text, f"{log.name}:\n{text[-3000:]}"


def start_management(tmp_path, sim, rec) -> tuple[Proc, str]:
    """A management server (with its coordinator and gateway) over the recorder and one that is down."""
    port = free_port()
    management_config = {
        "management": {"listen": f"127.0.0.1:{port}", "data": str(tmp_path / "mgmt"), "api_token": TOKEN},
        "recorders": [
            {"id": "rec-a", "url": rec.url, "token": TOKEN},
            {"id": "rec-b", "url": f"http://127.0.0.1:{free_port()}", "token": TOKEN},
        ],
        "clusters": [{"id": "main", "members": ["rec-a", "rec-b"], "cameras": [{"id": "cam", "url": sim.url("cam0")}]}],
        "credentials": [
            {"id": "rec-a-key", "role": "recorder", "recorder": "rec-a", "token": RECORDER_CREDENTIAL},
            {"id": "viewers", "role": "viewer", "token": VIEWER},
        ],
    }
    (tmp_path / "management.yaml").write_text(yaml.safe_dump(management_config))
    management = Proc([*GAPLESS, "management", "--config", str(tmp_path / "management.yaml")], tmp_path / "m.log")
    management.start()
    url = f"http://127.0.0.1:{port}"
    admin = {"Authorization": f"Bearer {TOKEN}"}
    wait_for(lambda: httpx.get(f"{url}/api/v1/config", headers=admin).status_code == 200, 60, "management")
    return management, url


KNOWN = ["cam", "main", "rec-a", "rec-b", "cam0", "1", "0"]


def served_document_holds(base: str, headers: dict) -> None:
    """The server's OpenAPI document validates, and schemathesis finds nothing against it."""
    served = httpx.get(f"{base}/api/v1/openapi.json", headers=headers, timeout=10)
    assert served.status_code == 200, (base, served.text)
    validate(served.json())
    conforms(f"{base}/api/v1/openapi.json", headers)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("server", ["recorder", "management", "camera-sim"])
def test_fuzzing_every_route_finds_no_server_error_and_no_hang(server, tmp_path, make_sim, make_recorder):
    """One server per case (they run in parallel). The recorder is fuzzed directly and through the
    management server's gateway and coordinator, and must record every frame meanwhile; the
    simulator fuzzed is not the recorder's camera (fuzzing its control stops cameras)."""
    admin = {"Authorization": f"Bearer {TOKEN}"}  # a fuzzed PUT may have replaced the stored credentials
    if server == "camera-sim":
        (tmp_path / "fuzzed-sim").mkdir()
        fuzzed_sim = Sim(tmp_path / "fuzzed-sim")
        try:
            base = f"http://127.0.0.1:{fuzzed_sim.control_port}"
            assert fuzz(base, sim_routes(), [], KNOWN) > 0
            served_document_holds(base, {})
            assert fuzzed_sim.proc.popen.poll() is None, "camera-sim died under the fuzz"
        finally:
            fuzzed_sim.close()
        no_tracebacks(tmp_path / "fuzzed-sim" / "sim.log")
        return

    sim = make_sim(cameras=1, special=("mpeg4", "garbage"))
    start = time.time()
    rec = make_recorder("rec-a", [{"id": "cam", "url": sim.url("cam0")}]).start()
    rec.wait_fragments("cam", 2)
    management = None
    try:
        if server == "recorder":
            base, logs = rec.url, [rec.log]
            assert fuzz(base, recorder_routes(), [TOKEN], KNOWN) > 0
        else:
            management, base = start_management(tmp_path, sim, rec)
            logs = [rec.log, tmp_path / "m.log"]
            assert fuzz(base, management_routes(), [TOKEN, RECORDER_CREDENTIAL, VIEWER], KNOWN) > 0
        served_document_holds(base, admin)
        for proc in (rec.proc, management):
            assert proc is None or proc.popen.poll() is None, f"{proc.args[3]} died under the fuzz"
        assert rec.health()["cameras"]["cam"]["state"] == "recording"
        audit_clean(rec, "cam", start, time.time() - 3)
        no_tracebacks(*logs)
    finally:
        if management is not None:
            management.stop()
