"""The `gapless` command line."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

from gapless import __version__

if TYPE_CHECKING:
    from gapless.client import Federation, ManagementClient
    from gapless.config.cluster import CameraRef


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,  # a library that logged while being imported must not leave its own format
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("libav").setLevel(logging.ERROR)
    logging.getLogger("httpx").setLevel(logging.WARNING)


@click.group()
@click.version_option(__version__, prog_name="gapless")
def main() -> None:
    """Gapless: zero-loss failover for video-surveillance recording."""
    # Everything Gapless writes (indexes holding tokens, cached configuration with camera
    # passwords, recordings) is for the service's own user: files 0600, directories 0700.
    os.umask(0o077)
    # One socket and a few files per camera and client: use all the open files the system allows.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@main.command("camera-sim")
@click.option("--cameras", default=1, show_default=True, type=click.IntRange(0, 512), help="H.264 cameras /cam0..")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8554, show_default=True, type=click.IntRange(0, 65535), help="RTSP port")
@click.option("--control-port", default=8555, show_default=True, type=click.IntRange(0, 65535))
@click.option("--width", default=1280, show_default=True, type=click.IntRange(16, 7680))
@click.option("--height", default=720, show_default=True, type=click.IntRange(16, 4320))
@click.option("--fps", default=25, show_default=True, type=click.IntRange(1, 120))
@click.option("--gop", default=50, show_default=True, type=click.IntRange(1, 600), help="frames per GOP")
@click.option("--bitrate", default=2000, show_default=True, type=click.IntRange(50, 100_000), help="kb/s")
@click.option(
    "--sr-interval",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0, 600),
    help="seconds between RTCP sender reports (0: none, as some cameras do)",
)
@click.option(
    "--auth",
    metavar="SCHEME:USER:PASSWORD",
    help="demand credentials; SCHEME is basic, digest, digest-qop or both (Digest with qop and Basic offered)",
)
@click.option(
    "--session-timeout",
    default=60,
    show_default=True,
    type=click.IntRange(2, 3600),
    help="seconds announced in SETUP; sessions not kept alive that long are ended",
)
@click.option("--clock-error", default=0.0, type=float, help="seconds the cameras' clocks are off (e.g. -1.7e9: 1970)")
@click.option("--bframes", default=0, type=click.IntRange(0, 3), help="B-frames between references (main profile)")
@click.option("--codec", default="h264", show_default=True, type=click.Choice(["h264", "h265"]))
@click.option(
    "--audio",
    type=click.Choice(["aac", "pcmu", "pcma"]),
    help="every camera also sends audio: AAC 16 kHz, or G.711 (PCMU/PCMA) 8 kHz",
)
@click.option("--audio-first", is_flag=True, help="list the audio track before the video in the SDP")
@click.option(
    "--special",
    multiple=True,
    type=click.Choice(["garbage", "mpeg4"]),
    help="add a faulty camera at /garbage (random payload) or /mpeg4 (unsupported codec)",
)
@click.option(
    "--substream",
    metavar="WxH@FPS",
    help="also serve each camera's sub-stream at /camN-sub (own resolution and frame rate, same GOP seconds)",
)
@click.option(
    "--onvif-port",
    default=0,
    type=click.IntRange(0, 65535),
    help="serve an ONVIF device per camera (or per --onvif-devices entry): device k on this port + k",
)
@click.option(
    "--onvif-devices",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML list of devices: endpoint, manufacturer, model, firmware, serial, hardware_id, mac, channels",
)
@click.option("-v", "--verbose", is_flag=True)
def camera_sim(
    cameras,
    host,
    port,
    control_port,
    width,
    height,
    fps,
    gop,
    bitrate,
    sr_interval,
    auth,
    session_timeout,
    clock_error,
    bframes,
    codec,
    audio,
    audio_first,
    special,
    substream,
    onvif_port,
    onvif_devices,
    verbose,
) -> None:
    """Simulated RTSP/H.264 cameras with per-frame SEI stamps and fault injection."""
    import re

    from gapless.sim.encoder import Profile
    from gapless.sim.rtsp import AUTH_SCHEMES, Auth
    from gapless.sim.server import SimSettings, serve

    _setup_logging(verbose)
    credentials = None
    if auth:
        scheme, _, rest = auth.partition(":")
        user, _, password = rest.partition(":")
        if scheme not in AUTH_SCHEMES or not user:
            raise click.BadParameter(f"use SCHEME:USER:PASSWORD, SCHEME one of {', '.join(AUTH_SCHEMES)}")
        credentials = Auth(scheme, user, password)
    if codec == "h265" and bframes:
        raise click.BadParameter("B-frames are simulated for H.264 only", param_hint="--bframes")
    profile = Profile(width, height, fps, gop, bitrate * 1000, codec, bframes)
    sub_profile = None
    if substream:
        match = re.fullmatch(r"(\d+)x(\d+)@(\d+)", substream)
        if not match or not all(0 < int(v) <= 7680 for v in match.groups()):
            raise click.BadParameter("use WxH@FPS, e.g. 320x180@10", param_hint="--substream")
        sub_w, sub_h, sub_fps = (int(v) for v in match.groups())
        sub_profile = Profile(
            sub_w, sub_h, sub_fps, max(1, round(gop * sub_fps / fps)), max(50_000, bitrate * 250), codec
        )
    settings = SimSettings(
        cameras,
        host,
        port,
        control_port,
        profile,
        sr_interval,
        list(special),
        sub_profile,
        credentials,
        session_timeout,
        clock_error,
        audio,
        audio_first,
        onvif_port,
        onvif_devices,
    )
    asyncio.run(serve(settings))


@main.command("recorder")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="YAML file")
@click.option("--reindex", is_flag=True, help="rebuild the index from the chunk files, then exit")
@click.option("-v", "--verbose", is_flag=True)
def recorder(config_path: str, reindex: bool, verbose: bool) -> None:
    """Record cameras, keep the archive, serve the API."""
    from pathlib import Path

    from gapless.common.config import ConfigError
    from gapless.config.recorder import load_recorder_config
    from gapless.recorder.service import run_recorder

    _setup_logging(verbose)
    try:
        config = load_recorder_config(Path(config_path))
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    from gapless.storage.store import FragmentStore, StorageInUse

    try:
        if reindex:
            report = FragmentStore(config.recorder.storage, config.recorder.id).reindex()
            click.echo(f"reindexed {config.recorder.storage}: {report}")
            return
        asyncio.run(run_recorder(config))
    except StorageInUse as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


@main.command("management")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="YAML file")
@click.option("-v", "--verbose", is_flag=True)
def management_cmd(config_path: str, verbose: bool) -> None:
    """Configuration store and API, embedded coordinator, and a gateway on the same port."""
    from pathlib import Path

    from gapless.common.config import ConfigError
    from gapless.config.management import load_management_config
    from gapless.gateway.gateway import embedded_gateway
    from gapless.management.server import run_management

    _setup_logging(verbose)
    try:
        config = load_management_config(Path(config_path))
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    asyncio.run(run_management(config, embedded_gateway))


@main.command("gateway")
@click.option(
    "--management",
    "management_urls",
    required=True,
    multiple=True,
    help="a management server URL; repeat for several (their cameras listed together, one id each)",
)
@click.option(
    "--token",
    "tokens",
    envvar="GAPLESS_GATEWAY_TOKEN",
    required=True,
    multiple=True,
    help="a credential with the role gateway (or GAPLESS_GATEWAY_TOKEN); repeat, in --management's order, when "
    "they differ",
)
@click.option("--listen", default="127.0.0.1:7080", show_default=True, help="host:port")
@click.option("-v", "--verbose", is_flag=True)
def gateway_cmd(management_urls: tuple[str, ...], tokens: tuple[str, ...], listen: str, verbose: bool) -> None:
    """One stable URL per camera: routed to the cluster member that holds the token, or to the side
    of a pair whose feed records (stateless; run as many as you like)."""
    from gapless.common.config import listen_address
    from gapless.gateway.gateway import run_gateway

    _setup_logging(verbose)
    try:
        listen_address(listen)
    except ValueError as exc:
        click.echo(f"error: --listen: {exc}", err=True)
        sys.exit(2)
    if len(tokens) not in (1, len(management_urls)):
        raise click.UsageError(f"give one --token, or one per --management ({len(management_urls)})")
    servers = [(url, tokens[0] if len(tokens) == 1 else tokens[i]) for i, url in enumerate(management_urls)]
    host, _, port = listen.rpartition(":")
    asyncio.run(run_gateway(servers, host.strip("[]"), int(port)))


@main.group("cluster")
def cluster_cmd() -> None:
    """Clusters: state and switchover."""


@cluster_cmd.command("switchover")
@click.option("--management", "management_url", required=True, help="management server URL")
@click.option("--token", envvar="GAPLESS_API_TOKEN", required=True, help="management API token (or GAPLESS_API_TOKEN)")
@click.option("--cluster", "cluster_id", required=True)
@click.option("--to", "target", help="member to hand the token to (default: the other one)")
def switchover_cmd(management_url: str, token: str, cluster_id: str, target: str | None) -> None:
    """Hand the representation token to the other member (it becomes the preferred one)."""
    import httpx

    body = {"to": target} if target else {}
    try:
        reply = httpx.post(
            f"{management_url.rstrip('/')}/api/v1/clusters/{cluster_id}/switchover",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
    except httpx.HTTPError as exc:
        click.echo(f"error: {management_url}: {exc}", err=True)
        sys.exit(1)
    if reply.status_code != 200:
        click.echo(f"error: {reply.json().get('error', reply.text)}", err=True)
        sys.exit(1)
    answer = reply.json()
    click.echo(f"switchover of {answer['cluster']} requested: {answer['from']} -> {answer['to']}")


@main.group("cameras")
def cameras_cmd() -> None:
    """Cameras: what they are (ONVIF identity)."""


@cameras_cmd.command("identify")
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False, exists=True, path_type=Path), help="a recorder's file"
)
@click.option("--management", "management_url", help="or a management server: its cluster cameras, stored there")
@click.option(
    "--token", envvar="GAPLESS_API_TOKEN", help="with --management: an admin credential (or GAPLESS_API_TOKEN)"
)
@click.option("--camera", "only", multiple=True, help="only this camera (repeat for more; default: all)")
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(0.5, 60), help="seconds per camera")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.option(
    "--write", is_flag=True, help="with --config: store each identity in the file (FILE.bak keeps the old one)"
)
def identify_cmd(
    config_path: Path | None,
    management_url: str | None,
    token: str | None,
    only: tuple[str, ...],
    timeout: float,
    as_json: bool,
    write: bool,
) -> None:
    """Ask each camera over ONVIF what it is: endpoint reference, manufacturer, model, serial, MAC, video source."""
    from gapless.common.config import ConfigError
    from gapless.identity.cli import report, run_identify

    if (config_path is None) == (management_url is None):
        raise click.UsageError("give --config FILE or --management URL")
    if management_url is not None:
        with _management(management_url, token, timeout + 30) as client:
            answer = _or_exit(lambda: client.identify(list(only), timeout))
        report({cam: r.identity or (r.error or "no answer") for cam, r in answer.cameras.items()}, as_json)
        click.echo(f"configuration version {answer.version}", err=True)
        sys.exit(1 if any(r.identity is None for r in answer.cameras.values()) else 0)
    assert config_path is not None
    try:
        sys.exit(run_identify(config_path, only, timeout, as_json, write))
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


@main.group("pairs")
def pairs_cmd() -> None:
    """Pairs of cameras between recorders (asymmetrical pairs)."""


_SERVERS_HELP = "a management server (repeat for pairs across servers: each lists the other's recorders)"
_TOKENS_HELP = "an admin credential (or GAPLESS_API_TOKEN); repeat, in --management's order, when they differ"


@pairs_cmd.command("propose")
@click.option("--a", "side_a", required=True, help="recorder A: its file, or with --management its id")
@click.option("--b", "side_b", required=True, help="recorder B: its file, or with --management its id")
@click.option("--management", "management_urls", multiple=True, help=_SERVERS_HELP)
@click.option("--token", "tokens", envvar="GAPLESS_API_TOKEN", multiple=True, help=_TOKENS_HELP)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def propose_cmd(
    side_a: str, side_b: str, management_urls: tuple[str, ...], tokens: tuple[str, ...], as_json: bool
) -> None:
    """Which camera of recorder A is which of recorder B: each proposal with its confidence,
    reasons and conflicts; only an exact hardware identity with no conflict is `auto`."""
    from gapless.common.config import ConfigError
    from gapless.identity.cli import print_mapping, run_propose

    if management_urls:
        federation = _federation(management_urls, tokens)
        if len(federation.servers) == 1:
            mapping = _or_exit(lambda: federation.servers[0].proposals(side_a, side_b))
        else:
            mapping = _or_exit(lambda: federation.proposals(side_a, side_b))
        if as_json:
            click.echo(mapping.model_dump_json(indent=2))
        else:
            print_mapping(mapping)
        return
    try:
        sys.exit(run_propose(Path(side_a), Path(side_b), as_json))
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


def _camera_ref(text: str) -> CameraRef:
    from gapless.config.cluster import CameraRef

    recorder, sep, camera = text.partition(":")
    if not sep or not recorder or not camera:
        raise click.BadParameter(f"{text!r}: use RECORDER:CAMERA")
    return CameraRef(recorder=recorder, camera=camera)


def _management(url: str, token: str | None, timeout: float = 30.0) -> ManagementClient:
    from gapless.client import ManagementClient

    if not token:
        raise click.UsageError("needs --token (or GAPLESS_API_TOKEN): an admin credential")
    return ManagementClient(url, token, timeout)


def _federation(urls: tuple[str, ...], tokens: tuple[str, ...]) -> Federation:
    """A client per --management, with its --token (one token: the same for all)."""
    from gapless.client import Federation

    if not urls:
        raise click.UsageError("needs --management URL")
    if len(tokens) not in (1, len(urls)):
        raise click.UsageError(f"give one --token, or one per --management ({len(urls)})")
    return Federation([_management(url, tokens[0] if len(tokens) == 1 else tokens[i]) for i, url in enumerate(urls)])


Answer = TypeVar("Answer")


def _or_exit(call: Callable[[], Answer]) -> Answer:
    """The client call's answer, or exit 2 with the server's words."""
    from gapless.client import ApiError

    try:
        return call()
    except ApiError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


@pairs_cmd.command("accept")
@click.option("--management", "management_urls", multiple=True, required=True, help=_SERVERS_HELP)
@click.option("--token", "tokens", envvar="GAPLESS_API_TOKEN", multiple=True, help=_TOKENS_HELP)
@click.option("--a", "side_a", required=True, help="RECORDER:CAMERA (the primary), or with --exact a recorder id")
@click.option("--b", "side_b", required=True, help="RECORDER:CAMERA (the secondary), or with --exact a recorder id")
@click.option("--exact", is_flag=True, help="accept every exact-identity proposal with no conflict between A and B")
def accept_cmd(
    management_urls: tuple[str, ...], tokens: tuple[str, ...], side_a: str, side_b: str, exact: bool
) -> None:
    """Accept a pair: both cameras become each other's backfill partners (a new configuration
    version on every server naming both recorders)."""
    from gapless.config.cluster import CameraPair

    federation = _federation(management_urls, tokens)
    if len(federation.servers) == 1:
        client = federation.servers[0]
        if exact:
            answer = _or_exit(lambda: client.accept_exact(side_a, side_b))
        else:
            answer = _or_exit(lambda: client.accept(_camera_ref(side_a), _camera_ref(side_b)))
        accepted, versions = answer.accepted, [answer.version]
    elif exact:
        accepted, versions = _or_exit(lambda: federation.accept_exact(side_a, side_b)), []
    else:
        pair = CameraPair(a=_camera_ref(side_a), b=_camera_ref(side_b))
        accepted, versions = [pair], [a.version for a in _or_exit(lambda: federation.accept(pair))]
    for pair in accepted:
        click.echo(f"accepted {pair.a} = {pair.b}")
    for version in versions:
        click.echo(f"configuration version {version}")


@pairs_cmd.command("reject")
@click.option("--management", "management_urls", multiple=True, required=True, help=_SERVERS_HELP)
@click.option("--token", "tokens", envvar="GAPLESS_API_TOKEN", multiple=True, help=_TOKENS_HELP)
@click.option("--a", "side_a", required=True, help="RECORDER:CAMERA")
@click.option("--b", "side_b", required=True, help="RECORDER:CAMERA")
def reject_cmd(management_urls: tuple[str, ...], tokens: tuple[str, ...], side_a: str, side_b: str) -> None:
    """Reject a proposal (never proposed again); an accepted pair is dissolved."""
    from gapless.config.cluster import CameraPair

    pair = CameraPair(a=_camera_ref(side_a), b=_camera_ref(side_b))
    answers = _or_exit(lambda: _federation(management_urls, tokens).reject(pair))
    versions = ", ".join(str(answer.version) for answer in answers)
    click.echo(f"rejected {side_a} = {side_b}; configuration version {versions}")


@pairs_cmd.command("list")
@click.option("--management", "management_urls", multiple=True, required=True, help=_SERVERS_HELP)
@click.option("--token", "tokens", envvar="GAPLESS_API_TOKEN", multiple=True, help=_TOKENS_HELP)
def list_pairs_cmd(management_urls: tuple[str, ...], tokens: tuple[str, ...]) -> None:
    """Accepted and rejected pairs (of every server given, each once)."""
    federation = _federation(management_urls, tokens)
    pairs, rejected = _or_exit(federation.pairs)
    for label, listed in (("pair", pairs), ("rejected", rejected)):
        for pair in listed:
            click.echo(f"{label} {pair.a} = {pair.b} ({pair.kind})")


@main.group("users")
def users_cmd() -> None:
    """People who sign in to the console (roles viewer, operator, admin; passwords Argon2id-hashed)."""


_ADMIN_HELP = "an admin credential (or GAPLESS_API_TOKEN)"
_PASSWORD_HELP = "read the password from this file's first line (default: asked for)"


def _password(password_file: str | None) -> str:
    if password_file is not None:
        return Path(password_file).read_text().splitlines()[0] if Path(password_file).stat().st_size else ""
    return str(click.prompt("password", hide_input=True, confirmation_prompt=True))


@users_cmd.command("list")
@click.option("--management", "management_url", required=True)
@click.option("--token", envvar="GAPLESS_API_TOKEN", help=_ADMIN_HELP)
def users_list_cmd(management_url: str, token: str | None) -> None:
    with _management(management_url, token) as client:
        for user in _or_exit(client.users).users:
            click.echo(f"{user.name}\t{user.role}")


@users_cmd.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["viewer", "operator", "admin"]), required=True)
@click.option("--password-file", type=click.Path(exists=True, dir_okay=False), help=_PASSWORD_HELP)
@click.option("--management", "management_url", required=True)
@click.option("--token", envvar="GAPLESS_API_TOKEN", help=_ADMIN_HELP)
def users_add_cmd(name: str, role, password_file: str | None, management_url: str, token: str | None) -> None:
    password = _password(password_file)
    with _management(management_url, token) as client:
        user = _or_exit(lambda: client.add_user(name, role, password))
    click.echo(f"user {user.name} added ({user.role})")


@users_cmd.command("change")
@click.argument("name")
@click.option("--role", type=click.Choice(["viewer", "operator", "admin"]))
@click.option("--password", "new_password", is_flag=True, help="set a new password (asked for, or --password-file)")
@click.option("--password-file", type=click.Path(exists=True, dir_okay=False), help=_PASSWORD_HELP)
@click.option("--management", "management_url", required=True)
@click.option("--token", envvar="GAPLESS_API_TOKEN", help=_ADMIN_HELP)
def users_change_cmd(name, role, new_password: bool, password_file, management_url: str, token) -> None:
    """A new role or password; the user's sessions end."""
    password = _password(password_file) if new_password or password_file else None
    if role is None and password is None:
        raise click.UsageError("give --role or --password")
    with _management(management_url, token) as client:
        user = _or_exit(lambda: client.change_user(name, role, password))
    click.echo(f"user {user.name} changed ({user.role}); their sessions ended")


