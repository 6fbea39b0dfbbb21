"""`POST /api/v1/cameras/identify` on the management server: ask the cameras of the stored
configuration over ONVIF what they are, and store what they answered as a new configuration
version (docs/design/identity.md)."""

from __future__ import annotations

import asyncio

from pydantic import Field

from gapless.common.openapi import Body, Reply
from gapless.config.cluster import ClusterDocument
from gapless.config.recorder import CameraConfig, CameraIdentity
from gapless.identity.onvif import IdentifyError, identify


class IdentifyRequest(Body):
    cameras: list[str] = []
    """The cameras to ask: a cluster camera's id, or `recorder:camera` (default: every camera)."""
    timeout: float = Field(default=10.0, gt=0, le=60)
    """Seconds each camera has to answer (all are asked at once)."""


class IdentifyResult(Reply):
    identity: CameraIdentity | None = None
    """What the camera answered (stored with it), or None."""
    error: str | None = None
    """Why it could not be identified."""


class IdentifyAnswer(Reply):
    version: int
    """The configuration version that holds the identities (the same one if none was found)."""
    cameras: dict[str, IdentifyResult]


class UnknownCameras(Exception):
    """Cameras that are in no cluster of the configuration."""


async def identify_cameras(
    document: ClusterDocument, request: IdentifyRequest
) -> tuple[ClusterDocument | None, dict[str, IdentifyResult]]:
    """The document with the identities found (None when none was), and each camera's result: a
    cluster camera by its id, an independent recorder's camera as `recorder:camera`."""
    cameras = {camera.id: camera for cluster in document.clusters for camera in cluster.cameras}
    for recorder in document.recorders:
        cameras |= {f"{recorder.id}:{camera.id}": camera for camera in recorder.cameras or []}
    unknown = set(request.cameras) - set(cameras)
    if unknown:
        raise UnknownCameras(", ".join(sorted(unknown)))
    asked = {key: camera for key, camera in cameras.items() if not request.cameras or key in request.cameras}

    async def one(camera_config: CameraConfig) -> IdentifyResult:
        try:
            return IdentifyResult(identity=await identify(camera_config, request.timeout))
        except IdentifyError as exc:
            return IdentifyResult(error=str(exc))

    answers = await asyncio.gather(*(one(camera) for camera in asked.values()))
    results = dict(zip(asked, answers, strict=True))
    found = {key: result.identity for key, result in results.items() if result.identity is not None}
    if not found:
        return None, results
    updated = document.model_copy(deep=True)
    for cluster in updated.clusters:
        for camera in cluster.cameras:
            camera.identity = found.get(camera.id, camera.identity)
    for recorder in updated.recorders:
        for camera in recorder.cameras or []:
            camera.identity = found.get(f"{recorder.id}:{camera.id}", camera.identity)
    return updated, results
