"""The recorder's own RTSP/1.0 client (RFC 2326) for H.264 over RTP, TCP-interleaved.

Why not PyAV: profiling the ingest benchmark put about 75 % of the recorder's CPU in libavformat's
RTSP demuxer and the H.264 parser it forces on RTP streams, work Gapless does not need (it never
decodes; it needs NAL units, the RTP clock and the RTCP sender reports). This client does only
the requests: DESCRIBE/SETUP/PLAY, keep-alives, TEARDOWN, with Basic or Digest authentication.
Once playing, `recorder/rtp.py` turns the interleaved stream into access units.
"""

from __future__ import annotations

import base64
import hashlib
import re
import socket
import struct
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit


class RtspError(Exception):
    """The connection or the server failed; reconnecting may help."""


class UnsupportedStream(Exception):
    """The camera answered, but with nothing Gapless can record."""


@dataclass
class StreamInfo:
    codec: str
    clock_rate: int
    sps: bytes
    pps: bytes
    rtp_channel: int = 0
    rtcp_channel: int = 1


class RtspClient:
    def __init__(self, url: str, user_agent: str, connect_timeout: float = 10.0, read_timeout: float = 5.0) -> None:
        parts = urlsplit(url)
        self.username = unquote(parts.username or "")
        self.password = unquote(parts.password or "")
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        self.url = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        self.host, self.port = parts.hostname, parts.port or 554
        self.user_agent = user_agent
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self.sock: socket.socket | None = None
        self.buf = bytearray()
        self.cseq = 0
        self.session = ""
        self.auth_header: str | None = None  # "basic" or "digest" once the server asked
        self.digest: dict[str, str] = {}

    # ---- requests ----------------------------------------------------------------------------
    def open(self) -> StreamInfo:
        try:
            self.sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except OSError as exc:
            raise RtspError(f"cannot connect to {self.host}:{self.port}: {exc}") from None
        self.sock.settimeout(self.read_timeout)
        headers, body = self._request("DESCRIBE", self.url, {"Accept": "application/sdp"})
        base = headers.get("content-base", self.url)
        info, control = self._parse_sdp(body.decode("utf-8", "replace"), base)
        headers, _ = self._request("SETUP", control, {"Transport": "RTP/AVP/TCP;unicast;interleaved=0-1"})
        self.session = headers.get("session", "").split(";")[0]
        channels = re.search(r"interleaved=(\d+)-(\d+)", headers.get("transport", ""))
        if channels:  # the server may choose other channels than the ones asked for
            info.rtp_channel, info.rtcp_channel = int(channels.group(1)), int(channels.group(2))
        self._request("PLAY", base, {"Range": "npt=0.000-"})
        return info

    def _request(self, method: str, url: str, extra: dict[str, str]) -> tuple[dict[str, str], bytes]:
        for _attempt in range(2):
            self._send(method, url, extra)
            status, headers, body = self._read_response()
            if status == 401 and self.username and self.auth_header is None:
                self.auth_header = self._authorization(headers.get("www-authenticate", ""))
                continue
            if status != 200:
                raise RtspError(f"{method} {url}: RTSP {status}")
            return headers, body
        raise RtspError(f"{method} {url}: authentication refused")

    def _send(self, method: str, url: str, extra: dict[str, str]) -> None:
        self.cseq += 1
        lines = [f"{method} {url} RTSP/1.0", f"CSeq: {self.cseq}", f"User-Agent: {self.user_agent}"]
        if self.session:
            lines.append(f"Session: {self.session}")
        if self.auth_header:
            lines.append(f"Authorization: {self._auth_for(method, url)}")
        lines += [f"{k}: {v}" for k, v in extra.items()]
        try:
            self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        except OSError as exc:
            raise RtspError(f"{method}: {exc}") from None

    def _authorization(self, challenge: str) -> str:
        if challenge.lower().startswith("basic"):
            return "basic"
        if challenge.lower().startswith("digest"):
            self.digest = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge))
            return "digest"
        raise RtspError(f"unsupported authentication: {challenge[:40]!r}")

    def _auth_for(self, method: str, url: str) -> str:
        if self.auth_header == "basic":
            return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        realm, nonce = self.digest.get("realm", ""), self.digest.get("nonce", "")
        ha1 = hashlib.md5(f"{self.username}:{realm}:{self.password}".encode()).hexdigest()
        ha2 = hashlib.md5(f"{method}:{url}".encode()).hexdigest()
        response = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()
        return (
            f'Digest username="{self.username}", realm="{realm}", nonce="{nonce}", uri="{url}", response="{response}"'
        )

    def _parse_sdp(self, sdp: str, base: str) -> tuple[StreamInfo, str]:
        media = sdp.split("\nm=")
        video = next((m for m in media[1:] if m.startswith("video")), None)
        if video is None:
            raise UnsupportedStream("the stream has no video track")
        payload_type = video.split()[3] if len(video.split()) > 3 else ""
        rtpmap = re.search(rf"a=rtpmap:{payload_type} ([\w.-]+)/(\d+)", video)
        codec = rtpmap.group(1).upper() if rtpmap else "unknown"
        if codec != "H264":
            name = {"MP4V-ES": "mpeg4", "H265": "hevc"}.get(codec, codec.lower())
            raise UnsupportedStream(f"unsupported codec {name}; Gapless records H.264")
        sps = pps = b""
        sprop = re.search(r"sprop-parameter-sets=([A-Za-z0-9+/=]+),([A-Za-z0-9+/=]+)", video)
        if sprop:
            sps, pps = base64.b64decode(sprop.group(1)), base64.b64decode(sprop.group(2))
        control = re.search(r"a=control:(\S+)", video)
        target = control.group(1) if control else "*"
        if target.startswith("rtsp://"):
            url = target
        elif target == "*":
            url = base
        else:
            url = base.rstrip("/") + "/" + target
        return StreamInfo("h264", int(rtpmap.group(2)), sps, pps), url

    # ---- reading -------------------------------------------------------------------------------
    def _fill(self, need: int) -> None:
        """Blocking read, for the requests before PLAY; once streaming, StreamReader reads."""
        while len(self.buf) < need:
            try:
                chunk = self.sock.recv(1 << 18)
            except TimeoutError:
                raise RtspError(f"no data from the camera for {self.read_timeout:.0f} s") from None
            except OSError as exc:
                raise RtspError(f"connection lost: {exc}") from None
            if not chunk:
                raise RtspError("stream ended")
            self.buf += chunk

    def _read_response(self) -> tuple[int, dict[str, str], bytes]:
        while True:
            self._fill(1)
            if self.buf[0] == 0x24:  # interleaved data before the reply (after PLAY): skip it
                self._fill(4)
                length = struct.unpack_from(">H", self.buf, 2)[0]
                self._fill(4 + length)
                del self.buf[: 4 + length]
                continue
            while (end := self.buf.find(b"\r\n\r\n")) < 0:
                if len(self.buf) > 65536:
                    raise RtspError("RTSP reply header too long")
                self._fill(len(self.buf) + 1)
            lines = self.buf[:end].decode("utf-8", "replace").split("\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0") or 0)
            self._fill(end + 4 + length)
            body = bytes(self.buf[end + 4 : end + 4 + length])
            del self.buf[: end + 4 + length]
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("RTSP/") or not parts[1].isdigit():
                raise RtspError(f"not an RTSP reply: {lines[0][:60]!r}")
            return int(parts[1]), headers, body

    def take_buffered(self) -> bytes:
        """What arrived after the PLAY reply (the stream's first packets), for the depacketizer."""
        data = bytes(self.buf)
        self.buf.clear()
        return data

    def keepalive(self) -> None:
        self._send("GET_PARAMETER", self.url, {})

    def close(self) -> None:
        if self.sock is not None:
            try:
                if self.session:
                    self.sock.settimeout(1.0)
                    self._send("TEARDOWN", self.url, {})
            except (RtspError, OSError):
                pass
            self.sock.close()
            self.sock = None
