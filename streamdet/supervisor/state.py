"""What the supervisor holds while it runs, in one object.

The core (:mod:`streamdet.supervisor.core`) owns a :class:`SupervisorState`; its parts read and
change it without importing the core: the reconciler (rings, children, plan, proxy), the restart
policy, the finished cameras, the MQTT bridge runner and the observers (metrics, live view).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from multiprocessing.context import SpawnContext
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamdet.config import Config
    from streamdet.pipeline.ring.buffer import FrameRing
    from streamdet.supervisor.children import Child
    from streamdet.supervisor.plan import DaemonPlan
    from streamdet.transport.proxy import PublishProxy

__all__ = ["ReloadOutcome", "SupervisorState"]


@dataclass
class SupervisorState:
    """The running daemon as the supervisor sees it (see the module docstring)."""

    config: Config
    ctx: SpawnContext
    cpus: int
    rings: dict[str, FrameRing] = field(default_factory=dict)  # camera -> its ring (the supervisor owns them)
    children: dict[str, Child] = field(default_factory=dict)
    plan: DaemonPlan | None = None
    proxy: PublishProxy | None = None
    start_gate: Any = None  # StopFlag set once every worker served once: file cameras start then
    run_dir: Path | None = None  # this run's private folder (internal socket, live-settings files)
    metrics: Any = None  # streamdet.metrics.DaemonMetrics while metrics.port is set
    web: Any = None  # streamdet.web.service.WebService while web: is set

    @property
    def workdir(self) -> Path:
        if self.run_dir is None:
            raise RuntimeError("the supervisor has not opened its run folder yet")
        return self.run_dir

    @property
    def internal_endpoint(self) -> str:
        """Where workers publish to the proxy (ipc in the run folder)."""
        return f"ipc://{self.workdir}/publish.sock"


@dataclass(frozen=True)
class ReloadOutcome:
    """What a reload changed (``summary``, one log line) and what the core must restart itself."""

    summary: str
    restart_metrics: bool = False
    restart_web: bool = False