@users_cmd.command("remove")
@click.argument("name")
@click.option("--management", "management_url", required=True)
@click.option("--token", envvar="GAPLESS_API_TOKEN", help=_ADMIN_HELP)
def users_remove_cmd(name: str, management_url: str, token: str | None) -> None:
    with _management(management_url, token) as client:
        _or_exit(lambda: client.remove_user(name))
    click.echo(f"user {name} removed")


@users_cmd.command("link")
@click.argument("name")
@click.option("--management", "management_url", required=True)
@click.option("--console", "console_url", help="the console's address (default: the management server's)")
@click.option("--token", envvar="GAPLESS_API_TOKEN", help=_ADMIN_HELP)
def users_link_cmd(name: str, management_url: str, console_url: str | None, token: str | None) -> None:
    """A one-time login link for a user (valid 15 minutes, once)."""
    with _management(management_url, token) as client:
        link = _or_exit(lambda: client.login_link(name))
    click.echo(f"{(console_url or management_url).rstrip('/')}/?token={link.link}")


@main.command("audit")
@click.option("--recorder", "recorder_url", required=True, help="recorder API base URL")
@click.option("--token", envvar="GAPLESS_API_TOKEN", required=True, help="API token (or GAPLESS_API_TOKEN)")
@click.option("--camera", required=True)
@click.option("--start", required=True, help="ISO 8601 with zone, or epoch seconds")
@click.option("--end", required=True)
@click.option("--compare", "compare_url", help="a second recorder: list what it holds that --recorder lacks")
@click.option("--compare-token", envvar="GAPLESS_COMPARE_TOKEN", help="its API token (default: --token)")
@click.option("--compare-camera", help="the camera's id on the second recorder (default: --camera)")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def audit_cmd(recorder_url, token, camera, start, end, compare_url, compare_token, compare_camera, as_json) -> None:
    """Report coverage gaps, missing/duplicated frames and time that cannot be true; exit 1 on any."""
    import dataclasses

    import httpx

    from gapless.audit.audit import AuditReport, CompareReport, audit, compare

    result: AuditReport | CompareReport
    try:
        if compare_url:
            result = compare(
                recorder_url, token, compare_url, compare_token or token, camera, start, end, compare_camera
            )
        else:
            result = audit(recorder_url, token, camera, start, end)
    except (httpx.HTTPError, ValueError) as exc:
        detail = exc.response.text.strip() if isinstance(exc, httpx.HTTPStatusError) else str(exc)
        click.echo(f"error: {detail}", err=True)
        sys.exit(2)
    if isinstance(result, CompareReport):
        failed = bool(result.lost)
        extra: dict[str, object] = {}
    else:
        failed, extra = result.failed, {"gaps": result.gaps}
    if as_json:
        click.echo(json.dumps({**dataclasses.asdict(result), **extra, "lost": result.lost, "failed": failed}))
    elif isinstance(result, CompareReport):
        _print_compare(result, recorder_url, compare_url)
    else:
        _print_audit(result, recorder_url)
    sys.exit(1 if failed else 0)


