"""Daemon configuration: the YAML schema, its validation, and error messages that point at lines.

``load_config(path)`` reads a YAML file, substitutes ``${VAR}`` from the environment, resolves
relative paths against the file's folder and validates everything with pydantic. Any problem
becomes one :class:`~streamdet.errors.ConfigError` whose message lists every error as
``key.path (line N): what is wrong``, ready to print.

Camera URLs carry passwords; :func:`redact_url` hides them and every message, ``repr`` and
summary produced here uses it. This module imports only pydantic and yaml (the supervisor and
the decoders import it; they must stay free of torch).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from streamdet.errors import ConfigError
from streamdet.redact import redact_url

__all__ = [
    "BatchingConfig",
    "CameraConfig",
    "Config",
    "DecodeConfig",
    "MetricsConfig",
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

NETWORK_SCHEMES = ("rtsp", "rtsps", "http", "https", "rtmp")
"""URL schemes a camera may use besides local files (``file://`` or a plain path)."""

_CROSS = "streamdet_cross"  # pydantic error type carrying located cross-field problems
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_MISSING_COLON_RE = re.compile(r"^(rtsps?|https?|rtmp|file)/", re.IGNORECASE)  # "rtsp//x"
_CAMERA_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_DEVICE_RE = re.compile(r"^(cpu|cuda(?::(\d+))?)$")
_HOST_RE = re.compile(r"^(\*|\[[0-9A-Fa-f:.%A-Za-z]+\]|[A-Za-z0-9._-]+)$")
_ENV_RE = re.compile(r"\$\$\{|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)\}|\$\{")
_MAX_IPC_PATH = 107  # sun_path is 108 bytes on Linux, including the terminating NUL


# ----------------------------------------------------------------------------------------------
# URL helpers


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


# ----------------------------------------------------------------------------------------------
# Schema


_MODEL_CONFIG = ConfigDict(
    extra="forbid", frozen=True, hide_input_in_errors=True, allow_inf_nan=False, validate_default=False
)


class _Base(BaseModel):
    """Common settings: unknown keys rejected, immutable, no input values echoed in errors."""

    model_config = _MODEL_CONFIG


def _cross_error(
    problems: list[tuple[tuple[str | int, ...], str, tuple[str | int, ...] | None]],
) -> PydanticCustomError:
    """A pydantic error carrying cross-field problems as (path, message, related path).

    Paths are relative to the model that raises it; ``parse_config`` turns them into lines.
    """
    summary = "; ".join(
        _loc_str(p) + ": " + m + (f" (also {_loc_str(r)})" if r else "") for p, m, r in problems
    )
    return PydanticCustomError(_CROSS, "{summary}", {"summary": summary, "problems": problems})


class ModelConfig(_Base):
    """The YOLOv5 checkpoint and the inference settings applied to every camera."""

    weights: Path = Field(description="Ultralytics YOLOv5 .pt checkpoint; relative to the config file.")
    img_size: int | None = Field(
        None, ge=32, le=4096,
        description="Inference size (long side), multiple of 32; null = the checkpoint's training size, else 640.",
    )
    conf_thres: float = Field(0.25, gt=0, lt=1, description="Minimum object confidence (obj * cls).")
    iou_thres: float = Field(0.45, gt=0, lt=1, description="NMS IoU threshold.")
    classes: tuple[Annotated[int, Field(ge=0)], ...] | None = Field(
        None, description="Class ids to keep; null keeps all."
    )
    max_det: int = Field(300, ge=1, description="Maximum detections per frame after NMS.")
    half: bool = Field(False, description="FP16 inference; needs every device to be CUDA.")
    backend: Literal["auto", "torch", "onnxruntime", "openvino"] = Field(
        "auto", description="Inference backend; auto = the fastest installed one for the device."
    )
    export_cache: Path | None = Field(
        None, description="Directory for ONNX exports (onnxruntime/openvino); null = ~/.cache/streamdet/onnx."
    )

    @field_validator("export_cache", mode="after")
    @classmethod
    def _cache_path(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        return None if v is None else _resolve_path(v, _base_dir(info))

    @field_validator("weights", mode="after")
    @classmethod
    def _weights_exist(cls, v: Path, info: ValidationInfo) -> Path:
        path = _resolve_path(v, _base_dir(info))
        if not path.is_file():
            raise ValueError(f"file not found: {path}" if not path.exists() else f"not a file: {path}")
        return path

    @field_validator("img_size", mode="after")
    @classmethod
    def _multiple_of_32(cls, v: int | None) -> int | None:
        if v is not None and v % 32:
            raise ValueError(f"must be a multiple of 32 (got {v}; try {max(32, round(v / 32) * 32)})")
        return v

    @field_validator("classes", mode="after")
    @classmethod
    def _classes_not_empty(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is not None and not v:
            raise ValueError("empty list would drop every detection; use null to keep all classes")
        return v


def _check_device(v: Any) -> str:
    """Accept 'cpu', 'cuda' (meaning cuda:0) or 'cuda:N'; return the canonical spelling."""
    if not isinstance(v, str):
        raise ValueError("expected 'cpu', 'cuda' or 'cuda:N'")
    m = _DEVICE_RE.match(v.strip().lower())
    if m is None:
        raise ValueError(f"unknown device {v!r}: expected 'cpu', 'cuda' or 'cuda:N'")
    if m.group(1) == "cpu":
        return "cpu"
    return f"cuda:{int(m.group(2) or 0)}"


class PublishConfig(_Base):
    """Where detections are published (ZeroMQ PUB via the supervisor's XSUB/XPUB proxy)."""

    endpoint: str = Field("tcp://127.0.0.1:5555", description="Public endpoint: tcp://host:port or ipc://path.")
    hwm: int = Field(1000, ge=1, description="Send high-water mark per subscriber (messages); then drop.")
    stats_interval_s: float = Field(5.0, gt=0, description="Seconds between stats/ messages.")

    @field_validator("endpoint", mode="after")
    @classmethod
    def _check_endpoint(cls, v: str, info: ValidationInfo) -> str:
        if v.startswith("tcp://"):
            _split_tcp(v)
            return v
        if v.startswith("ipc://"):
            path = v[len("ipc://") :]
            if not path or any(c.isspace() or c == "\0" for c in path):
                raise ValueError(f"bad endpoint {v!r}: expected ipc:///path/to/socket")
            if not path.startswith("@"):  # '@name' is the Linux abstract namespace
                path = str(_resolve_path(path, _base_dir(info)))
            if len(path.encode()) > _MAX_IPC_PATH:
                raise ValueError(f"ipc path is {len(path.encode())} bytes; Unix sockets allow {_MAX_IPC_PATH}")
            return "ipc://" + path
        if v.startswith("inproc://"):
            raise ValueError("inproc:// works only inside one process; subscribers need tcp:// or ipc://")
        raise ValueError(f"bad endpoint {v!r}: expected tcp://host:port or ipc://path")

    @property
    def tcp_port(self) -> int | None:
        """The TCP port of a tcp:// endpoint, else None."""
        return _split_tcp(self.endpoint)[1] if self.endpoint.startswith("tcp://") else None

    @property
    def tcp_host(self) -> str | None:
        """The host/interface of a tcp:// endpoint, else None."""
        return _split_tcp(self.endpoint)[0] if self.endpoint.startswith("tcp://") else None


def _split_tcp(endpoint: str) -> tuple[str, int]:
    """Split ``tcp://host:port``; ValueError unless host is sane and port is 1..65535."""
    host, sep, port = endpoint[len("tcp://") :].rpartition(":")
    if not sep or not host or not _HOST_RE.match(host):
        raise ValueError(f"bad endpoint {endpoint!r}: expected tcp://host:port (IPv6 as tcp://[::1]:port)")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"bad endpoint {endpoint!r}: port must be a number 1..65535 "
                         "(subscribers need a fixed port)")
    return host, int(port)


class CameraConfig(_Base):
    """One video source. After validation ``url`` is a network URL or an absolute file path."""

    id: str = Field(description="Unique id [A-Za-z0-9_-]{1,64}; used in topics det/<id>/.")
    url: str = Field(description="rtsp(s)://, http(s)://, rtmp://, file:// or a local path.")
    enabled: bool = Field(True, description="Disabled cameras are validated but not opened.")
    max_fps: float | None = Field(None, gt=0, description="Drop frames above this rate; null = all.")
    rtsp_transport: Literal["tcp", "udp"] = Field("tcp", description="RTSP transport (rtsp/rtsps only).")
    realtime: bool = Field(True, description="Files: pace at their own fps (network sources ignore it).")
    loop: bool = Field(False, description="Files: restart at the end (network sources ignore it).")

    @field_validator("id", mode="before")
    @classmethod
    def _int_id(cls, v: Any) -> Any:
        # `id: 101` is common in YAML; treat integers as their decimal string
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("id", mode="after")
    @classmethod
    def _check_id(cls, v: str) -> str:
        if not _CAMERA_ID_RE.match(v):
            raise ValueError(f"bad camera id {v[:80]!r}: use 1-64 characters from A-Z a-z 0-9 _ -")
        return v

    @field_validator("url", mode="after")
    @classmethod
    def _check_url(cls, v: str, info: ValidationInfo) -> str:
        return _normalize_camera_url(v, _base_dir(info))

    @model_validator(mode="after")
    def _file_exists(self) -> CameraConfig:
        # disabled cameras are often disabled precisely because their file or camera is gone
        if self.enabled and self.is_file and not Path(self.url).is_file():
            what = "not a file" if Path(self.url).exists() else "file not found"
            raise _cross_error([(("url",), f"{what}: {self.url}", None)])
        return self

    @property
    def is_file(self) -> bool:
        """True when the source is a local file (url is then an absolute path)."""
        return not _url_has_scheme(self.url)

    @property
    def redacted_url(self) -> str:
        """The url with credentials replaced by ``***``: the only form fit for logs."""
        return redact_url(self.url)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """Repr/str show the redacted url, never the password."""
        for name, value in super().__repr_args__():
            yield name, (self.redacted_url if name == "url" else value)


class BatchingConfig(_Base):
    """How a worker groups frames of several cameras into one inference batch."""

    max_batch: int = Field(8, ge=1, le=256, description="Frames per inference call at most.")
    max_wait_ms: float = Field(10.0, ge=0, description="Wait this long for more frames before running.")


class RingConfig(_Base):
    """The per-camera shared-memory frame ring between decoder and worker."""

    slots: int = Field(3, ge=2, le=64, description="Frames buffered per camera (newest wins).")
    max_width: int = Field(1920, ge=32, le=8192, description="Larger frames are downscaled to fit.")
    max_height: int = Field(1080, ge=32, le=8192, description="Larger frames are downscaled to fit.")

    @property
    def slot_bytes(self) -> int:
        """Pixel bytes of one slot (YUV 4:2:0, 1.5 bytes per pixel)."""
        return self.max_width * (self.max_height * 3 // 2)


class ThreadsConfig(_Base):
    """CPU threads: how the CPUs this process may use are shared between decoding and inference.

    ``auto`` budgets from ``os.sched_getaffinity`` (see :mod:`streamdet.cpu_budget`): the usable
    CPUs, spent on concurrent single-threaded inference lanes first.
    Each number here overrides the automatic choice.
    """

    inference: int | Literal["auto"] = Field(
        "auto", description="Intra-op threads of each inference lane of a CPU worker; auto = from the CPU budget."
    )
    lanes: int | Literal["auto"] = Field(
        "auto", description="Batches a CPU worker infers concurrently (one backend instance each); auto = budget."
    )

    @field_validator("inference", "lanes", mode="after")
    @classmethod
    def _positive(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("must be >= 1 or 'auto'")
        return v


class DecodeConfig(_Base):
    """Decoder processes: grouping and timeouts."""

    cameras_per_process: int = Field(1, ge=1, description="Cameras decoded as threads of one process.")
    open_timeout_s: float = Field(10.0, gt=0, description="Give up opening a source after this long.")
    read_timeout_s: float = Field(10.0, gt=0, description="Give up a blocking read after this long.")
    stall_timeout_s: float = Field(10.0, gt=0, description="No frame for this long: reopen.")
    threads: int | Literal["auto"] = Field(
        "auto", description="FFmpeg threads per camera; auto = 1 when cameras >= CPUs, else FFmpeg's choice."
    )

    @field_validator("threads", mode="after")
    @classmethod
    def _threads_positive(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("must be >= 1 or 'auto'")
        return v


class ReconnectConfig(_Base):
    """Exponential backoff between attempts to reopen a failed source."""

    initial_s: float = Field(1.0, gt=0, description="First delay.")
    max_s: float = Field(30.0, gt=0, description="Delay cap (the delay doubles up to this).")
    jitter: float = Field(0.2, ge=0, le=1, description="Random +- fraction applied to each delay.")

    @model_validator(mode="after")
    def _initial_le_max(self) -> ReconnectConfig:
        if self.initial_s > self.max_s:
            raise _cross_error([(("initial_s",), f"must be <= max_s ({self.max_s:g})", None)])
        return self


class SupervisorConfig(_Base):
    """Restart policy for decoder and worker child processes."""

    restart_limit: int = Field(5, ge=0, description="Restarts allowed within restart_window_s.")
    restart_window_s: float = Field(60.0, gt=0, description="Window for restart_limit.")
    hang_timeout_s: float = Field(60.0, gt=0, description="No heartbeat this long: kill and restart.")
    stop_timeout_s: float = Field(8.0, gt=0, description="Grace period on shutdown before SIGKILL.")


class MetricsConfig(_Base):
    """Optional Prometheus text exposition endpoint."""

    port: int | None = Field(None, ge=1, le=65535, description="null disables the endpoint.")
    host: str = Field("127.0.0.1", description="Address to listen on.")

    @field_validator("host", mode="after")
    @classmethod
    def _check_host(cls, v: str) -> str:
        if not v or not re.match(r"^(\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f:.]+|[A-Za-z0-9._-]+)$", v):
            raise ValueError(f"bad host {v[:80]!r}: expected an IP address or host name")
        return v


class Config(_Base):
    """The whole daemon configuration (picklable: passed to spawned child processes)."""

    model: ModelConfig
    devices: tuple[str, ...] = Field(("cpu",), description="One worker per device.")
    publish: PublishConfig = Field(default_factory=PublishConfig)
    cameras: tuple[CameraConfig, ...]
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    ring: RingConfig = Field(default_factory=RingConfig)
    decode: DecodeConfig = Field(default_factory=DecodeConfig)
    reconnect: ReconnectConfig = Field(default_factory=ReconnectConfig)
    supervisor: SupervisorConfig = Field(default_factory=SupervisorConfig)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    threads: ThreadsConfig = Field(default_factory=ThreadsConfig)

    @field_validator("cameras", mode="before")
    @classmethod
    def _cameras_not_empty(cls, v: Any) -> Any:
        # checked before validation: pydantic's min_length counts only the items that validated
        if isinstance(v, list | tuple) and not v:
            raise ValueError("must list at least one camera")
        return v

    @field_validator("devices", mode="before")
    @classmethod
    def _device_list(cls, v: Any) -> Any:
        if isinstance(v, str):  # `devices: cuda:0` means a list of one
            v = [v]
        if isinstance(v, list | tuple):
            if not v:
                raise ValueError("must list at least one device, e.g. [cpu]")
            out: list[Any] = []
            for i, d in enumerate(v):
                try:
                    out.append(_check_device(d))
                except ValueError as e:
                    raise _cross_error([((i,), str(e), None)]) from None
            return out
        return v

    @field_validator("devices", mode="after")
    @classmethod
    def _unique_devices(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for i, d in enumerate(v):
            if d in v[:i]:
                raise _cross_error([((i,), f"duplicate device {d!r}", (v.index(d),))])
        return v

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        problems: list[tuple[tuple[str | int, ...], str, tuple[str | int, ...] | None]] = []
        first: dict[str, int] = {}
        for i, cam in enumerate(self.cameras):
            if cam.id in first:
                problems.append(
                    (("cameras", i, "id"), f"duplicate camera id {cam.id!r}", ("cameras", first[cam.id], "id"))
                )
            else:
                first[cam.id] = i
        if not any(cam.enabled for cam in self.cameras):
            problems.append((("cameras",), "no enabled camera (set enabled: true on at least one)", None))
        if self.model.half and "cpu" in self.devices:
            # the Detector refuses FP16 on CPU; fail here, at `streamdet check`, not in a restart loop
            problems.append((("model", "half"), "FP16 needs CUDA devices, but devices includes 'cpu'", ("devices",)))
        port, host = self.publish.tcp_port, self.publish.tcp_host
        if self.metrics.port is not None and self.metrics.port == port:
            wild = {"*", "0.0.0.0", "::", "[::]"}
            if host == self.metrics.host or host in wild or self.metrics.host in wild:
                problems.append(
                    (("metrics", "port"), f"port {port} is also used by publish.endpoint", ("publish", "endpoint"))
                )
        if problems:
            raise _cross_error(problems)
        return self

    @property
    def enabled_cameras(self) -> tuple[CameraConfig, ...]:
        """The cameras to open, in file order."""
        return tuple(cam for cam in self.cameras if cam.enabled)


# ----------------------------------------------------------------------------------------------
# YAML with locations


@dataclass
class _Node:
    """A YAML node with its children, for mapping pydantic error locations to lines."""

    node: yaml.Node
    entries: dict[Any, tuple[yaml.Node, _Node]] = field(default_factory=dict)  # mapping key -> (key node, value)
    items: list[_Node] = field(default_factory=list)  # sequence items

    @property
    def line(self) -> int:
        """1-based line where the node starts."""
        return self.node.start_mark.line + 1


@dataclass
class _Problem:
    """One error: key path, line (1-based, or None), message."""

    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        if self.path:
            where = f"{self.path} (line {self.line})" if self.line else self.path
        else:
            where = f"line {self.line}" if self.line else "top level"
        return f"{where}: {self.message}"


def _loc_str(loc: tuple[Any, ...]) -> str:
    """('cameras', 1, 'url') -> 'cameras[1].url'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _key_segment(key: Any) -> str:
    """Path segment of a mapping key: '.name' (non-string keys spelled as YAML would)."""
    if isinstance(key, str):
        return f".{key}"
    if key is None:
        return ".null"
    if isinstance(key, bool):
        return ".true" if key else ".false"
    return f".{key}"


def _index(loader: yaml.SafeLoader, node: yaml.Node, ancestors: frozenset[int] = frozenset()) -> _Node:
    """Build the location tree of an already-constructed document (merge keys are flattened)."""
    out = _Node(node)
    if id(node) in ancestors:  # recursive alias: stop
        return out
    ancestors = ancestors | {id(node)}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            try:
                key = loader.construct_object(key_node, deep=True)
                hash(key)
            except Exception:  # unhashable or odd key: pydantic reports the mapping itself
                continue
            out.entries[key] = (key_node, _index(loader, value_node, ancestors))
    elif isinstance(node, yaml.SequenceNode):
        out.items = [_index(loader, item, ancestors) for item in node.value]
    return out


def _duplicate_keys(node: yaml.Node, loc: tuple[Any, ...], seen: set[int], out: list[_Problem]) -> None:
    """Report keys defined twice in one mapping (YAML silently keeps the last one)."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[tuple[str, Any], int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            if isinstance(key_node, yaml.ScalarNode):
                key = (key_node.tag, key_node.value)
                line = key_node.start_mark.line + 1
                if key in first:
                    out.append(_Problem(_loc_str((*loc, key_node.value)), line,
                                        f"duplicate key (first defined on line {first[key]})"))
                else:
                    first[key] = line
                _duplicate_keys(value_node, (*loc, key_node.value), seen, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _duplicate_keys(item, (*loc, i), seen, out)


@dataclass
class _Interpolation:
    """Bookkeeping of ``${VAR}`` substitution: errors, and what to scrub from later messages."""

    errors: list[_Problem] = field(default_factory=list)
    error_paths: set[tuple[Any, ...]] = field(default_factory=set)
    secrets: dict[tuple[Any, ...], list[tuple[str, str]]] = field(default_factory=dict)  # loc -> [(value, ref)]


def _interpolate(data: Any, idx: _Node | None, env: Mapping[str, str], loc: tuple[Any, ...],
                 result: _Interpolation, ancestors: frozenset[int] = frozenset()) -> Any:
    """Return a copy of ``data`` with ``${VAR}`` replaced in every string value."""
    if isinstance(data, str):
        return _interpolate_str(data, idx, env, loc, result)
    if id(data) in ancestors:
        return data
    ancestors = ancestors | {id(data)}
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            entry = idx.entries.get(key) if idx is not None else None
            out[key] = _interpolate(value, entry[1] if entry else None, env, (*loc, key), result, ancestors)
        return out
    if isinstance(data, list):
        items = idx.items if idx is not None else []
        return [
            _interpolate(v, items[i] if i < len(items) else None, env, (*loc, i), result, ancestors)
            for i, v in enumerate(data)
        ]
    return data


def _interpolate_str(text: str, idx: _Node | None, env: Mapping[str, str], loc: tuple[Any, ...],
                     result: _Interpolation) -> str:
    """Substitute one string; record unset variables as errors and resolved values for scrubbing."""
    if "${" not in text:
        return text
    line = idx.line if idx is not None else None
    pieces: list[str] = []
    pos = 0
    used: list[tuple[str, str]] = []
    for m in _ENV_RE.finditer(text):
        pieces.append(text[pos : m.start()])
        pos = m.end()
        token, name = m.group(0), m.group("name")
        if token == "$${":
            pieces.append("${")
        elif name is None:
            result.errors.append(_Problem(_loc_str(loc), line, "bad environment reference: write ${NAME} "
                                          "(letters, digits, _), or $${ for a literal ${"))
            result.error_paths.add(loc)
            return text
        elif name not in env:
            result.errors.append(_Problem(_loc_str(loc), line, f"environment variable {name} is not set"))
            result.error_paths.add(loc)
            pieces.append(token)
        else:
            value = env[name]
            pieces.append(value)
            used.append((value, "${" + name + "}"))
    pieces.append(text[pos:])
    resolved = "".join(pieces)
    if used:
        result.secrets[loc] = [(resolved, text), *used]
    return resolved


def _scrub(message: str, replacements: list[tuple[str, str]]) -> str:
    """Replace resolved environment values in ``message`` by the ``${VAR}`` text they came from."""
    for value, ref in sorted(replacements, key=lambda r: -len(r[0])):
        if len(value) >= 3:  # shorter values would garble the message; URL redaction still applies
            message = message.replace(value, ref)
    return message


# ----------------------------------------------------------------------------------------------
# Pydantic errors -> located problems


_SECTIONS: dict[str, type[BaseModel]] = {
    "model": ModelConfig,
    "publish": PublishConfig,
    "batching": BatchingConfig,
    "ring": RingConfig,
    "decode": DecodeConfig,
    "reconnect": ReconnectConfig,
    "supervisor": SupervisorConfig,
    "metrics": MetricsConfig,
    "threads": ThreadsConfig,
}


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class whose keys live at ``loc`` (for 'did you mean' hints)."""
    if not loc:
        return Config
    if loc[0] == "cameras" and len(loc) == 2:
        return CameraConfig
    if len(loc) == 1:
        return _SECTIONS.get(loc[0])
    return None


def _type_name(value: Any) -> str:
    """A YAML-flavoured name for the type of ``value`` (never the value itself)."""
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


def _message(err: Mapping[str, Any]) -> str:
    """A short, friendly message for one pydantic error (no input values echoed)."""
    kind, msg, loc = err["type"], err["msg"], err["loc"]
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        model = _model_at(tuple(loc[:-1]))
        key = loc[-1]
        if model is None:
            return "unknown key"
        known = list(model.model_fields)
        close = difflib.get_close_matches(str(key), known, n=1)
        return f"unknown key (did you mean {close[0]!r}?)" if close else f"unknown key (valid: {', '.join(known)})"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping of keys, got {_type_name(err.get('input'))}"
    if kind in ("path_type", "path_parsing"):
        return f"expected a file path, got {_type_name(err.get('input'))}"
    if kind == "dict_keys_type" or msg == "Keys should be strings":
        return "keys must be strings"
    if kind in ("list_type", "tuple_type"):
        return f"expected a list, got {_type_name(err.get('input'))}"
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg


def _locate(root: _Node, loc: tuple[Any, ...], kind: str) -> tuple[str, int | None, bool]:
    """Map a pydantic ``loc`` to (key path, line, whether the key is in the file).

    The line is the key's for unknown keys and for mapping/list values, the value's for scalar
    values, and the parent mapping's (its key's line when it has one) for missing keys.
    """
    cur: _Node | None = root
    key_line: int | None = None  # line of the key through which `cur` was reached
    parent_line: int | None = root.line
    parts: list[str] = []
    for part in loc:
        if cur is None:
            parts.append(f"[{part}]" if isinstance(part, int) else _key_segment(part))
            continue
        is_map = isinstance(cur.node, yaml.MappingNode)
        if is_map and part not in cur.entries:  # pydantic spells non-string keys as str(key)
            part = next((k for k in cur.entries if not isinstance(k, str) and str(k) == part), part)
        segment = _key_segment(part) if is_map or not isinstance(part, int) else f"[{part}]"
        if is_map and part in cur.entries:
            parent_line = key_line if key_line is not None else cur.line
            key_node, child = cur.entries[part]
            key_line, cur = key_node.start_mark.line + 1, child
        elif isinstance(cur.node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(cur.items):
            parent_line = key_line if key_line is not None else cur.line
            key_line, cur = None, cur.items[part]
        elif not is_map and isinstance(part, str):
            continue  # a pydantic-internal part (union member tag); not a key in the file
        else:
            parent_line = key_line if key_line is not None else cur.line
            cur = None
        parts.append(segment)
    path = "".join(parts).removeprefix(".")
    if cur is None:
        return path, parent_line, False
    if kind == "extra_forbidden":
        return path, key_line or cur.line, True
    if isinstance(cur.node, yaml.ScalarNode):
        return path, cur.line, True
    return path, key_line or cur.line, True


def _problems_from(exc: ValidationError, root: _Node, interp: _Interpolation) -> list[_Problem]:
    """Turn pydantic errors into located problems, scrubbing interpolated secrets."""
    out: list[_Problem] = []
    for err in exc.errors(include_url=False):
        base = tuple(err["loc"])
        if err["type"] == _CROSS:
            ctx = err.get("ctx") or {}
            entries = [((*base, *p), m, (*base, *r) if r else None) for p, m, r in ctx.get("problems", [])]
        else:
            entries = [(base, _message(err), None)]
        for loc, msg, related in entries:
            if loc in interp.error_paths and err["type"] not in ("missing", "extra_forbidden"):
                continue  # already reported: unset variable
            path, line, _found = _locate(root, loc, err["type"])
            if related is not None:
                rpath, rline, rfound = _locate(root, related, "")
                msg += f" (also {rpath}, line {rline})" if rfound else f" (also {rpath})"
            scrub = [r for sl, reps in interp.secrets.items() if sl[: len(loc)] == loc or loc[: len(sl)] == sl
                     for r in reps]
            out.append(_Problem(path, line, _scrub(msg, scrub)))
    return out


def _raw_duplicate_ids(data: Mapping[str, Any], root: _Node, interp: _Interpolation) -> list[_Problem]:
    """Duplicate camera ids, found in the raw data so they are reported even when other
    validation errors keep pydantic's cross-field check from running."""
    cams = data.get("cameras")
    if not isinstance(cams, list):
        return []
    out: list[_Problem] = []
    first: dict[str, int] = {}
    for i, cam in enumerate(cams):
        cid = cam.get("id") if isinstance(cam, dict) else None
        if isinstance(cid, int) and not isinstance(cid, bool):
            cid = str(cid)
        if not isinstance(cid, str):
            continue
        if cid in first:
            path, line, _ = _locate(root, ("cameras", i, "id"), "")
            rpath, rline, _ = _locate(root, ("cameras", first[cid], "id"), "")
            msg = f"duplicate camera id {cid!r} (also {rpath}, line {rline})"
            out.append(_Problem(path, line, _scrub(msg, interp.secrets.get(("cameras", i, "id"), []))))
        else:
            first[cid] = i
    return out


def _fail(source: str, problems: list[_Problem]) -> ConfigError:
    """One ConfigError listing every problem, sorted by line; first line summarises."""
    unique: list[_Problem] = []
    for p in sorted(problems, key=lambda p: (p.line or 0, p.path)):
        if all(str(p) != str(q) for q in unique):
            unique.append(p)
    if len(unique) == 1:
        return ConfigError(f"{source}: {unique[0]}")
    lines = [f"{source}: {len(unique)} configuration errors:"] + [f"  {p}" for p in unique]
    return ConfigError("\n".join(lines))


# ----------------------------------------------------------------------------------------------
# Public entry points


def parse_config(text: str, base_dir: Path, env: Mapping[str, str] | None = None,
                 source: str = "<string>") -> Config:
    """Parse and validate YAML ``text``; relative paths resolve against ``base_dir``.

    ``env`` supplies ``${VAR}`` values (default: ``os.environ``). Raises ConfigError.
    """
    env = os.environ if env is None else env
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError(f"{source}: configuration is empty (expected a mapping with at least "
                              "'model' and 'cameras')")
        problems: list[_Problem] = []
        _duplicate_keys(node, (), set(), problems)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = " ".join(s for s in (e.context, e.problem) if s)
        raise ConfigError(f"{source}: invalid YAML{where}: {what}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: invalid YAML: {e}") from None
    finally:
        loader.dispose()
    if data is None:  # "---" alone, or "null"
        raise ConfigError(f"{source}: configuration is empty (expected a mapping with at least "
                          "'model' and 'cameras')")
    if not isinstance(data, dict):
        raise ConfigError(f"{source} (line {node.start_mark.line + 1}): the top level must be a mapping "
                          f"of keys (model:, cameras:, ...), got {_type_name(data)}")
    root = _index(loader, node)
    interp = _Interpolation()
    data = _interpolate(data, root, env, (), interp)
    problems.extend(interp.errors)
    config: Config | None = None
    try:
        config = Config.model_validate(data, context={"base_dir": Path(base_dir).absolute()})
    except ValidationError as e:
        problems.extend(_problems_from(e, root, interp))
        problems.extend(_raw_duplicate_ids(data, root, interp))
    if problems or config is None:
        raise _fail(source, problems)
    return config


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate the YAML file at ``path``; raises ConfigError with key paths and lines."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    return parse_config(text, path.absolute().parent, env=env, source=str(path))


def _fmt_s(seconds: float) -> str:
    """Seconds for humans: 10 -> '10 s'."""
    return f"{seconds:g} s"


def summarize(config: Config) -> str:
    """A multi-line human summary (``streamdet check``); URLs are redacted."""
    m = config.model
    classes = "all" if m.classes is None else ",".join(map(str, m.classes))
    enabled = len(config.enabled_cameras)
    ring = config.ring
    per_cam = ring.slots * ring.slot_bytes
    lines = [
        f"model:      {m.weights}",
        f"            img_size={m.img_size if m.img_size is not None else 'from the checkpoint'} "
        f"conf_thres={m.conf_thres:g} iou_thres={m.iou_thres:g} "
        f"classes={classes} max_det={m.max_det} half={'yes' if m.half else 'no'} backend={m.backend}",
        f"devices:    {', '.join(config.devices)} ({len(config.devices)} worker"
        f"{'s' if len(config.devices) != 1 else ''})",
        f"publish:    {config.publish.endpoint} (hwm {config.publish.hwm}, stats every "
        f"{_fmt_s(config.publish.stats_interval_s)})",
        "metrics:    " + ("off" if config.metrics.port is None
                          else f"http://{config.metrics.host}:{config.metrics.port}/metrics"),
        f"cameras:    {len(config.cameras)} ({enabled} enabled)",
    ]
    width = max(len(c.id) for c in config.cameras)
    for cam in config.cameras:
        settings = [f"max_fps={cam.max_fps:g}" if cam.max_fps else "max_fps=source"]
        if cam.is_file:
            settings.append("realtime" if cam.realtime else "as fast as possible")
            settings.append("loop" if cam.loop else "no loop")
        elif cam.url.lower().startswith(("rtsp://", "rtsps://")):
            settings.append(f"rtsp_transport={cam.rtsp_transport}")
        state = "" if cam.enabled else "  [disabled]"
        kind = "file" if cam.is_file else "url "
        lines.append(f"  {cam.id:<{width}}  {kind} {cam.redacted_url}  {' '.join(settings)}{state}")
    lines += [
        f"batching:   max_batch={config.batching.max_batch} max_wait_ms={config.batching.max_wait_ms:g}",
        f"ring:       {ring.slots} slots of up to {ring.max_width}x{ring.max_height} YUV 4:2:0 "
        f"({per_cam / 2**20:.1f} MiB shared memory per camera, {per_cam * enabled / 2**20:.1f} MiB total)",
        f"decode:     {config.decode.cameras_per_process} camera(s) per process, timeouts "
        f"open={_fmt_s(config.decode.open_timeout_s)} read={_fmt_s(config.decode.read_timeout_s)} "
        f"stall={_fmt_s(config.decode.stall_timeout_s)}",
        f"threads:    inference lanes={config.threads.lanes} threads per lane={config.threads.inference}",
        f"reconnect:  backoff {_fmt_s(config.reconnect.initial_s)} doubling to "
        f"{_fmt_s(config.reconnect.max_s)}, jitter {config.reconnect.jitter:.0%}",
        f"supervisor: at most {config.supervisor.restart_limit} restarts per "
        f"{_fmt_s(config.supervisor.restart_window_s)}, hang after "
        f"{_fmt_s(config.supervisor.hang_timeout_s)} without heartbeat, stop grace "
        f"{_fmt_s(config.supervisor.stop_timeout_s)}",
        f"log_level:  {config.log_level}",
    ]
    return "\n".join(lines)
