"""A minimal ONVIF device per simulated camera (or per multi-channel encoder): real SOAP 1.2 over
HTTP, so camera identification is tested on the wire against a client we did not write.

Each device listens on its own port (`--onvif-port P`: device k on P+k), as cameras on a LAN have
their own address, and answers the device service (`/onvif/device_service`: GetSystemDateAndTime,
GetServices, GetCapabilities, GetDeviceInformation, GetNetworkInterfaces, GetEndpointReference) and
the media service (`/onvif/media_service`: GetVideoSources, GetProfiles, GetStreamUri). With
`--auth` set, every operation but GetSystemDateAndTime needs a WS-Security UsernameToken whose
PasswordDigest is right, as real cameras demand. What each device says is configurable
(`--onvif-devices FILE`): two units of one model, an encoder whose channels are several cameras.
The control API can swap two devices' ports, as a DHCP server reassigning addresses would.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import logging
import secrets
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

import yaml
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger("gapless.sim.onvif")

SOAP = "http://www.w3.org/2003/05/soap-envelope"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
DEVICE_NS = "http://www.onvif.org/ver10/device/wsdl"
MEDIA_NS = "http://www.onvif.org/ver10/media/wsdl"
SCHEMA_NS = "http://www.onvif.org/ver10/schema"
ERROR_NS = "http://www.onvif.org/ver10/error"
#: Operations a client may call before it is authenticated (ONVIF Core, "pre-auth").
PRE_AUTH = {"GetSystemDateAndTime"}
#: A UsernameToken's Created time may be this far from the device's clock.
TOKEN_SKEW = dt.timedelta(minutes=5)


class DeviceSpec(BaseModel):
    """What one simulated device says about itself."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str = Field(pattern=r"^urn:uuid:[0-9a-f-]{36}$")
    manufacturer: str = "Gapless"
    model: str = "GSIM-1"
    firmware: str = "1.0"
    serial: str
    hardware_id: str = "GSIM-HW1"
    mac: str = Field(pattern=r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
    channels: list[str] = Field(min_length=1)  # the cameras (RTSP paths) of its video sources, in order


def default_devices(camera_ids: list[str]) -> list[DeviceSpec]:
    """One single-channel device per camera, each with its own serial, MAC and endpoint reference."""
    devices = []
    for number, camera_id in enumerate(camera_ids):
        endpoint = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'gapless-sim/{camera_id}')}"
        mac = f"02:00:00:00:{number >> 8:02x}:{number & 0xFF:02x}"
        devices.append(DeviceSpec(endpoint=endpoint, serial=f"GS{number:06d}", mac=mac, channels=[camera_id]))
    return devices


def load_devices(path: Path) -> list[DeviceSpec]:
    data = yaml.safe_load(path.read_text())
    return [DeviceSpec.model_validate(item) for item in data]


@dataclass
class Device:
    spec: DeviceSpec
    rtsp_base: str  # rtsp://host:port
    width: int
    height: int
    fps: int
    nonces: set[str] = field(default_factory=set)  # UsernameToken nonces seen (a replay is refused)


def _envelope(body: str) -> str:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><env:Envelope xmlns:env="{SOAP}" xmlns:tds="{DEVICE_NS}"'
        f' xmlns:trt="{MEDIA_NS}" xmlns:tt="{SCHEMA_NS}" xmlns:ter="{ERROR_NS}">'
        f"<env:Body>{body}</env:Body></env:Envelope>"
    )


def _fault(code: str, subcode: str, reason: str) -> str:
    return _envelope(
        f"<env:Fault><env:Code><env:Value>env:{code}</env:Value><env:Subcode><env:Value>{subcode}</env:Value>"
        f'</env:Subcode></env:Code><env:Reason><env:Text xml:lang="en">{escape(reason)}</env:Text></env:Reason>'
        "</env:Fault>"
    )


def _digest_ok(header: ET.Element | None, username: str, password: str, seen: set[str]) -> bool:
    """WS-Security UsernameToken with PasswordDigest = Base64(SHA-1(nonce + created + password))."""
    token = header.find(f".//{{{WSSE}}}UsernameToken") if header is not None else None
    if token is None:
        return False
    user = token.findtext(f"{{{WSSE}}}Username") or ""
    given = token.findtext(f"{{{WSSE}}}Password") or ""
    nonce_text = token.findtext(f"{{{WSSE}}}Nonce") or ""
    created = token.findtext(f"{{{WSU}}}Created") or ""
    try:
        nonce = base64.b64decode(nonce_text, validate=True)
        when = dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return False
    if when.tzinfo is None or abs(dt.datetime.now(dt.UTC) - when) > TOKEN_SKEW or nonce_text in seen:
        return False
    expected = base64.b64encode(hashlib.sha1(nonce + created.encode() + password.encode()).digest()).decode()
    if not (secrets.compare_digest(user, username) and secrets.compare_digest(given, expected)):
        return False
    seen.add(nonce_text)  # a replayed token is refused
    return True