def _print_audit(report, recorder_url: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"audit of {report.camera} on {recorder_url}")
    table.add_column("what")
    table.add_column("value")
    table.add_row("covered intervals", "\n".join(f"{a} → {b}" for a, b in report.intervals) or "none")
    table.add_row("coverage gaps", str(report.gaps))
    for edge, seconds, hole in (
        ("start", report.uncovered_head_s, report.head_is_hole),
        ("end", report.uncovered_tail_s, report.tail_is_hole),
    ):
        if seconds:
            why = "a hole: footage exists beyond it" if hole else "nothing recorded beyond it"
            table.add_row(f"not covered at the {edge}", f"{seconds:.3f} s ({why})")
    table.add_row("fragments / frames", f"{report.fragments} / {report.frames}")
    for stream, frames in report.streams.items():
        missing = ", ".join(f"{a}-{b}" for a, b in frames.missing) or "none"
        table.add_row(
            f"stream {stream}",
            f"frames {frames.first} … {frames.last}; missing {missing}; duplicated {len(frames.duplicates)}",
        )
    if report.audio_units:
        gaps = "\n".join(f"{at}: {seconds:.3f} s" for at, seconds in report.audio_gaps) or "none"
        table.add_row("audio units / gaps", f"{report.audio_units} / {gaps}")
    table.add_row("checksum failures", str(len(report.bad_checksums)))
    table.add_row("time problems", "\n".join(report.time_problems) or "none")
    Console().print(table)


