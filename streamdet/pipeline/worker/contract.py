"""The worker <-> supervisor contract: what a worker is given, what it shares, how it exits.

Imported by the supervisor (start, restart policy, hang detection), reconcile, observe and the
metrics collector, and by the worker itself; so it imports neither numpy nor torch.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import Synchronized
from typing import TYPE_CHECKING, Any

from streamdet.pipeline.live import LiveChannel
from streamdet.pipeline.settings import NmsSettings

if TYPE_CHECKING:
    from streamdet.config.schema import BatchingConfig, ModelConfig

__all__ = [
    "EXIT_BAD_MODEL", "EXIT_CANNOT_START", "PHASES", "SERVING", "STARTUP_BEAT_LIMIT_S", "StartupBeat",
    "WorkerControl", "WorkerLive", "WorkerSpec",
]

STARTUP_BEAT_LIMIT_S = 600.0  # a model load + export + warm-up longer than this counts as hung
EXIT_CANNOT_START = 78  # EX_CONFIG: model, backend or device unusable; restarting would not help
EXIT_BAD_MODEL = EXIT_CANNOT_START  # the former name
PHASES = ("loading", "warming_up", "serving")  # WorkerControl.phase values, in order
SERVING = PHASES.index("serving")


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker process needs, picklable for the spawn context: the configuration's
    own frozen sections, plus what the supervisor decided (cameras, device, CPU plan)."""

    name: str
    device: str
    ring_names: dict[str, str]
    model: ModelConfig
    batching: BatchingConfig
    publish_endpoint: str
    stats_interval_s: float
    warmup_shape: tuple[int, int] = (720, 1280)
    threads: int | None = None  # intra-op inference threads per lane; None = the backend's default
    lanes: int = 1  # batches inferred concurrently, each on its own backend instance
    pipelined: bool = True
    stuck_s: float = 30.0  # one batch inferring this long stops the heartbeat (the supervisor sees a hang)


class StartupBeat:
    """Heartbeats with a negative value (-wall time) while the worker loads, exports and warms up.

    The supervisor reads ``abs(value)`` for hang detection and ``value > 0`` as "serving": a first
    start that exports an ONNX model (tens of seconds on a small CPU) is not mistaken for a hang,
    and file cameras still wait for the real start. Stops by itself after STARTUP_BEAT_LIMIT_S.
    """

    def __init__(self, heartbeat: Synchronized | None, period_s: float = 1.0) -> None:
        self.heartbeat = heartbeat
        self.period_s = period_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worker-startup-beat", daemon=True)

    def _run(self) -> None:
        end = time.monotonic() + STARTUP_BEAT_LIMIT_S
        while self.heartbeat is not None and time.monotonic() < end:
            self.heartbeat.value = -time.time()
            if self._done.wait(self.period_s):
                return

    def __enter__(self) -> StartupBeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(2)



@dataclass
class WorkerControl:
    """What a worker shares with its supervisor, besides the stop flag (all process-shared).

    ``heartbeat``: wall time of the last sign of life (negative while loading, see StartupBeat).
    ``phase``: index into PHASES; the supervisor applies its hang timeout only while serving.
    ``live``: the worker's live settings (:class:`WorkerLive`), which a reload replaces whole.
    """

    heartbeat: Synchronized | None = None
    phase: Synchronized | None = None
    live: LiveChannel | None = None

    def set_phase(self, name: str) -> None:
        if self.phase is not None:
            self.phase.value = PHASES.index(name)


@dataclass(frozen=True)
class WorkerLive:
    """A worker's live settings, sent whole on its :class:`~streamdet.pipeline.live.LiveChannel`
    at start and by each reload that changes them: the camera rings to serve (camera -> ring name),
    the NMS settings, the tracking settings (``CameraTracks.configure``'s mapping, None = off) and
    the final status of each camera that finished for good (reported in place of its ring's)."""

    cameras: dict[str, str]
    nms: NmsSettings = field(default_factory=NmsSettings)
    tracking: dict[str, Any] | None = None
    finished: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"cameras": dict(self.cameras), "nms": self.nms.to_json(), "tracking": self.tracking,
                "finished": dict(self.finished)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WorkerLive:
        return cls(cameras={str(c): str(r) for c, r in dict(data["cameras"]).items()},
                   nms=NmsSettings.from_json(dict(data["nms"])), tracking=data.get("tracking"),
                   finished=dict(data.get("finished") or {}))
