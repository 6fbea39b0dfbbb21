"""A small RTSP/1.0 server (RFC 2326) for the simulated cameras: TCP-interleaved and UDP.

Like a camera it can demand credentials (Basic, Digest, Digest with `qop=auth`, or Digest and Basic
both offered) and end a session that is not kept alive within the timeout it announces.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import re
import secrets
import socket
import struct
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from gapless.sim.camera import SEND_BUFFER_BYTES, SLOW_CLIENT_BACKLOG, SLOW_CLIENT_SECONDS, Session, SimCamera

log = logging.getLogger("gapless.sim.rtsp")

METHODS = "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER"
AUTH_SCHEMES = ("basic", "digest", "digest-qop", "both")
REALM = "gapless-camera-sim"


@dataclass(frozen=True)
class Auth:
    """Credentials the cameras demand; scheme one of AUTH_SCHEMES ("both": Digest with qop and Basic)."""

    scheme: str
    username: str
    password: str

    def challenges(self, nonce: str) -> list[str]:
        digest = f'Digest realm="{REALM}", nonce="{nonce}"'
        if self.scheme in ("digest-qop", "both"):
            digest += ', qop="auth", algorithm=MD5'
        return {"basic": [f'Basic realm="{REALM}"'], "both": [digest, f'Basic realm="{REALM}"']}.get(
            self.scheme, [digest]
        )

    def accepts(self, header: str, method: str, nonce: str) -> bool:
        if header.startswith("Basic ") and self.scheme in ("basic", "both"):
            expected = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            return secrets.compare_digest(header[6:].strip(), expected)
        if not header.startswith("Digest ") or self.scheme == "basic":
            return False
        fields = {k: v or q for k, v, q in re.findall(r'(\w+)=(?:"([^"]*)"|([^\s,]*))', header[7:])}
        if fields.get("nonce") != nonce or fields.get("username") != self.username:
            return False
        ha1 = _md5(f"{self.username}:{REALM}:{self.password}")
        ha2 = _md5(f"{method}:{fields.get('uri', '')}")
        if self.scheme in ("digest-qop", "both"):
            if fields.get("qop") != "auth" or not fields.get("nc") or not fields.get("cnonce"):
                return False
            expected = _md5(f"{ha1}:{nonce}:{fields['nc']}:{fields['cnonce']}:auth:{ha2}")
        else:
            expected = _md5(f"{ha1}:{nonce}:{ha2}")
        return secrets.compare_digest(fields.get("response", ""), expected)


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


class _UdpSender(asyncio.DatagramProtocol):
    pass


class RtspConnection:
    def __init__(self, server: RtspServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername") or ("?", 0)
        self.peer_host = peer[0]
        self.peer = f"{peer[0]}:{peer[1]}"
        self.sessions: dict[str, Session] = {}
        self.udp: dict[str, tuple[asyncio.DatagramTransport, asyncio.DatagramTransport, tuple, tuple]] = {}
        self.channels: dict[str, dict[int, int]] = {}  # per session: track kind -> interleaved channel
        self.nonce = secrets.token_hex(16)
        self.last_request = time.monotonic()

    async def _expire(self) -> None:
        """A camera ends sessions that are not kept alive (any request counts) within its timeout."""
        timeout = self.server.session_timeout
        while True:
            await asyncio.sleep(0.5)
            if self.sessions and time.monotonic() - self.last_request > timeout:
                log.info("session timeout (%d s) for %s", timeout, self.peer)
                self.close_sessions()
                self.writer.close()
                return

    async def serve(self) -> None:
        expiry = asyncio.get_running_loop().create_task(self._expire())
        try:
            while True:
                first = await self.reader.readexactly(1)
                if first == b"$":  # interleaved RTCP receiver reports from the client
                    _channel, length = struct.unpack(">BH", await self.reader.readexactly(3))
                    await self.reader.readexactly(length)
                    continue
                head = first + await self.reader.readuntil(b"\r\n\r\n")
                lines = head.decode("utf-8", "replace").split("\r\n")
                method, url, _version = ([*lines[0].split(" "), "", ""])[:3]
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0") or 0)
                if length:
                    await self.reader.readexactly(length)
                self.last_request = time.monotonic()
                await self.respond(method.upper(), url, headers)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            expiry.cancel()
            self.close_sessions()
            with contextlib.suppress(Exception):
                self.writer.close()

    def close_sessions(self) -> None:
        for session in self.sessions.values():
            session.camera.drop(session.id)
        self.sessions.clear()
        for rtp, rtcp, _a, _b in self.udp.values():
            rtp.close()
            rtcp.close()
        self.udp.clear()

    def reply(
        self, cseq: str, status: str, extra: dict[str, str] | list[tuple[str, str]] | None = None, body: bytes = b""
    ) -> None:
        head = [f"RTSP/1.0 {status}", f"CSeq: {cseq}", "Server: gapless-camera-sim"]
        pairs = extra.items() if isinstance(extra, dict) else (extra or [])
        for name, value in pairs:
            head.append(f"{name}: {value}")
        if body:
            head.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)

    def camera_for(self, url: str) -> SimCamera | None:
        path = urlsplit(url).path.strip("/")
        return self.server.cameras.get(path.split("/")[0]) if path else None

    async def respond(self, method: str, url: str, headers: dict[str, str]) -> None:
        cseq = headers.get("cseq", "0")
        if method == "OPTIONS":
            self.reply(cseq, "200 OK", {"Public": METHODS})
            return
        auth = self.server.auth
        if auth is not None and not auth.accepts(headers.get("authorization", ""), method, self.nonce):
            self.reply(cseq, "401 Unauthorized", [("WWW-Authenticate", c) for c in auth.challenges(self.nonce)])
            return
        if method in ("GET_PARAMETER", "SET_PARAMETER"):
            self.reply(cseq, "200 OK")
            return
        camera = self.camera_for(url)
        if camera is None:
            self.reply(cseq, "404 Not Found")
            return
        if not camera.online or camera.is_blocked(headers.get("user-agent", "")):
            self.reply(cseq, "503 Service Unavailable")
            return
        if method == "DESCRIBE":
            base = url.rstrip("/") + "/"
            sdp = self.sdp(camera).encode()
            self.reply(cseq, "200 OK", {"Content-Base": base, "Content-Type": "application/sdp"}, sdp)
        elif method == "SETUP":
            await self.setup(camera, url, cseq, headers)
        elif method == "PLAY":
            session = self.sessions.get(headers.get("session", "").split(";")[0])
            if session is None:
                self.reply(cseq, "454 Session Not Found")
                return
            next_frame = camera.frame_no + 1
            info = f"url={url.rstrip('/')}/trackID=0;seq={session.seq};rtptime={camera.rtp_timestamp(next_frame)}"
            self.reply(cseq, "200 OK", {"Session": session.id, "Range": "npt=now-", "RTP-Info": info})
            await self.writer.drain()
            session.playing = True
        elif method == "PAUSE":
            session = self.sessions.get(headers.get("session", "").split(";")[0])
            if session:
                session.playing = False
            self.reply(cseq, "200 OK")
        elif method == "TEARDOWN":
            sid = headers.get("session", "").split(";")[0]
            session = self.sessions.pop(sid, None)
            if session:
                camera.drop(sid)
            self.reply(cseq, "200 OK")
        else:
            self.reply(cseq, "405 Method Not Allowed", {"Allow": METHODS})

    def sdp(self, camera: SimCamera) -> str:
        profile = camera.loop.profile
        session = [
            "v=0",
            f"o=- {camera.ssrc} 1 IN IP4 127.0.0.1",
            f"s=Gapless simulated camera {camera.id}",
            "c=IN IP4 0.0.0.0",
            "t=0 0",
            "a=control:*",
            "a=range:npt=now-",
        ]
        video = [f"m=video 0 RTP/AVP {camera.payload_type}"]
        if camera.kind == "mpeg4":
            video += [
                f"a=rtpmap:{camera.payload_type} MP4V-ES/90000",
                f"a=fmtp:{camera.payload_type} profile-level-id=1;config={camera.loop.sps.hex().upper()}",
            ]
        elif camera.kind == "h265":
            sprop = ";".join(
                f"sprop-{name}={base64.b64encode(nal).decode()}"
                for name, nal in (("vps", camera.loop.vps), ("sps", camera.loop.sps), ("pps", camera.loop.pps))
            )
            video += [f"a=rtpmap:{camera.payload_type} H265/90000", f"a=fmtp:{camera.payload_type} {sprop}"]
        else:
            sps, pps = camera.loop.sps, camera.loop.pps
            sprop = f"{base64.b64encode(sps).decode()},{base64.b64encode(pps).decode()}"
            video += [
                f"a=rtpmap:{camera.payload_type} H264/90000",
                f"a=fmtp:{camera.payload_type} packetization-mode=1;profile-level-id={sps[1:4].hex()};"
                f"sprop-parameter-sets={sprop}",
            ]
        video += [f"a=framerate:{profile.fps}", "a=control:trackID=0"]
        audio = camera.audio.sdp("trackID=1") if camera.audio is not None else []
        lines = session + (audio + video if camera.audio_first else video + audio)
        return "\r\n".join(lines) + "\r\n"

    async def setup(self, camera: SimCamera, url: str, cseq: str, headers: dict[str, str]) -> None:
        transport = headers.get("transport", "")
        sid = headers.get("session", "").split(";")[0] or secrets.token_hex(8)
        user_agent = headers.get("user-agent", "")
        audio = url.rstrip("/").endswith("trackID=1")
        if audio and camera.audio is None:
            self.reply(cseq, "404 Not Found")
            return
        existing = self.sessions.get(sid)
        if "interleaved=" in transport or "RTP/AVP/TCP" in transport:
            channels = _param(transport, "interleaved") or ("2-3" if audio else "0-1")
            rtp_ch, rtcp_ch = (int(x) for x in channels.split("-"))
            routes = self.channels.setdefault(sid, {})
            routes.update({2: rtp_ch, 3: rtcp_ch} if audio else {0: rtp_ch, 1: rtcp_ch})
            send = self._tcp_sender(routes)
            reply_transport = f"RTP/AVP/TCP;unicast;interleaved={rtp_ch}-{rtcp_ch}"
        elif audio:
            self.reply(cseq, "461 Unsupported Transport")  # the simulator sends audio over TCP only
            return
        else:
            ports = _param(transport, "client_port")
            if not ports:
                self.reply(cseq, "461 Unsupported Transport")
                return
            client_rtp, client_rtcp = (int(x) for x in ([*ports.split("-"), ports])[:2])
            loop = asyncio.get_running_loop()
            rtp_t, _ = await loop.create_datagram_endpoint(_UdpSender, local_addr=(self.server.host, 0))
            rtcp_t, _ = await loop.create_datagram_endpoint(_UdpSender, local_addr=(self.server.host, 0))
            dest_rtp, dest_rtcp = (self.peer_host, client_rtp), (self.peer_host, client_rtcp)
            self.udp[sid] = (rtp_t, rtcp_t, dest_rtp, dest_rtcp)
            send = self._udp_sender(rtp_t, rtcp_t, dest_rtp, dest_rtcp)
            server_rtp = rtp_t.get_extra_info("sockname")[1]
            server_rtcp = rtcp_t.get_extra_info("sockname")[1]
            reply_transport = (
                f"RTP/AVP;unicast;client_port={client_rtp}-{client_rtcp};server_port={server_rtp}-{server_rtcp}"
            )
        if existing is None:
            session = Session(sid, camera, user_agent, self.peer, send)
            self.sessions[sid] = session
            camera.add_session(session)
            asyncio.get_running_loop().create_task(self._close_when_dropped(session))
        else:
            session = existing
        session.audio = session.audio or audio
        self.reply(
            cseq, "200 OK", {"Transport": reply_transport, "Session": f"{sid};timeout={self.server.session_timeout}"}
        )

    async def _close_when_dropped(self, session: Session) -> None:
        """A session dropped by a fault (or for being too slow) closes the client's connection."""
        await session.closed.wait()
        if self.sessions.pop(session.id, None) is not None:
            with contextlib.suppress(Exception):
                self.writer.close()

    def _tcp_sender(self, routes: dict[int, int]):
        """Sends RTP/RTCP of the tracks in `routes` (0/1: video, 2/3: audio -> interleaved channel)."""
        writer = self.writer
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        backlogged_since: float | None = None

        def send(kind: int, data: bytes) -> bool:
            nonlocal backlogged_since
            if writer.is_closing():
                return False
            if writer.transport.get_write_buffer_size() > SLOW_CLIENT_BACKLOG:
                backlogged_since = backlogged_since or time.monotonic()
                if time.monotonic() - backlogged_since > SLOW_CLIENT_SECONDS:
                    return False
            else:
                backlogged_since = None
            channel = routes.get(kind)
            if channel is not None:
                writer.write(struct.pack(">cBH", b"$", channel, len(data)) + data)
            return True

        return send

    @staticmethod
    def _udp_sender(rtp_t, rtcp_t, dest_rtp, dest_rtcp):
        def send(kind: int, data: bytes) -> bool:
            if kind > 1:  # audio is sent over TCP only
                return True
            transport, dest = (rtp_t, dest_rtp) if kind == 0 else (rtcp_t, dest_rtcp)
            if transport.is_closing():
                return False
            transport.sendto(data, dest)
            return True

        return send


def _param(transport: str, name: str) -> str | None:
    for part in transport.split(";"):
        if part.startswith(name + "="):
            return part.split("=", 1)[1]
    return None


class RtspServer:
    def __init__(
        self,
        cameras: dict[str, SimCamera],
        host: str = "127.0.0.1",
        port: int = 8554,
        auth: Auth | None = None,
        session_timeout: int = 60,
    ) -> None:
        self.cameras = cameras
        self.host = host
        self.port = port
        self.auth = auth
        self.session_timeout = session_timeout
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Connections still open at shutdown are cancelled; Python 3.11 would log each as an error.
        with contextlib.suppress(asyncio.CancelledError):
            await RtspConnection(self, reader, writer).serve()

    async def close(self) -> None:
        if self._server:
            self._server.close()
            await self._server.wait_closed()