def _print_compare(report, recorder_url: str, compare_url: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from gapless.common.timeparse import iso

    table = Table(title=f"{report.camera}: what {compare_url} holds that {recorder_url} lacks")
    table.add_column("what")
    table.add_column("value")
    spans = "\n".join(f"{iso(a)} → {iso(b)} ({(b - a) / 1e6:.3f} s)" for a, b in report.only_in_b)
    table.add_row("time", spans or "nothing")
    for stream, ranges in report.frames_only_in_b.items():
        table.add_row(f"frames of {stream}", ", ".join(f"{a}-{b}" for a, b in ranges) or "nothing")
    if report.audio_only_in_b:
        table.add_row("audio units", str(report.audio_only_in_b))
    Console().print(table)


@main.command("check")
@click.option("--storage", required=True, type=click.Path(file_okay=False, exists=True), help="a recorder's storage")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def check_cmd(storage: str, as_json: bool) -> None:
    """Verify a storage directory's index against its chunk files, read-only (safe while recording).
    Exits 1 when anything is wrong that the recorder has not already quarantined."""
    import dataclasses
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from gapless.storage.check import check_storage

    report = check_storage(Path(storage))
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(report), indent=2))
    else:
        table = Table(title=f"check of {storage}")
        table.add_column("what")
        table.add_column("found")
        table.add_row("chunks / fragments verified", f"{report.chunks} / {report.fragments}")
        for name in ("bad_fragments", "missing_files", "unknown_files", "damaged_spans"):
            found = getattr(report, name)
            table.add_row(name.replace("_", " "), "\n".join(found[:20]) + (" …" if len(found) > 20 else "") or "none")
        table.add_row("records past the indexed end", str(report.unindexed_records))
        table.add_row("already quarantined", str(report.quarantined))
        table.add_row("index", report.index_error or "readable")
        Console().print(table)
    sys.exit(1 if report.problems else 0)


