"""Ask a camera what it is, over ONVIF (onvif-zeep-async, a client Gapless did not write): its
endpoint reference, GetDeviceInformation (manufacturer, model, firmware, serial, hardware id), the
MACs of GetNetworkInterfaces, and which video source this camera's RTSP stream comes from (the
profile whose GetStreamUri names the same path), which tells the channels of an encoder apart."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from gapless.common.urls import parse_camera_url
from gapless.config.recorder import CameraConfig, CameraIdentity

if TYPE_CHECKING:
    from onvif import ONVIFCamera
    from zeep.exceptions import Error as ZeepError

log = logging.getLogger("gapless.identity")

ONVIF_DEFAULT_PORT = 80
STREAM_SETUP = {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}}


class IdentifyError(Exception):
    """The camera could not be identified; the message says why, in words (never a password)."""


def device_address(camera: CameraConfig) -> tuple[str, int]:
    """host and port of the camera's ONVIF device service."""
    if camera.onvif:
        host, _, port = camera.onvif.rpartition(":")
        return host.strip("[]"), int(port)
    return parse_camera_url(camera.url).host, ONVIF_DEFAULT_PORT


def _credentials(camera: CameraConfig) -> tuple[str | None, str | None]:
    parsed = parse_camera_url(camera.url)
    return camera.username or parsed.username or None, camera.password or parsed.password or None


async def identify(camera: CameraConfig, timeout: float = 10.0) -> CameraIdentity:
    # Imported here: the ONVIF client and zeep cost a management server ~75 ms of CPU at every start.
    from onvif import ONVIFCamera
    from onvif.exceptions import ONVIFError
    from zeep.exceptions import Error as ZeepError

    host, port = device_address(camera)
    user, password = _credentials(camera)
    device = ONVIFCamera(host, port, user, password, adjust_time=True)
    try:
        async with asyncio.timeout(timeout):
            return await _ask(device, parse_camera_url(camera.url).path)
    except TimeoutError:
        raise IdentifyError(
            f"{camera.id}: the ONVIF service at {host}:{port} did not answer within {timeout:g} s"
        ) from None
    except ZeepError as exc:  # a SOAP fault: NotAuthorized, an unsupported operation …
        raise IdentifyError(f"{camera.id}: {host}:{port} refused: {_fault_text(exc)}") from None
    except (ONVIFError, httpx.HTTPError, OSError) as exc:
        raise IdentifyError(f"{camera.id}: cannot reach ONVIF at {host}:{port}: {type(exc).__name__}: {exc}") from None
    finally:
        await device.close()


def _fault_text(exc: ZeepError) -> str:
    """A SOAP fault's reason and ONVIF subcode (`Sender not Authorized (NotAuthorized)`)."""
    message = str(getattr(exc, "message", "") or exc) or type(exc).__name__
    subcodes = [getattr(code, "localname", str(code)) for code in getattr(exc, "subcodes", None) or []]
    return f"{message} ({', '.join(subcodes)})" if subcodes else message


async def _ask(device: ONVIFCamera, stream_path: str) -> CameraIdentity:
    await device.update_xaddrs()
    management = await device.create_devicemgmt_service()
    info = await management.GetDeviceInformation()
    endpoint = await management.GetEndpointReference()
    interfaces = await management.GetNetworkInterfaces()
    media = await device.create_media_service()
    sources = await media.GetVideoSources()
    source = await _video_source_of(media, stream_path)
    macs = sorted({str(i.Info.HwAddress).lower() for i in interfaces or [] if i.Info is not None and i.Info.HwAddress})
    return CameraIdentity(
        endpoint=_text(getattr(endpoint, "GUID", endpoint)),
        manufacturer=_text(info.Manufacturer),
        model=_text(info.Model),
        firmware=_text(info.FirmwareVersion),
        serial=_text(info.SerialNumber),
        hardware_id=_text(info.HardwareId),
        macs=macs,
        video_source=source,
        video_sources=max(1, len(sources or [])),
    )


async def _video_source_of(media: Any, stream_path: str) -> str | None:
    """The source token of the one profile whose stream URI has this camera's path (None if no
    profile, or several different sources, do)."""
    found = set()
    for profile in await media.GetProfiles() or []:
        configuration = profile.VideoSourceConfiguration
        if configuration is None:
            continue
        uri = await media.GetStreamUri({"StreamSetup": STREAM_SETUP, "ProfileToken": profile.token})
        parts = urlsplit(str(uri.Uri))
        if (parts.path or "/") + (f"?{parts.query}" if parts.query else "") == stream_path:
            found.add(str(configuration.SourceToken))
    return found.pop() if len(found) == 1 else None


def _text(value: object) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None
