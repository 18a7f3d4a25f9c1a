"""What should run for a configuration: decoder groups and workers, placed stickily.

Pure functions of the configuration and the previous plan, so that a reload can compare the two
(:mod:`streamdet.supervisor.reconcile`) and tests can check placement without starting anything.
Identities are stable: a decoder is named after its camera (or keeps its group when several
cameras share a process), a worker after its device, and a camera stays on the worker it was on
while that device is configured (new cameras go to the worker with the least pixel rate).
``devices: auto`` is resolved here, by a GPU counter that never initialises CUDA
(:mod:`streamdet.supervisor.devices`); a GPU worker's plan carries the environment that
confines its process to its GPU.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from streamdet.config import CameraConfig, Config
from streamdet.config.schema import BatchingConfig, ModelConfig
from streamdet.cpu_budget import InferencePlan, inference_budget, plan_inference
from streamdet.pipeline.decode.source import CameraSource
from streamdet.pipeline.settings import NmsSettings
from streamdet.supervisor.devices import (
    GpuCounter,
    cuda_visible_entry,
    default_gpu_counter,
    nvdec_device,
    resolve_devices,
    worker_environment,
    worker_spec_device,
)

log = logging.getLogger("streamdet.supervisor")

DEFAULT_PIXEL_RATE = 1920 * 1080 * 25.0  # a camera whose rate is unknown counts as 1080p25


LIVE_MODEL_FIELDS = frozenset({"conf_thres", "iou_thres", "classes", "max_det"})  # applied without a restart


@dataclass(frozen=True)
class WorkerPlan:
    """One worker: its cameras, the configuration's frozen sections it runs with, its CPU plan."""

    name: str
    device: str  # as the supervisor numbers the devices: "cpu" or "cuda:N"
    cameras: tuple[str, ...]
    model: ModelConfig
    batching: BatchingConfig
    stats_interval_s: float
    threads: int | None
    lanes: int
    stuck_s: float
    # GPU workers: the CUDA_VISIBLE_DEVICES entry naming this worker's GPU (None on the CPU)
    visible_device: str | None = None
    # tracking (applied live): the tracker's settings (None: tracking off) and camera -> detect_every
    # for each of this worker's cameras that tracks
    tracker: tuple[tuple[str, float | int], ...] | None = None
    detect_every: tuple[tuple[str, int], ...] = ()

    @property
    def spec_device(self) -> str:
        """The device as the worker process sees it: ``cuda:0`` (its only GPU) or ``cpu``."""
        return worker_spec_device(self.device)

    @property
    def env(self) -> dict[str, str]:
        """Environment set in the worker process before it imports torch (its GPU alone)."""
        return worker_environment(self.visible_device)

    def restart_key(self) -> tuple[object, ...]:
        """What a change of needs a worker restart: everything but the cameras and the thresholds."""
        return (self.device, self.visible_device, self.model.model_dump(exclude=set(LIVE_MODEL_FIELDS)),
                self.batching, self.stats_interval_s, self.threads, self.lanes, self.stuck_s)

    def tracking(self) -> dict[str, object] | None:
        """The live settings' ``tracking`` entry (streamdet.pipeline.worker.tracks.CameraTracks.configure)."""
        if self.tracker is None:
            return None
        return {"settings": dict(self.tracker), "cameras": dict(self.detect_every)}

    def nms(self) -> NmsSettings:
        """The NMS settings a worker applies live."""
        return NmsSettings.from_config(self.model)


@dataclass(frozen=True)
class DecoderPlan:
    """One decoder process: each of its cameras as the decoder reads it (the configuration's sections)."""

    name: str
    sources: tuple[CameraSource, ...]

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(s.camera_id for s in self.sources)

    def restart_key(self) -> tuple[CameraSource, ...]:
        """What a change of needs a restart: everything but ``max_fps`` (applied live) and the
        worker-side camera keys (``tracking``, ``detect_every``, applied live by the worker)."""
        return tuple(s.with_camera(max_fps=None, tracking=True, detect_every=1) for s in self.sources)


@dataclass(frozen=True)
class DaemonPlan:
    decoders: tuple[DecoderPlan, ...]
    workers: tuple[WorkerPlan, ...]
    inference: InferencePlan

    def worker_of(self) -> dict[str, str]:
        """camera id -> the device of its worker."""
        return {cam: w.device for w in self.workers for cam in w.cameras}


def enabled_cameras(config: Config) -> list[CameraConfig]:
    return [c for c in config.cameras if c.enabled]


def camera_source(config: Config, cam: CameraConfig, threads: int, *, worker_device: str = "cpu",
                  gpus: int = 0) -> CameraSource:
    """The decoder's view of ``cam``; its NVDEC device follows the GPU of its worker (``worker_device``)."""
    return CameraSource(camera=cam, timeouts=config.decode, reconnect=config.reconnect, ring=config.ring,
                        threads=threads, nvdec_device=nvdec_device(cam.decode, worker_device, gpus))


def decoder_threads(config: Config, cpus: int) -> int:
    """FFmpeg threads per camera: with at least as many cameras as CPUs, one each (threads within a
    decoder would only add switching: measured 2.6 vs 2.9 ms CPU per 720p frame), else FFmpeg's
    own choice (0), which lowers a few big streams' latency."""
    configured = config.decode.threads
    if configured != "auto":
        return int(configured)
    return 1 if len(enabled_cameras(config)) >= cpus else 0


