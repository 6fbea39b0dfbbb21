"""Camera URLs: parsed and validated once (configuration and the RTSP client alike), and shown
without their credentials."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit


@dataclass(frozen=True)
class CameraUrl:
    scheme: str
    host: str
    port: int
    path: str  # path and query, as the camera wants them
    username: str
    password: str

    @property
    def request_url(self) -> str:
        """The URL without credentials, for requests, logs and APIs."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"rtsp://{host}:{self.port}{self.path}"


def parse_camera_url(url: str) -> CameraUrl:
    """Validate a camera URL fully; ValueError says what is wrong (never echoing a password)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"camera URL {redact_url(url)!r}: {exc}") from None
    if parts.scheme == "rtsps":
        raise ValueError("rtsps:// (RTSP over TLS) is not supported yet: use rtsp:// on a trusted network")
    if parts.scheme != "rtsp":
        raise ValueError(f"camera URL must start with rtsp://, not {parts.scheme or '(no scheme)'}://")
    if not parts.hostname:
        raise ValueError(f"camera URL {redact_url(url)!r} has no host")
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"camera URL port {port} is out of range 1-65535")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return CameraUrl(
        "rtsp", parts.hostname, port or 554, path, unquote(parts.username or ""), unquote(parts.password or "")
    )


def redact_url(url: str) -> str:
    """The URL with any user:password removed (for logs and API answers)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(unparsable URL)"
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def with_password(url: str, password: str | None) -> str:
    """A camera URL whose user-info password (if it has one) is replaced, or removed (None)."""
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.partition(":")[0]
    return f"{scheme}{sep}{user}{'' if password is None else ':' + password}@{host}{slash}{path}"
