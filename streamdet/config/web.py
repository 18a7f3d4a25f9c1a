"""The ``web:`` section: the live view the supervisor serves (off when the section is absent).

Loopback by default; any other ``host`` requires ``auth`` (HTTP Basic), so that pictures of the
cameras never leave the gateway unauthenticated. TLS is the reverse proxy's job (docs/operations.md).
"""

from __future__ import annotations

import ipaddress
import re

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from streamdet.config.problems import _cross_error

_MODEL_CONFIG = ConfigDict(
    extra="forbid", frozen=True, hide_input_in_errors=True, allow_inf_nan=False, validate_default=False
)
_HOST_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f:.]+|[A-Za-z0-9._-]+)$")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1); a wildcard is not one."""
    name = host.strip("[]")
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class WebAuth(BaseModel):
    """HTTP Basic credentials of the live view (``${VAR}`` keeps the password out of the file)."""

    model_config = _MODEL_CONFIG

    username: str = Field(min_length=1, description="User name asked by the browser.")
    password: SecretStr = Field(description="Password (compared in constant time; never logged).")

    @field_validator("username", mode="after")
    @classmethod
    def _no_colon(cls, v: str) -> str:
        if ":" in v:
            raise ValueError("must not contain ':' (HTTP Basic separates user and password with it)")
        return v

    @field_validator("password", mode="after")
    @classmethod
    def _not_empty(cls, v: SecretStr) -> SecretStr:
        if not v.get_secret_value():
            raise ValueError("must not be empty")
        return v


class WebConfig(BaseModel):
    """The live view: a page with every camera's annotated picture and health, MJPEG streams, JSON."""

    model_config = _MODEL_CONFIG

    host: str = Field("127.0.0.1", description="Address to listen on; not loopback: web.auth is required.")
    port: int = Field(8080, ge=0, le=65535, description="TCP port (0: any free port, logged).")
    auth: WebAuth | None = Field(None, description="HTTP Basic credentials; required off loopback.")
    max_fps: float = Field(5.0, gt=0, le=30, description="Pictures encoded per camera per second at most.")
    max_streams: int = Field(8, ge=1, le=256, description="Concurrent MJPEG streams; more are refused (503).")
    threads: int = Field(16, ge=2, le=512, description="Concurrent connections; more are closed at once.")
    jpeg_quality: int = Field(80, ge=10, le=100, description="JPEG quality of the pictures.")

    @field_validator("host", mode="after")
    @classmethod
    def _check_host(cls, v: str) -> str:
        if not v or not _HOST_RE.match(v):
            raise ValueError(f"bad host {v[:80]!r}: expected an IP address or host name")
        return v

    def port_clashes(self, others: tuple[tuple[int | None, str | None, tuple[str, ...]], ...]
                     ) -> list[tuple[tuple[str | int, ...], str, tuple[str | int, ...] | None]]:
        """Located problems for each (port, host, key) of another listener on ``web.port``."""
        wild = {"*", "0.0.0.0", "::", "[::]"}
        out: list[tuple[tuple[str | int, ...], str, tuple[str | int, ...] | None]] = []
        for port, host, key in others:
            if port is not None and port == self.port and self.port != 0 and (
                    host is None or host == self.host or host in wild or self.host in wild):
                out.append((("web", "port"), f"port {port} is also used by {'.'.join(key)}", key))
        return out

    @model_validator(mode="after")
    def _auth_off_loopback(self) -> WebConfig:
        if self.auth is None and not is_loopback(self.host):
            raise _cross_error([(("auth",), f"required when web.host is not loopback (host {self.host!r}): set "
                                 "web.auth.username and web.auth.password, e.g. password: ${STREAMDET_WEB_PASS}",
                                 ("host",))])
        return self
