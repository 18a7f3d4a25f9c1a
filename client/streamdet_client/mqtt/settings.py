"""The MQTT bridge's settings: plain dataclasses, checked on construction (standard library only).

The daemon builds them from its ``mqtt:`` configuration section (``streamdet.config.mqtt``); the
standalone bridge from its command line. Names that end up in topics are checked here, once, for
both: a gateway id is one topic level, the prefix one or more, and neither may hold MQTT wildcards.
The password never appears in a ``repr``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from streamdet_client.errors import StreamdetError

GATEWAY_ID_PATTERN = r"[A-Za-z0-9_.-]{1,64}"
_GATEWAY_ID_RE = re.compile(GATEWAY_ID_PATTERN)
_PREFIX_LEVEL_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
PROTOCOLS = ("3.1.1", "5")
DEFAULT_PORT, DEFAULT_TLS_PORT = 1883, 8883


def gateway_id_problem(value: object) -> str | None:
    """Why ``value`` is not a usable gateway id (one topic level of ``[A-Za-z0-9_.-]``), or None."""
    if not isinstance(value, str) or not _GATEWAY_ID_RE.fullmatch(value):
        return (f"bad gateway id {str(value)[:80]!r}: expected 1-64 characters of [A-Za-z0-9_.-] "
                "(one MQTT topic level: no '/', '+', '#' or spaces)")
    return None


def topic_prefix_problem(value: object) -> str | None:
    """Why ``value`` is not a usable topic prefix (levels of ``[A-Za-z0-9_.-]`` joined by '/'), or None."""
    if not isinstance(value, str) or not all(_PREFIX_LEVEL_RE.fullmatch(level) for level in value.split("/")):
        return (f"bad topic prefix {str(value)[:80]!r}: expected levels of 1-64 characters of [A-Za-z0-9_.-] "
                "joined by '/' (no empty level, no '+', '#', '$' or spaces)")
    return None


def topic_safe_hostname(hostname: str) -> str:
    """A default gateway id from a host name: characters outside ``[A-Za-z0-9_.-]`` become '-'."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", hostname)[:64]
    return cleaned or "gateway"


@dataclass(frozen=True)
class TlsSettings:
    """TLS to the broker. ``ca_file`` None trusts the system's CAs; the broker's host name is
    verified unless ``insecure``; ``cert_file``/``key_file``: a client certificate (both or neither)."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise StreamdetError("mqtt tls: cert_file and key_file go together (a client certificate and its key)")


@dataclass(frozen=True)
class BridgeSettings:
    """Where and how the bridge publishes; see docs/wire.md (MQTT topics) and docs/fleet.md."""

    host: str
    gateway_id: str
    port: int | None = None  # None: 1883, or 8883 with TLS
    topic_prefix: str = "streamdet"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: TlsSettings | None = None
    qos: int = 0
    max_queued: int = 1000
    protocol: str = "3.1.1"
    keepalive_s: int = 30
    reconnect_initial_s: float = 1.0
    reconnect_max_s: float = 30.0
    reconnect_jitter: float = 0.5
    stats_interval_s: float = 10.0

    def __post_init__(self) -> None:
        problems = [p for p in (gateway_id_problem(self.gateway_id), topic_prefix_problem(self.topic_prefix)) if p]
        if not self.host or any(c.isspace() for c in self.host):
            problems.append(f"bad broker host {self.host[:80]!r}")
        if self.port is not None and not 1 <= self.port <= 65535:
            problems.append(f"bad broker port {self.port}: expected 1-65535")
        if (self.username is None) != (self.password is None):
            problems.append("username and password go together (both or neither)")
        if self.qos not in (0, 1):
            problems.append(f"bad qos {self.qos}: expected 0 or 1")
        if self.max_queued < 1:
            problems.append(f"bad max_queued {self.max_queued}: expected >= 1")
        if self.protocol not in PROTOCOLS:
            problems.append(f"bad protocol {self.protocol!r}: expected 3.1.1 or 5")
        if not 0 < self.reconnect_initial_s <= self.reconnect_max_s:
            problems.append("reconnect delays: expected 0 < initial <= max")
        if not 0 <= self.reconnect_jitter <= 1:
            problems.append(f"bad reconnect jitter {self.reconnect_jitter}: expected 0-1")
        if self.stats_interval_s <= 0:
            problems.append("stats_interval_s must be > 0")
        if problems:
            raise StreamdetError("mqtt: " + "; ".join(problems))

    @property
    def broker_port(self) -> int:
        """The port connected to: the configured one, else 1883 (8883 with TLS)."""
        if self.port is not None:
            return self.port
        return DEFAULT_TLS_PORT if self.tls is not None else DEFAULT_PORT

    @property
    def broker(self) -> str:
        """``host:port`` for log lines (never credentials)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls is not None else 'mqtt'}://{host}:{self.broker_port}"