class DeviceAnswers:
    """The SOAP bodies one device answers, by operation."""

    def __init__(self, device: Device, address: str) -> None:
        self.device, self.address = device, address  # address: host:port the request came to

    def xaddr(self, service: str) -> str:
        return f"http://{self.address}/onvif/{service}"

    def answer(self, operation: str, request: ET.Element) -> str | None:
        """The response body, or None for an operation this device does not support."""
        method = {
            "GetSystemDateAndTime": self.get_system_date_and_time,
            "GetServices": self.get_services,
            "GetCapabilities": self.get_capabilities,
            "GetDeviceInformation": self.get_device_information,
            "GetNetworkInterfaces": self.get_network_interfaces,
            "GetEndpointReference": self.get_endpoint_reference,
            "GetVideoSources": self.get_video_sources,
            "GetProfiles": self.get_profiles,
            "GetStreamUri": self.get_stream_uri,
        }.get(operation)
        return method(request) if method is not None else None

    def get_system_date_and_time(self, _request: ET.Element) -> str:
        now = dt.datetime.now(dt.UTC)
        return (
            "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime><tt:DateTimeType>NTP</tt:DateTimeType>"
            "<tt:DaylightSavings>false</tt:DaylightSavings><tt:UTCDateTime>"
            f"<tt:Time><tt:Hour>{now.hour}</tt:Hour><tt:Minute>{now.minute}</tt:Minute>"
            f"<tt:Second>{now.second}</tt:Second></tt:Time><tt:Date><tt:Year>{now.year}</tt:Year>"
            f"<tt:Month>{now.month}</tt:Month><tt:Day>{now.day}</tt:Day></tt:Date>"
            "</tt:UTCDateTime></tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>"
        )

    def get_services(self, _request: ET.Element) -> str:
        services = "".join(
            f"<tds:Service><tds:Namespace>{ns}</tds:Namespace><tds:XAddr>{self.xaddr(name)}</tds:XAddr>"
            "<tds:Version><tt:Major>2</tt:Major><tt:Minor>60</tt:Minor></tds:Version></tds:Service>"
            for ns, name in ((DEVICE_NS, "device_service"), (MEDIA_NS, "media_service"))
        )
        return f"<tds:GetServicesResponse>{services}</tds:GetServicesResponse>"

    def get_capabilities(self, _request: ET.Element) -> str:
        return (
            "<tds:GetCapabilitiesResponse><tds:Capabilities>"
            f"<tt:Device><tt:XAddr>{self.xaddr('device_service')}</tt:XAddr></tt:Device>"
            f"<tt:Media><tt:XAddr>{self.xaddr('media_service')}</tt:XAddr><tt:StreamingCapabilities>"
            "<tt:RTPMulticast>false</tt:RTPMulticast><tt:RTP_TCP>true</tt:RTP_TCP>"
            "<tt:RTP_RTSP_TCP>true</tt:RTP_RTSP_TCP></tt:StreamingCapabilities></tt:Media>"
            "</tds:Capabilities></tds:GetCapabilitiesResponse>"
        )

    def get_device_information(self, _request: ET.Element) -> str:
        spec = self.device.spec
        return (
            f"<tds:GetDeviceInformationResponse><tds:Manufacturer>{escape(spec.manufacturer)}</tds:Manufacturer>"
            f"<tds:Model>{escape(spec.model)}</tds:Model><tds:FirmwareVersion>{escape(spec.firmware)}"
            f"</tds:FirmwareVersion><tds:SerialNumber>{escape(spec.serial)}</tds:SerialNumber>"
            f"<tds:HardwareId>{escape(spec.hardware_id)}</tds:HardwareId></tds:GetDeviceInformationResponse>"
        )

    def get_network_interfaces(self, _request: ET.Element) -> str:
        return (
            '<tds:GetNetworkInterfacesResponse><tds:NetworkInterfaces token="eth0"><tt:Enabled>true</tt:Enabled>'
            f"<tt:Info><tt:Name>eth0</tt:Name><tt:HwAddress>{self.device.spec.mac}</tt:HwAddress>"
            "<tt:MTU>1500</tt:MTU></tt:Info><tt:IPv4><tt:Enabled>true</tt:Enabled><tt:Config><tt:Manual>"
            f"<tt:Address>{self.address.rsplit(':', 1)[0]}</tt:Address><tt:PrefixLength>8</tt:PrefixLength></tt:Manual>"
            "<tt:DHCP>true</tt:DHCP></tt:Config></tt:IPv4></tds:NetworkInterfaces></tds:GetNetworkInterfacesResponse>"
        )

    def get_endpoint_reference(self, _request: ET.Element) -> str:
        return (
            f"<tds:GetEndpointReferenceResponse><tds:GUID>{self.device.spec.endpoint}</tds:GUID>"
            "</tds:GetEndpointReferenceResponse>"
        )

    def get_video_sources(self, _request: ET.Element) -> str:
        device = self.device
        sources = "".join(
            f'<trt:VideoSources token="VS{n}"><tt:Framerate>{device.fps}</tt:Framerate><tt:Resolution>'
            f"<tt:Width>{device.width}</tt:Width><tt:Height>{device.height}</tt:Height></tt:Resolution>"
            "</trt:VideoSources>"
            for n in range(len(device.spec.channels))
        )
        return f"<trt:GetVideoSourcesResponse>{sources}</trt:GetVideoSourcesResponse>"

    def get_profiles(self, _request: ET.Element) -> str:
        device = self.device
        profiles = "".join(
            f'<trt:Profiles token="P{n}" fixed="true"><tt:Name>{escape(channel)}</tt:Name>'
            f'<tt:VideoSourceConfiguration token="VSC{n}"><tt:Name>VSC{n}</tt:Name><tt:UseCount>1</tt:UseCount>'
            f'<tt:SourceToken>VS{n}</tt:SourceToken><tt:Bounds x="0" y="0" width="{device.width}"'
            f' height="{device.height}"/></tt:VideoSourceConfiguration></trt:Profiles>'
            for n, channel in enumerate(device.spec.channels)
        )
        return f"<trt:GetProfilesResponse>{profiles}</trt:GetProfilesResponse>"

    def get_stream_uri(self, request: ET.Element) -> str | None:
        token = request.findtext(f".//{{{MEDIA_NS}}}ProfileToken") or ""
        channels = self.device.spec.channels
        if not (token.startswith("P") and token[1:].isdigit() and int(token[1:]) < len(channels)):
            return None
        uri = f"{self.device.rtsp_base}/{channels[int(token[1:])]}"
        return (
            f"<trt:GetStreamUriResponse><trt:MediaUri><tt:Uri>{escape(uri)}</tt:Uri>"
            "<tt:InvalidAfterConnect>false</tt:InvalidAfterConnect><tt:InvalidAfterReboot>false"
            "</tt:InvalidAfterReboot><tt:Timeout>PT0S</tt:Timeout></trt:MediaUri></trt:GetStreamUriResponse>"
        )


