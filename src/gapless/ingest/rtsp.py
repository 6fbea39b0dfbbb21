"""The recorder's own RTSP/1.0 client (RFC 2326) for H.264/H.265 video and AAC/G.711 audio over RTP,
TCP-interleaved.

Why not PyAV: profiling the ingest benchmark put about 75 % of the recorder's CPU in libavformat's
RTSP demuxer and the H.264 parser it forces on RTP streams, work Gapless does not need (it never
decodes; it needs NAL units, the RTP clock and the RTCP sender reports). This client does only
the requests: DESCRIBE/SETUP/PLAY, keep-alives, TEARDOWN, with Basic or Digest authentication
(RFC 2617, with and without `qop=auth`). Once playing, `ingest/rtp.py` turns the interleaved
stream into access units.

A camera is untrusted input: every reply is bounded in size, every handshake step has a deadline,
and every refusal says in words what the camera did.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
import struct
import time
from dataclasses import dataclass

from gapless.common.urls import parse_camera_url
from gapless.media.audio import AudioConfigError, AudioFormat, parse_audio_specific_config

#: Longest reply body accepted (an SDP is a few hundred bytes).
MAX_REPLY_BODY = 1 << 20
MAX_REPLY_HEADER = 64 << 10
#: The whole DESCRIBE/SETUP/PLAY handshake must be answered within this.
HANDSHAKE_TIMEOUT_S = 20.0


class RtspError(Exception):
    """The connection or the server failed; reconnecting may help."""


class CameraFault(Exception):
    """The camera answered with something Gapless refuses (the message says what); retried with backoff."""


class RtspRefused(RtspError):
    """The camera answered a request with an error status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class UnsupportedStream(CameraFault):
    """The camera answered, but with nothing Gapless can record."""


class AuthRefused(CameraFault):
    """The camera refused the credentials: retried rarely, so as not to provoke a lockout."""


@dataclass
class AudioTrack:
    """The camera's audio track as its SDP announces it (RFC 3640 AU header sizes for AAC)."""

    format: AudioFormat
    payload_type: int
    control: str  # the URL to SETUP it
    size_length: int = 13
    index_length: int = 3
    rtp_channel: int = 2
    rtcp_channel: int = 3


@dataclass
class StreamInfo:
    codec: str  # h264 | h265
    clock_rate: int
    parameter_sets: list[bytes]  # announced in the SDP (may be empty: then in band)
    rtp_channel: int = 0
    rtcp_channel: int = 1
    audio: AudioTrack | None = None
    audio_problem: str = ""  # why the camera's audio is not recorded, when it has audio


def _size(n: int) -> str:
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _challenge_params(challenge: str) -> dict[str, str]:
    """key=value and key="quoted, value" pairs of a WWW-Authenticate challenge."""
    return {k.lower(): v if v else q for k, v, q in re.findall(r'(\w+)=(?:"([^"]*)"|([^\s,]*))', challenge)}


