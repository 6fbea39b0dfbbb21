"""The `gapless` command line."""

from __future__ import annotations

import asyncio
import logging
import sys

import click

from gapless import __version__


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("libav").setLevel(logging.ERROR)


@click.group()
@click.version_option(__version__, prog_name="gapless")
def main() -> None:
    """Gapless: zero-loss failover for video-surveillance recording."""


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
@click.option("--sr-interval", default=1.0, show_default=True, type=click.FloatRange(0.1, 60),
              help="seconds between RTCP sender reports")
@click.option("--special", multiple=True, type=click.Choice(["garbage", "mpeg4"]),
              help="add a faulty camera at /garbage (random payload) or /mpeg4 (unsupported codec)")
@click.option("-v", "--verbose", is_flag=True)
def camera_sim(cameras, host, port, control_port, width, height, fps, gop, bitrate, sr_interval, special,
               verbose) -> None:
    """Simulated RTSP/H.264 cameras with per-frame SEI stamps and fault injection."""
    from gapless.sim.encoder import Profile
    from gapless.sim.server import SimSettings, serve

    _setup_logging(verbose)
    profile = Profile(width, height, fps, gop, bitrate * 1000)
    settings = SimSettings(cameras, host, port, control_port, profile, sr_interval, list(special))
    asyncio.run(serve(settings))


@main.command("recorder")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="YAML file")
@click.option("-v", "--verbose", is_flag=True)
def recorder(config_path: str, verbose: bool) -> None:
    """Record cameras, keep the archive, serve the API."""
    from pathlib import Path

    from gapless.recorder.config import ConfigError, load_recorder_config
    from gapless.recorder.service import run_recorder

    _setup_logging(verbose)
    try:
        config = load_recorder_config(Path(config_path))
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    asyncio.run(run_recorder(config))
