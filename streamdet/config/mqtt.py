"""The ``mqtt:`` section: publish detections into an MQTT broker through the bridge process.

Validated here (pydantic, like every section) and turned into the bridge's plain settings
(:class:`streamdet_client.mqtt.BridgeSettings`) by :meth:`MqttConfig.bridge_settings`; the names
that end up in topics are checked by the same functions the standalone bridge uses. The password is
a ``SecretStr``: no ``repr``, error message or log line shows it (write it as ``${VAR}``).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator

from streamdet.config.paths import _base_dir, _resolve_path
from streamdet.config.problems import _cross_error
from streamdet_client.mqtt.settings import (
    BridgeSettings,
    TlsSettings,
    gateway_id_problem,
    topic_prefix_problem,
    topic_safe_hostname,
)

_MODEL_CONFIG = ConfigDict(
    extra="forbid", frozen=True, hide_input_in_errors=True, allow_inf_nan=False, validate_default=False
)


def default_gateway_id() -> str:
    """This host's name, made topic-safe (characters outside ``[A-Za-z0-9_.-]`` become '-')."""
    return topic_safe_hostname(socket.gethostname())


class MqttTlsConfig(BaseModel):
    """TLS to the broker; the broker's host name is verified unless ``insecure``."""

    model_config = _MODEL_CONFIG

    ca_file: Path | None = Field(None, description="CA certificate(s) of the broker; null = the system's CAs.")
    cert_file: Path | None = Field(None, description="Client certificate (with key_file); relative to the config.")
    key_file: Path | None = Field(None, description="The client certificate's key.")
    insecure: bool = Field(False, description="Skip the host name check (the certificate is still verified).")

    @field_validator("ca_file", "cert_file", "key_file", mode="after")
    @classmethod
    def _relative_to_config(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        return None if v is None else _resolve_path(v, _base_dir(info))

    @model_validator(mode="after")
    def _cert_and_key(self) -> MqttTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            missing = "key_file" if self.key_file is None else "cert_file"
            raise _cross_error([((missing,), "cert_file and key_file go together (both or neither)", None)])
        return self


class MqttReconnectConfig(BaseModel):
    """Backoff between connection attempts: doubling from initial_s to max_s, each delay times 1 +- jitter."""

    model_config = _MODEL_CONFIG

    initial_s: float = Field(1.0, gt=0, description="First delay.")
    max_s: float = Field(30.0, gt=0, description="Delay cap.")
    jitter: float = Field(0.5, ge=0, le=1, description="Random +- fraction of each delay (no fleet-wide lock-step).")

    @model_validator(mode="after")
    def _initial_le_max(self) -> MqttReconnectConfig:
        if self.initial_s > self.max_s:
            raise _cross_error([(("initial_s",), f"must be <= max_s ({self.max_s:g})", None)])
        return self


class MqttConfig(BaseModel):
    """Detections into an MQTT broker (topics in docs/wire.md; fleets in docs/fleet.md)."""

    model_config = _MODEL_CONFIG

    host: str = Field(description="The broker's host name or address.")
    port: int | None = Field(None, ge=1, le=65535, description="null = 1883, or 8883 with tls.")
    gateway_id: str = Field(default_factory=default_gateway_id,
                            description="This gateway's topic level, unique per gateway; default the host name.")
    topic_prefix: str = Field("streamdet", description="First topic level(s).")
    username: str | None = Field(None, description="Broker user name (with password).")
    password: SecretStr | None = Field(None, description="Broker password; write it as ${VAR}. Never logged.")
    tls: MqttTlsConfig | None = Field(None, description="TLS to the broker; null = plain TCP.")
    qos: Literal[0, 1] = Field(0, description="QoS of the detections (states and availability use 1).")
    max_queued: int = Field(1000, ge=1, le=1_000_000,
                            description="Messages kept while the broker is unreachable; then the oldest are dropped.")
    protocol: Literal["3.1.1", "5"] = Field("3.1.1", description="MQTT protocol version.")
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive; a dead link is noticed within 1.5x.")
    stats_interval_s: float = Field(10.0, gt=0, description="Seconds between <prefix>/<gateway_id>/stats messages.")
    reconnect: MqttReconnectConfig = Field(default_factory=MqttReconnectConfig)

    @field_validator("host", mode="after")
    @classmethod
    def _check_host(cls, v: str) -> str:
        if not v or any(c.isspace() for c in v) or "/" in v:
            raise ValueError(f"bad host {v[:80]!r}: expected a host name or address (no scheme, no port)")
        return v

    @field_validator("gateway_id", "topic_prefix", mode="after")
    @classmethod
    def _check_topic_part(cls, v: str, info: ValidationInfo) -> str:
        check = gateway_id_problem if info.field_name == "gateway_id" else topic_prefix_problem
        problem = check(v)
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v  # `protocol: 5`

    @model_validator(mode="after")
    def _user_and_password(self) -> MqttConfig:
        if (self.username is None) != (self.password is None):
            missing = "password" if self.password is None else "username"
            raise _cross_error([((missing,), "username and password go together (both or neither)", None)])
        return self

    def bridge_settings(self) -> BridgeSettings:
        """The bridge's settings for this section."""
        tls = None if self.tls is None else TlsSettings(self.tls.ca_file, self.tls.cert_file, self.tls.key_file,
                                                        self.tls.insecure)
        return BridgeSettings(
            host=self.host, port=self.port, gateway_id=self.gateway_id, topic_prefix=self.topic_prefix,
            username=self.username, password=None if self.password is None else self.password.get_secret_value(),
            tls=tls, qos=self.qos, max_queued=self.max_queued, protocol=self.protocol, keepalive_s=self.keepalive_s,
            reconnect_initial_s=self.reconnect.initial_s, reconnect_max_s=self.reconnect.max_s,
            reconnect_jitter=self.reconnect.jitter, stats_interval_s=self.stats_interval_s,
        )