class RtspClient:
    def __init__(
        self,
        url: str,
        user_agent: str,
        username: str | None = None,
        password: str | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 5.0,
    ) -> None:
        camera = parse_camera_url(url)
        self.username = username if username is not None else camera.username
        self.password = password if password is not None else camera.password
        self.url = camera.request_url
        self.host, self.port = camera.host, camera.port
        self.user_agent = user_agent
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self.sock: socket.socket | None = None
        self.buf = bytearray()
        self.cseq = 0
        self.session = ""
        self.session_timeout_s = 60.0  # RFC 2326's default when the camera announces none
        self.auth_scheme: str | None = None  # "basic" or "digest" once the camera asked
        self.digest: dict[str, str] = {}
        self.nonce_count = 0
        self.deadline = float("inf")

    # ---- requests ----------------------------------------------------------------------------
    def open(self) -> StreamInfo:
        self.deadline = time.monotonic() + HANDSHAKE_TIMEOUT_S
        try:
            self.sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except OSError as exc:
            raise RtspError(f"cannot connect to {self.host}:{self.port}: {exc.strerror or exc}") from None
        self.sock.settimeout(self.read_timeout)
        headers, body = self._request("DESCRIBE", self.url, {"Accept": "application/sdp"})
        base = headers.get("content-base") or headers.get("content-location") or self.url
        info, control = parse_sdp(body.decode("utf-8", "replace"), base)
        headers, _ = self._request("SETUP", control, {"Transport": "RTP/AVP/TCP;unicast;interleaved=0-1"})
        session = headers.get("session", "")
        self.session = session.split(";")[0].strip()
        if not self.session:
            raise CameraFault("SETUP answered without a Session header")
        timeout = re.search(r"timeout=(\d+)", session)
        if timeout and int(timeout.group(1)) > 0:
            self.session_timeout_s = float(timeout.group(1))
        channels = re.search(r"interleaved=(\d+)-(\d+)", headers.get("transport", ""))
        if channels:  # the server may choose other channels than the ones asked for
            info.rtp_channel, info.rtcp_channel = int(channels.group(1)), int(channels.group(2))
        if info.audio is not None:
            self._setup_audio(info)
        self._request("PLAY", base, {"Range": "npt=0.000-"})
        self.deadline = float("inf")
        return info

    def _setup_audio(self, info: StreamInfo) -> None:
        """SETUP the audio track on the next channels; a camera that refuses it records video alone."""
        audio = info.audio
        assert audio is not None
        if audio.rtp_channel in (info.rtp_channel, info.rtcp_channel):
            audio.rtp_channel, audio.rtcp_channel = info.rtcp_channel + 1, info.rtcp_channel + 2
        wanted = f"RTP/AVP/TCP;unicast;interleaved={audio.rtp_channel}-{audio.rtcp_channel}"
        try:
            headers, _ = self._request("SETUP", audio.control, {"Transport": wanted})
        except RtspRefused as exc:
            info.audio, info.audio_problem = None, f"the camera refused to send its audio track ({exc})"
            return
        channels = re.search(r"interleaved=(\d+)-(\d+)", headers.get("transport", ""))
        if channels:
            audio.rtp_channel, audio.rtcp_channel = int(channels.group(1)), int(channels.group(2))
        if {audio.rtp_channel, audio.rtcp_channel} & {info.rtp_channel, info.rtcp_channel}:
            info.audio, info.audio_problem = None, "the camera put its audio on the video's channels"

    @property
    def keepalive_interval_s(self) -> float:
        """Keep-alives at a third of the session timeout the camera announced (at most every 25 s)."""
        return max(1.0, min(25.0, self.session_timeout_s / 3))

    def _request(self, method: str, url: str, extra: dict[str, str]) -> tuple[dict[str, str], bytes]:
        sent_credentials = False
        for _attempt in range(3):
            self._send(method, url, extra)
            status, headers, body = self._read_response(method)
            if status != 401:
                if status != 200:
                    reason = {404: "no stream at this path", 454: "session not found", 503: "service unavailable"}
                    raise RtspRefused(f"{method}: RTSP {status} ({reason.get(status, 'refused')})", status)
                return headers, body
            challenges = headers.get("www-authenticate", "")
            stale = "stale=true" in challenges.lower().replace('"', "")
            if not (self.username or self.password):
                raise AuthRefused("the camera requires a user name and password (RTSP 401)")
            if sent_credentials and not stale:
                raise AuthRefused("authentication refused (RTSP 401): check the camera's user name and password")
            self._choose_auth(challenges)
            sent_credentials = True
        raise AuthRefused("authentication refused (RTSP 401 after a fresh nonce)")

    def _send(self, method: str, url: str, extra: dict[str, str]) -> None:
        self.cseq += 1
        lines = [f"{method} {url} RTSP/1.0", f"CSeq: {self.cseq}", f"User-Agent: {self.user_agent}"]
        if self.session:
            lines.append(f"Session: {self.session}")
        if self.auth_scheme:
            lines.append(f"Authorization: {self._auth_for(method, url)}")
        lines += [f"{k}: {v}" for k, v in extra.items()]
        assert self.sock is not None
        try:
            self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        except OSError as exc:
            raise RtspError(f"{method}: {exc.strerror or exc}") from None

    def _choose_auth(self, challenges: str) -> None:
        """Digest when offered (never sends the password), else Basic; challenges arrive joined by newlines."""
        offered = challenges.split("\n")
        digest = next((c for c in offered if c.strip().lower().startswith("digest")), None)
        if digest is not None:
            self.digest = _challenge_params(digest.strip()[6:])
            algorithm = self.digest.get("algorithm", "MD5").upper()
            if algorithm not in ("MD5", "MD5-SESS"):
                raise CameraFault(f"the camera asks for Digest algorithm {algorithm}, which Gapless does not speak")
            self.auth_scheme, self.nonce_count = "digest", 0
        elif any(c.strip().lower().startswith("basic") for c in offered):
            self.auth_scheme = "basic"
        else:
            raise CameraFault(
                f"the camera asks for an authentication scheme Gapless does not speak: {challenges[:40]!r}"
            )

    def _auth_for(self, method: str, url: str, cnonce: str | None = None) -> str:
        if self.auth_scheme == "basic":
            return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        realm, nonce = self.digest.get("realm", ""), self.digest.get("nonce", "")
        qop_offered = [q.strip() for q in self.digest.get("qop", "").split(",") if q.strip()]
        ha1 = _md5(f"{self.username}:{realm}:{self.password}")
        cnonce = cnonce or os.urandom(8).hex()
        if self.digest.get("algorithm", "").upper() == "MD5-SESS":
            ha1 = _md5(f"{ha1}:{nonce}:{cnonce}")
        ha2 = _md5(f"{method}:{url}")
        fields = f'username="{self.username}", realm="{realm}", nonce="{nonce}", uri="{url}"'
        if "auth" in qop_offered:
            self.nonce_count += 1
            nc = f"{self.nonce_count:08x}"
            response = _md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
            fields += f', qop=auth, nc={nc}, cnonce="{cnonce}"'
        else:
            response = _md5(f"{ha1}:{nonce}:{ha2}")
        if "opaque" in self.digest:
            fields += f', opaque="{self.digest["opaque"]}"'
        if "algorithm" in self.digest:
            fields += f", algorithm={self.digest['algorithm']}"
        return f'Digest {fields}, response="{response}"'

    # ---- reading -------------------------------------------------------------------------------
    def _fill(self, need: int, what: str) -> None:
        """Blocking read, for the requests before PLAY; once streaming, StreamReader reads."""
        assert self.sock is not None
        while len(self.buf) < need:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise CameraFault(
                    f"the camera took over {HANDSHAKE_TIMEOUT_S:.0f} s to answer {what}"
                    f" ({len(self.buf)} bytes of its reply arrived)"
                )
            self.sock.settimeout(min(self.read_timeout, remaining))
            try:
                chunk = self.sock.recv(1 << 18)
            except TimeoutError:
                if remaining <= self.read_timeout:
                    continue  # the deadline, not the read timeout, says what happened
                raise RtspError(f"no answer to {what} for {self.read_timeout:.0f} s") from None
            except OSError as exc:
                raise RtspError(f"connection lost: {exc.strerror or exc}") from None
            if not chunk:
                raise RtspError(f"the camera closed the connection during {what}")
            self.buf += chunk

    def _read_response(self, what: str) -> tuple[int, dict[str, str], bytes]:
        while True:
            self._fill(1, what)
            if self.buf[0] == 0x24:  # interleaved data before the reply (after PLAY): skip it
                self._fill(4, what)
                length = struct.unpack_from(">H", self.buf, 2)[0]
                self._fill(4 + length, what)
                del self.buf[: 4 + length]
                continue
            while (end := self.buf.find(b"\r\n\r\n")) < 0:
                if len(self.buf) > MAX_REPLY_HEADER:
                    raise CameraFault(f"reply header over {_size(MAX_REPLY_HEADER)} refused")
                self._fill(len(self.buf) + 1, what)
            lines = self.buf[:end].decode("utf-8", "replace").split("\r\n")
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("RTSP/") or not parts[1].isdigit():
                raise CameraFault(f"not an RTSP reply: {lines[0][:60]!r}")
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                key = name.strip().lower()
                headers[key] = f"{headers[key]}\n{value.strip()}" if key in headers else value.strip()
            raw_length = headers.get("content-length", "0").strip() or "0"
            if not raw_length.isdigit():
                raise CameraFault(f"reply with an invalid Content-Length {raw_length[:20]!r}")
            length = int(raw_length)
            if length > MAX_REPLY_BODY:
                raise CameraFault(f"reply of {_size(length)} refused (limit {_size(MAX_REPLY_BODY)})")
            self._fill(end + 4 + length, what)
            body = bytes(self.buf[end + 4 : end + 4 + length])
            del self.buf[: end + 4 + length]
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


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def _control_url(section: str, base: str) -> str:
    control = re.search(r"a=control:(\S+)", section)
    target = control.group(1) if control else "*"
    if target.lower().startswith("rtsp://"):
        return target
    if target == "*":
        return base
    return base.rstrip("/") + "/" + target


