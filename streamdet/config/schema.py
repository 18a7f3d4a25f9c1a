"""The configuration schema: pydantic models of every section and of the whole ``Config``.

Validators resolve relative paths against ``base_dir`` from the validation context and raise
cross-field problems as located errors (see :mod:`streamdet.config.problems`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from streamdet.camera_id import is_valid_camera_id
from streamdet.config.mqtt import MqttConfig
from streamdet.config.paths import _base_dir, _normalize_camera_url, _resolve_path, _split_tcp, _url_has_scheme
from streamdet.config.problems import _cross_error
from streamdet.config.tracking import TrackingConfig
from streamdet.config.web import WebConfig
from streamdet.redact import redact_url

_DEVICE_RE = re.compile(r"^(cpu|cuda(?::(\d+))?)$")
_MAX_IPC_PATH = 107  # sun_path is 108 bytes on Linux, including the terminating NUL


_MODEL_CONFIG = ConfigDict(
    extra="forbid", frozen=True, hide_input_in_errors=True, allow_inf_nan=False, validate_default=False
)


class _Base(BaseModel):
    """Common settings: unknown keys rejected, immutable, no input values echoed in errors."""

    model_config = _MODEL_CONFIG



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
    preprocess: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where frames are converted and letterboxed: cuda = DMA from the page-locked ring and "
        "the fused CUDA kernel (needs a CUDA device, CuPy and the torch backend); cpu = OpenCV on the host; "
        "auto = cuda on a CUDA worker when CuPy imports and the start-up self-check passes, else cpu.",
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


AUTO_DEVICES = ("auto",)
"""``Config.devices`` when the configuration says ``devices: auto``: the supervisor resolves it at
start (and at each reload) to one ``cuda:N`` per visible GPU, or ``cpu`` when there is none,
without initialising CUDA (:func:`streamdet.supervisor.devices.resolve_devices`)."""


def _check_device(v: Any) -> str:
    """Accept 'cpu', 'cuda' (meaning cuda:0) or 'cuda:N'; return the canonical spelling."""
    if not isinstance(v, str):
        raise ValueError("expected 'cpu', 'cuda' or 'cuda:N' (or devices: auto)")
    m = _DEVICE_RE.match(v.strip().lower())
    if m is None:
        raise ValueError(f"unknown device {v!r}: expected 'cpu', 'cuda' or 'cuda:N' (or devices: auto)")
    if m.group(1) == "cpu":
        return "cpu"
    return f"cuda:{int(m.group(2) or 0)}"


class CurveConfig(_Base):
    """CurveZMQ on the public endpoint: traffic encrypted, only listed clients may subscribe.

    Files in pyzmq's ``zmq.auth`` certificate format (``streamdet keygen DIR NAME``). Their
    existence is not checked here: a path that does not exist is looked up by its file name in
    ``$CREDENTIALS_DIRECTORY`` (systemd ``LoadCredential=``) when the daemon starts;
    ``streamdet check`` reports missing or malformed files (``streamdet.transport.keys.check_curve``).
    """

    server_secret_key: Path = Field(
        description="The daemon's secret certificate (NAME.key_secret); relative to the config file."
    )
    authorized_keys: Path = Field(
        description="Directory of the client public certificates (*.key) admitted; relative to the config file."
    )

    @field_validator("server_secret_key", "authorized_keys", mode="after")
    @classmethod
    def _relative_to_config(cls, v: Path, info: ValidationInfo) -> Path:
        return _resolve_path(v, _base_dir(info))


class PublishConfig(_Base):
    """Where detections are published (ZeroMQ PUB via the supervisor's XSUB/XPUB proxy)."""

    endpoint: str = Field("tcp://127.0.0.1:5555", description="Public endpoint: tcp://host:port or ipc://path.")
    hwm: int = Field(1000, ge=1, description="Send high-water mark per subscriber (messages); then drop.")
    stats_interval_s: float = Field(5.0, gt=0, description="Seconds between stats/ messages.")
    curve: CurveConfig | None = Field(
        None, description="CurveZMQ encryption and client authentication; null = none (plain, anyone may subscribe)."
    )

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



class CameraConfig(_Base):
    """One video source. After validation ``url`` is a network URL or an absolute file path."""

    id: str = Field(description="Unique id [A-Za-z0-9_-]{1,64}; used in topics det/<id>/.")
    url: str = Field(description="rtsp(s)://, http(s)://, rtmp://, file:// or a local path.")
    enabled: bool = Field(True, description="Disabled cameras are validated but not opened.")
    max_fps: float | None = Field(None, gt=0, description="Drop frames above this rate; null = all.")
    rtsp_transport: Literal["tcp", "udp"] = Field("tcp", description="RTSP transport (rtsp/rtsps only).")
    realtime: bool = Field(True, description="Files: pace at their own fps (network sources ignore it).")
    loop: bool = Field(False, description="Files: restart at the end (network sources ignore it).")
    decode: Literal["auto", "cpu", "nvdec"] = Field(
        "auto", description="Decoder: nvdec (NVIDIA GPU, CPU fallback), cpu, or auto = nvdec when the camera's "
        "worker runs on a GPU, else cpu.",
    )
    tracking: bool = Field(True, description="Track this camera's objects when tracking.enabled is on; "
                           "false opts this camera out.")
    detect_every: int = Field(1, ge=1, le=100, description="Run the detector on every Nth frame the worker "
                              "takes; the frames in between get the tracker's predicted boxes (needs tracking).")

    @field_validator("id", mode="before")
    @classmethod
    def _int_id(cls, v: Any) -> Any:
        # `id: 101` is common in YAML; treat integers as their decimal string
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("id", mode="after")
    @classmethod
    def _check_id(cls, v: str) -> str:
        if not is_valid_camera_id(v):
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
    hang_timeout_s: float = Field(10.0, gt=0, description="A serving child with no heartbeat this long is "
                                  "killed and restarted.")
    startup_timeout_s: float = Field(300.0, gt=0, description="A worker that has not finished loading, exporting "
                                     "and warming up its model this long after its start is killed and restarted.")
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
    devices: tuple[str, ...] = Field(
        ("cpu",), description="One worker per device; ('auto',) = one per visible GPU, else cpu (devices: auto)."
    )
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
    mqtt: MqttConfig | None = Field(None, description="Detections into an MQTT broker (bridge process); null = off.")
    web: WebConfig | None = Field(None, description="The live view (streamdet.config.web); off when absent.")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig,
                                     description="Multi-object tracking (streamdet.config.tracking); off by default.")

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
                raise ValueError("must list at least one device, e.g. [cpu], or be auto")
            autos = [i for i, d in enumerate(v) if isinstance(d, str) and d.strip().lower() == "auto"]
            if autos and len(v) > 1:
                raise _cross_error([((autos[0],), "auto stands alone (devices: auto); it cannot be combined "
                                     "with other devices", None)])
            if autos:
                return list(AUTO_DEVICES)
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
        for i, cam in enumerate(self.cameras):
            if cam.detect_every > 1 and not (self.tracking.enabled and cam.tracking):
                why = "tracking.enabled is false" if not self.tracking.enabled else "this camera has tracking: false"
                problems.append((("cameras", i, "detect_every"), f"detect_every > 1 needs tracking ({why}): the "
                                 "frames between detections get the tracker's boxes", ("tracking",)))
        if not any(cam.enabled for cam in self.cameras):
            problems.append((("cameras",), "no enabled camera (set enabled: true on at least one)", None))
        if self.model.half and "cpu" in self.devices:
            # the Detector refuses FP16 on CPU; fail here, at `streamdet check`, not in a restart loop
            problems.append((("model", "half"), "FP16 needs CUDA devices, but devices includes 'cpu'", ("devices",)))
        if self.model.preprocess == "cuda" and "cpu" in self.devices:
            problems.append((("model", "preprocess"), "preprocess: cuda needs CUDA devices, but devices includes 'cpu'",
                             ("devices",)))
        port, host = self.publish.tcp_port, self.publish.tcp_host
        if self.metrics.port is not None and self.metrics.port == port:
            wild = {"*", "0.0.0.0", "::", "[::]"}
            if host == self.metrics.host or host in wild or self.metrics.host in wild:
                problems.append(
                    (("metrics", "port"), f"port {port} is also used by publish.endpoint", ("publish", "endpoint"))
                )
        if self.web is not None:
            problems += self.web.port_clashes(((port, host, ("publish", "endpoint")),
                                               (self.metrics.port, self.metrics.host, ("metrics", "port"))))
        if problems:
            raise _cross_error(problems)
        return self

    @property
    def auto_devices(self) -> bool:
        """True for ``devices: auto`` (resolved by the supervisor when it plans the workers)."""
        return self.devices == AUTO_DEVICES

    @property
    def enabled_cameras(self) -> tuple[CameraConfig, ...]:
        """The cameras to open, in file order."""
        return tuple(cam for cam in self.cameras if cam.enabled)