@main.command("backfill")
@click.option("--target", required=True, help="the recorder that lacks footage (API base URL)")
@click.option("--source", required=True, help="a recorder that has it: a partner id of the target, or its URL")
@click.option("--camera", required=True, help="camera id on the target")
@click.option("--source-camera", help="camera id on the source (default: the same)")
@click.option("--start", help="ISO 8601 with zone, or epoch seconds (default: one hour ago)")
@click.option("--end", help="(default: now)")
@click.option("--token", envvar="GAPLESS_API_TOKEN", required=True, help="the target's API token")
@click.option("--source-token", envvar="GAPLESS_SOURCE_TOKEN", help="the source's token (default: --token)")
@click.option("--no-wait", is_flag=True, help="queue the job and exit")
def backfill_cmd(target, source, camera, source_camera, start, end, token, source_token, no_wait) -> None:
    """Queue a backfill job on the target and follow it with a progress bar."""
    from gapless.backfill.cli import run_backfill

    sys.exit(run_backfill(target, source, camera, source_camera, start, end, token, source_token, no_wait))


@main.command("demo")
@click.option("--data", default="./data/demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--cameras", default=4, show_default=True, type=click.IntRange(1, 64), help="cameras of the cluster")
@click.option(
    "--port-base",
    type=click.IntRange(1024, 65000),
    help="seven ports from this one (default: management 7000, recorders 7101-7104, RTSP 8554, control 8555)",
)
def demo(data: str, cameras: int, port_base: int | None) -> None:
    """Simulated cameras, a management server with its gateway, a two-recorder cluster and an
    asymmetrical pair on loopback."""
    from pathlib import Path

    from gapless.demo import run_demo

    _setup_logging(False)
    run_demo(Path(data), cameras, port_base)


if __name__ == "__main__":
    main()
