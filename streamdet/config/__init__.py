"""Daemon configuration: the YAML schema, its validation, and error messages that point at lines.

``load_config(path)`` reads a YAML file, substitutes ``${VAR}`` from the environment, resolves
relative paths against the file's folder and validates everything with pydantic. Any problem
becomes one :class:`~streamdet.errors.ConfigError` whose message lists every error as
``key.path (line N): what is wrong``, ready to print.

Camera URLs carry passwords; :func:`redact_url` hides them and every message, ``repr`` and
summary produced here uses it. This module imports only pydantic and yaml (the supervisor and
the decoders import it; they must stay free of torch).
"""

from streamdet.config.loader import load_config, parse_config
from streamdet.config.paths import NETWORK_SCHEMES
from streamdet.config.schema import (
    BatchingConfig,
    CameraConfig,
    Config,
    CurveConfig,
    DecodeConfig,
    MetricsConfig,
    ModelConfig,
    PublishConfig,
    ReconnectConfig,
    RingConfig,
    SupervisorConfig,
    ThreadsConfig,
)
from streamdet.config.summary import summarize
from streamdet.redact import redact_url

__all__ = [
    "BatchingConfig",
    "CameraConfig",
    "Config",
    "CurveConfig",
    "DecodeConfig",
    "MetricsConfig",
    "NETWORK_SCHEMES",
    "ModelConfig",
    "PublishConfig",
    "ReconnectConfig",
    "RingConfig",
    "SupervisorConfig",
    "ThreadsConfig",
    "load_config",
    "parse_config",
    "redact_url",
    "summarize",
]