def _rtpmap(section: str) -> tuple[int | None, str, int, int]:
    """Payload type, encoding name, clock rate and channels of a media section's first format."""
    fields = section.split("\n", 1)[0].split()
    payload = fields[3] if len(fields) > 3 else ""
    if not payload.isdigit():
        return None, "", 0, 0
    rtpmap = re.search(rf"a=rtpmap:{payload} ([\w.-]+)/(\d+)(?:/(\d+))?", section)
    if rtpmap:
        return int(payload), rtpmap.group(1).upper(), int(rtpmap.group(2)), int(rtpmap.group(3) or 1)
    static = {0: ("PCMU", 8000, 1), 8: ("PCMA", 8000, 1)}.get(int(payload))  # RFC 3551 static types
    return (int(payload), *static) if static else (int(payload), "", 0, 0)


def parse_sdp(sdp: str, base: str) -> tuple[StreamInfo, str]:
    """The video track of a session description (and its audio track, if any), and the URL to SETUP
    the video."""
    media = sdp.replace("\r\n", "\n").split("\nm=")
    if not sdp.lstrip().startswith("v=") and len(media) < 2:
        raise CameraFault(f"DESCRIBE answered with something that is not a session description: {sdp[:40]!r}")
    video = next((m for m in media[1:] if m.startswith("video")), None)
    if video is None:
        raise UnsupportedStream("the stream has no video track")
    _payload, codec, clock_rate, _channels = _rtpmap(video)
    codec = codec or "unknown"
    if codec not in ("H264", "H265"):
        name = {"MP4V-ES": "mpeg4", "JPEG": "mjpeg"}.get(codec, codec.lower())
        raise UnsupportedStream(f"unsupported codec {name}; Gapless records H.264 and H.265")
    if not 1000 <= clock_rate <= 1_000_000:
        raise CameraFault(f"the SDP announces an RTP clock of {clock_rate} Hz")
    if codec == "H264":
        sprop = re.search(r"sprop-parameter-sets=([A-Za-z0-9+/=,]+)", video)
        encoded = sprop.group(1).split(",") if sprop else []
    else:
        encoded = [
            one
            for name in ("vps", "sps", "pps")
            for match in re.finditer(rf"sprop-{name}=([A-Za-z0-9+/=,]+)", video)
            for one in match.group(1).split(",")
        ]
    try:
        parameter_sets = [base64.b64decode(one) for one in encoded if one]
    except ValueError:
        parameter_sets = []  # in-band parameter sets will do
    info = StreamInfo(codec.lower(), clock_rate, parameter_sets)
    audio = next((m for m in media[1:] if m.startswith("audio")), None)
    if audio is not None:
        try:
            info.audio = _audio_track(audio, base)
        except AudioConfigError as exc:
            info.audio_problem = str(exc)
    return info, _control_url(video, base)


