"""`gapless cameras identify`: ask each camera of a recorder's file what it is over ONVIF, print it,
and with `--write` store it in the file as each camera's `identity`."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import click
import yaml

from gapless.config.recorder import CameraConfig, CameraIdentity, load_recorder_config
from gapless.identity.mapping import Mapping, propose
from gapless.identity.onvif import IdentifyError, identify


async def _identify_all(
    cameras: list[CameraConfig], timeout: float
) -> list[tuple[CameraConfig, CameraIdentity | IdentifyError]]:
    async def one(camera: CameraConfig) -> CameraIdentity | IdentifyError:
        try:
            return await identify(camera, timeout)
        except IdentifyError as exc:
            return exc

    answers = await asyncio.gather(*(one(camera) for camera in cameras))
    return list(zip(cameras, answers, strict=True))


def run_identify(config_path: Path, only: tuple[str, ...], timeout: float, as_json: bool, write: bool) -> int:
    config = load_recorder_config(config_path)
    cameras = [c for c in config.cameras if not only or c.id in only]
    unknown = set(only) - {c.id for c in config.cameras}
    if unknown:
        click.echo(f"error: no camera {', '.join(sorted(unknown))} in {config_path}", err=True)
        return 2
    results = asyncio.run(_identify_all(cameras, timeout))
    report(
        {camera.id: (answer if isinstance(answer, CameraIdentity) else str(answer)) for camera, answer in results},
        as_json,
    )
    if write:
        _store(config_path, {c.id: a for c, a in results if isinstance(a, CameraIdentity)})
    return 1 if any(isinstance(answer, IdentifyError) for _camera, answer in results) else 0


def report(results: dict[str, CameraIdentity | str], as_json: bool) -> None:
    """Each camera's identity, or why it has none (a string)."""
    if as_json:
        listing = {
            cam: answer.model_dump() if isinstance(answer, CameraIdentity) else {"error": answer}
            for cam, answer in results.items()
        }
        click.echo(json.dumps(listing, indent=2))
        return
    for cam, answer in results.items():
        if isinstance(answer, str):
            click.echo(f"{cam}: ERROR {answer}")
            continue
        channel = f", source {answer.video_source} of {answer.video_sources}" if answer.video_sources > 1 else ""
        click.echo(
            f"{cam}: {answer.manufacturer} {answer.model}, serial {answer.serial}, "
            f"MAC {', '.join(answer.macs) or '?'}, {answer.endpoint}{channel}"
        )


def _store(config_path: Path, identities: dict[str, CameraIdentity]) -> None:
    """Each identified camera's `identity` in the file, validated before it replaces the file (the
    old file kept as FILE.bak; YAML comments are not kept)."""
    data = yaml.safe_load(config_path.read_text())
    for camera in data.get("cameras") or []:
        if isinstance(camera, dict) and camera.get("id") in identities:
            camera["identity"] = identities[camera["id"]].model_dump(exclude_defaults=True)
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    candidate = config_path.with_name(config_path.name + ".new")
    candidate.write_text(text)
    candidate.chmod(config_path.stat().st_mode & 0o777)
    load_recorder_config(candidate)  # what is written must load
    shutil.copy2(config_path, config_path.with_name(config_path.name + ".bak"))
    candidate.replace(config_path)
    click.echo(
        f"stored {len(identities)} identities in {config_path} (previous version: {config_path.name}.bak)", err=True
    )


def run_propose(file_a: Path, file_b: Path, as_json: bool) -> int:
    """Proposals between the cameras of two recorders' files; exit 0 (proposing decides nothing)."""
    side_a, side_b = load_recorder_config(file_a).cameras, load_recorder_config(file_b).cameras
    mapping = propose(side_a, side_b)
    if as_json:
        click.echo(mapping.model_dump_json(indent=2))
    else:
        print_mapping(mapping)
        unpaired = ({c.id for c in side_a} - {p.a for p in mapping.proposals}) | (
            {c.id for c in side_b} - {p.b for p in mapping.proposals}
        )
        if unpaired:
            click.echo(f"no proposal for: {', '.join(sorted(unpaired))}")
    return 0


def print_mapping(mapping: Mapping) -> None:
    for proposal in mapping.proposals:
        flag = "auto" if proposal.auto_acceptable else "ask"
        click.echo(f"{proposal.a} = {proposal.b}  [{proposal.kind} {proposal.confidence:.1f}, {flag}]")
        for reason in proposal.reasons:
            click.echo(f"    because {reason}")
        for conflict in proposal.conflicts:
            click.echo(f"    but {conflict}")
    for warning in mapping.warnings:
        click.echo(f"warning: {warning}")
