"""URL and path helpers of the config schema: camera URLs, relative paths, tcp:// endpoints.

Every message that echoes a camera URL shows it redacted (passwords hidden).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pydantic import ValidationInfo

from streamdet.redact import redact_url

NETWORK_SCHEMES = ("rtsp", "rtsps", "http", "https", "rtmp")
"""URL schemes a camera may use besides local files (``file://`` or a plain path)."""

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_MISSING_COLON_RE = re.compile(r"^(rtsps?|https?|rtmp|file)/", re.IGNORECASE)  # "rtsp//x"
_HOST_RE = re.compile(r"^(\*|\[[0-9A-Fa-f:.%A-Za-z]+\]|[A-Za-z0-9._-]+)$")


def _resolve_path(value: str | Path, base_dir: Path) -> Path:
    """Make ``value`` absolute: expand ``~``, join relative paths to ``base_dir``, normalise ``..``."""
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    return Path(os.path.normpath(path))


def _base_dir(info: ValidationInfo) -> Path:
    """The folder relative paths are resolved against: the config file's, else the cwd."""
    ctx = info.context if isinstance(info.context, Mapping) else {}
    base = ctx.get("base_dir")
    return Path(base) if base is not None else Path.cwd()


def _normalize_camera_url(url: str, base_dir: Path) -> str:
    """Validate a camera URL; return it unchanged (network) or as an absolute path (file).

    Raises ValueError with a message that echoes the URL only in redacted form.
    """
    shown = redact_url(url)
    if not url or not url.strip():
        raise ValueError("bad URL: empty")
    if url != url.strip() or any(c in url for c in "\r\n\t\0"):
        raise ValueError(f"bad URL {shown!r}: leading/trailing whitespace or control characters")
    scheme_match = _SCHEME_RE.match(url)
    if scheme_match is None:
        path = _resolve_path(url, base_dir)
        if _MISSING_COLON_RE.match(url) and not path.exists():
            raise ValueError(f"bad URL {shown!r}: looks like a URL with a malformed scheme "
                             "(expected e.g. rtsp://host/path)")
        return str(path)
    scheme = scheme_match.group(1).lower()
    if scheme == "file":
        if not url[5:].startswith("//"):
            raise ValueError(f"bad URL {shown!r}: expected file:///absolute/path or file://relative/path")
        rest = unquote(url[7:])
        if rest.startswith("localhost/"):
            rest = rest[len("localhost") :]
        if not rest:
            raise ValueError(f"bad URL {shown!r}: no path after file://")
        return str(_resolve_path(rest, base_dir))
    if scheme not in NETWORK_SCHEMES:
        allowed = ", ".join(f"{s}://" for s in NETWORK_SCHEMES)
        raise ValueError(f"bad URL {shown!r}: unsupported scheme {scheme!r} "
                         f"(use {allowed}, file:// or a local path)")
    if not url[len(scheme) + 1 :].startswith("//"):
        raise ValueError(f"bad URL {shown!r}: expected {scheme}://host/...")
    if any(c.isspace() for c in url):
        raise ValueError(f"bad URL {shown!r}: contains whitespace (percent-encode it as %20)")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError(f"bad URL {shown!r}: invalid host or port") from None
    if not host:
        raise ValueError(f"bad URL {shown!r}: no host")
    return url


def _url_has_scheme(url: str) -> bool:
    """True for network URLs (validated camera URLs are either those or absolute paths)."""
    return _SCHEME_RE.match(url) is not None


def _split_tcp(endpoint: str) -> tuple[str, int]:
    """Split ``tcp://host:port``; ValueError unless host is sane and port is 1..65535."""
    host, sep, port = endpoint[len("tcp://") :].rpartition(":")
    if not sep or not host or not _HOST_RE.match(host):
        raise ValueError(f"bad endpoint {endpoint!r}: expected tcp://host:port (IPv6 as tcp://[::1]:port)")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"bad endpoint {endpoint!r}: port must be a number 1..65535 "
                         "(subscribers need a fixed port)")
    return host, int(port)