def _audio_track(section: str, base: str) -> AudioTrack:
    """The audio track of an SDP media section; AudioConfigError says why it cannot be recorded."""
    payload, name, rate, channels = _rtpmap(section)
    if payload is None:
        raise AudioConfigError("the audio track's SDP has no payload type")
    control = _control_url(section, base)
    if name in ("PCMU", "PCMA"):
        if not 1000 <= rate <= 192_000 or not 1 <= channels <= 8:
            raise AudioConfigError(f"G.711 at {rate} Hz with {channels} channels is not recorded")
        return AudioTrack(AudioFormat(name.lower(), rate, channels), payload, control)
    if name != "MPEG4-GENERIC":
        shown = name.lower() or f"RTP payload type {payload}"
        raise AudioConfigError(f"audio codec {shown} is not recorded (AAC and G.711 are); the video is")
    fmtp = re.search(rf"a=fmtp:{payload} ([^\n]*)", section)
    pairs = (p.partition("=") for p in (fmtp.group(1) if fmtp else "").split(";"))
    params = {k.strip().lower(): v.strip() for k, _, v in pairs}
    mode = params.get("mode", "").lower()
    if mode != "aac-hbr":
        raise AudioConfigError(f"AAC in mode {mode or 'unannounced'} is not recorded (AAC-hbr is)")
    try:
        config = bytes.fromhex(params.get("config", ""))
        size_length, index_length = int(params.get("sizelength", "")), int(params.get("indexlength", ""))
    except ValueError:
        raise AudioConfigError("the AAC track's SDP lacks a valid config, sizelength or indexlength") from None
    if not 1 <= size_length <= 16 or not 0 <= index_length <= 8:
        raise AudioConfigError(f"AAC AU headers of {size_length}+{index_length} bits are not recorded")
    audio = parse_audio_specific_config(config)
    if audio.rate != rate:
        raise AudioConfigError(f"the AAC config says {audio.rate} Hz, the RTP clock {rate} Hz")
    return AudioTrack(audio, payload, control, size_length, index_length)