def device_app(slots: list[Device], slot: int, credentials: tuple[str, str] | None) -> web.Application:
    """The SOAP endpoint of the device in `slots[slot]` now (both services share one handler: the
    body names the operation). `slots` may be reordered at run time: a swapped address."""

    async def soap(request: web.Request) -> web.Response:
        device = slots[slot]
        answers = DeviceAnswers(device, request.host)
        try:
            envelope = ET.fromstring(await request.read())
        except ET.ParseError:
            return _soap_reply(_fault("Sender", "ter:WellFormed", "not XML"), 400)
        body = envelope.find(f"{{{SOAP}}}Body")
        operation_element = next(iter(body), None) if body is not None else None
        if operation_element is None:
            return _soap_reply(_fault("Sender", "ter:InvalidArgVal", "no operation"), 400)
        operation = operation_element.tag.rsplit("}", 1)[-1]
        if credentials is not None and operation not in PRE_AUTH:
            header = envelope.find(f"{{{SOAP}}}Header")
            if not _digest_ok(header, credentials[0], credentials[1], device.nonces):
                return _soap_reply(_fault("Sender", "ter:NotAuthorized", "Sender not Authorized"), 400)
        answer = answers.answer(operation, operation_element)
        if answer is None:
            return _soap_reply(_fault("Receiver", "ter:ActionNotSupported", f"{operation} is not supported"), 400)
        return _soap_reply(_envelope(answer), 200)

    app = web.Application()
    app.router.add_post("/onvif/device_service", soap)
    app.router.add_post("/onvif/media_service", soap)
    return app


def _soap_reply(text: str, status: int) -> web.Response:
    return web.Response(text=text, status=status, content_type="application/soap+xml", charset="utf-8")