def inference_plan(config: Config, cpus: int, devices: tuple[str, ...] | None = None) -> InferencePlan:
    """Lanes and intra-op threads of each CPU worker: configured, or from the CPU budget.
    ``devices``: the resolved worker devices (default: the configured ones)."""
    t = config.threads
    lanes = None if t.lanes == "auto" else int(t.lanes)
    threads = None if t.inference == "auto" else int(t.inference)
    devices = tuple(config.devices) if devices is None else devices
    budget = inference_budget(cpus, max(1, sum(1 for d in devices if d == "cpu")))
    return plan_inference(budget, lanes, threads)


def worker_devices(config: Config, gpus: int) -> tuple[str, ...]:
    """The devices workers run on: the configured list, or ``devices: auto`` resolved for ``gpus``."""
    devices = resolve_devices(tuple(config.devices), gpus)
    if config.auto_devices:
        log.info("devices: auto -> %s (%d GPU(s) visible)", ", ".join(devices), gpus)
        if devices == ("cpu",) and config.model.half:
            log.warning("devices: auto found no GPU, but model.half needs CUDA: the CPU worker will refuse FP16")
    return devices


def pixel_rate(cam: CameraConfig, observed: Mapping[str, float]) -> float:
    """A camera's load for placement: observed pixels/s when known, else its max_fps at 1080p."""
    if cam.id in observed:
        return observed[cam.id]
    return 1920 * 1080 * cam.max_fps if cam.max_fps else DEFAULT_PIXEL_RATE


def place_cameras(cameras: list[CameraConfig], devices: tuple[str, ...], previous: Mapping[str, str],
                  observed: Mapping[str, float] | None = None) -> dict[str, str]:
    """camera id -> device: a camera stays where it was if that device is still configured; the
    others go, heaviest first, to the device with the least pixel rate so far."""
    observed = observed or {}
    placement: dict[str, str] = {}
    load = dict.fromkeys(devices, 0.0)
    for cam in cameras:
        dev = previous.get(cam.id)
        if dev in load:
            placement[cam.id] = dev
            load[dev] += pixel_rate(cam, observed)
    for cam in sorted((c for c in cameras if c.id not in placement), key=lambda c: -pixel_rate(c, observed)):
        dev = min(devices, key=lambda d: (load[d], devices.index(d)))
        placement[cam.id] = dev
        load[dev] += pixel_rate(cam, observed)
    return placement


def _decoder_groups(config: Config, sources: dict[str, CameraSource],
                    previous: tuple[DecoderPlan, ...]) -> tuple[DecoderPlan, ...]:
    per = max(1, config.decode.cameras_per_process)
    if per == 1:
        return tuple(DecoderPlan(f"decoder-{cam}", (src,)) for cam, src in sources.items())
    groups: list[DecoderPlan] = []
    placed: set[str] = set()
    for old in previous:  # sticky: a group keeps its cameras that are still configured
        kept = tuple(sources[c] for c in old.cameras if c in sources)
        if kept:
            groups.append(DecoderPlan(old.name, kept))
            placed.update(s.camera_id for s in kept)
    used = {g.name for g in groups}
    names = (f"decoder-{n}" for n in itertools.count() if f"decoder-{n}" not in used)
    rest = [src for cam, src in sources.items() if cam not in placed]
    for k in range(0, len(rest), per):
        groups.append(DecoderPlan(next(names), tuple(rest[k:k + per])))
    return tuple(groups)


def make_plan(config: Config, cpus: int, previous: DaemonPlan | None = None,
              observed_pixel_rate: Mapping[str, float] | None = None, *,
              gpu_counter: GpuCounter | None = None, environ: Mapping[str, str] | None = None) -> DaemonPlan:
    """The decoders and workers ``config`` needs; sticky with respect to ``previous``.

    ``gpu_counter`` counts the visible GPUs without initialising CUDA (default: the NVIDIA
    driver's /proc entries); ``environ`` is the supervisor's environment (default ``os.environ``),
    whose ``CUDA_VISIBLE_DEVICES`` names the GPUs a worker may be confined to.
    """
    gpus = (gpu_counter or default_gpu_counter)()
    devices = worker_devices(config, gpus)
    cams = enabled_cameras(config)
    threads = decoder_threads(config, cpus)
    placement = place_cameras(cams, devices, previous.worker_of() if previous else {}, observed_pixel_rate)
    sources = {cam.id: camera_source(config, cam, threads, worker_device=placement[cam.id], gpus=gpus)
               for cam in cams}
    decoders = _decoder_groups(config, sources, previous.decoders if previous else ())
    plan = inference_plan(config, cpus, devices)
    workers = []
    for device in devices:
        mine = tuple(cam.id for cam in cams if placement[cam.id] == device)
        if not mine:
            continue
        workers.append(WorkerPlan(
            name=f"worker-{device.replace(':', '')}", device=device, cameras=mine, model=config.model,
            batching=config.batching, stats_interval_s=config.publish.stats_interval_s,
            threads=plan.threads if device == "cpu" else None, lanes=plan.lanes if device == "cpu" else 1,
            stuck_s=max(1.0, config.supervisor.hang_timeout_s / 2),
            visible_device=cuda_visible_entry(device, environ),
            tracker=tuple(config.tracking.tracker_settings().items()) if config.tracking.enabled else None,
            detect_every=tuple((cam.id, cam.detect_every) for cam in cams
                               if placement[cam.id] == device and cam.tracking and config.tracking.enabled),
        ))
    return DaemonPlan(decoders, tuple(workers), plan)
