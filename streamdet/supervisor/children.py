"""One supervised child process: start, stop on request, restart budget, liveness.

A child is started from a ``build_args(stop_flag)`` callable, so every start gets a fresh stop
flag and the arguments of the current configuration (a reload swaps the callable). Stopping is
asynchronous: ``request_stop`` sets the child's own stop flag and the supervision loop kills it
if it has not exited by the deadline; the loop never blocks on one child.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from multiprocessing.context import SpawnContext
from multiprocessing.process import BaseProcess
from typing import Any

from streamdet.stopflag import StopFlag
from streamdet.supervisor.signals import ignore_parent_signals, parent_signals_blocked

log = logging.getLogger("streamdet.supervisor")

BACKOFF_INITIAL_S = 1.0
BACKOFF_MAX_S = 30.0
START_FAILURES_FATAL = 3  # consecutive deaths before serving, never having served: the child cannot start


def resolve_target(target: str) -> Callable[..., None]:
    """The function an import string ``"package.module:function"`` names (imported in the child)."""
    module, sep, attr = target.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"a child target is 'package.module:function', got {target!r}")
    fn: Callable[..., None] = getattr(importlib.import_module(module), attr)
    return fn


@dataclass(frozen=True)
class ChildTargets:
    """What each kind of child runs, as import strings: the supervisor imports neither PyAV nor torch,
    and tests substitute stand-ins by naming them (uvicorn's supervisor passes its app the same way)."""

    decoder: str = "streamdet.pipeline.decode.process:decoder_main"
    worker: str = "streamdet.pipeline.worker.process:worker_main"


def child_entry(name: str, log_level: str, target: str, args: tuple[Any, ...],
                env: Mapping[str, str] | None = None) -> None:
    """Bootstrap of every child: signals, its environment, process name, crash dumps, then the
    stage's main.

    SIGHUP and SIGINT are the supervisor's (reload, stop): the child was spawned with them blocked
    and ignores them from here on (:mod:`streamdet.supervisor.signals`), so a signal sent to the
    whole process group (Ctrl-C in a terminal, ``kill -HUP -PGID``) reaches the supervisor alone.

    ``env`` is applied first, in the child only (a GPU worker's ``CUDA_VISIBLE_DEVICES``): nothing
    that could initialise CUDA has run yet, and the supervisor's own environment is untouched.
    An unexpected exception ends the child with status 1 after one log line (the traceback at
    debug level): the supervisor reports and restarts it.
    """
    ignore_parent_signals()
    os.environ.update(env or {})
    import faulthandler

    _die_with_parent()
    faulthandler.enable()
    # before any child imports torch/OpenMP: idle inference threads sleep instead of spinning on the
    # cores that decoders need (an operator's explicit setting wins)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    with contextlib.suppress(OSError), open("/proc/self/comm", "w") as f:
        f.write(f"sd-{name}"[:15])
    from streamdet.logs import setup_logging

    setup_logging(log_level, f"streamdet-{name}")
    try:
        resolve_target(target)(*args)
    except Exception as exc:
        import traceback

        logging.getLogger("streamdet.child").error("%s failed: %s: %s", name, type(exc).__name__, exc)
        logging.getLogger("streamdet.child").debug("%s", "".join(traceback.format_exception(exc)))
        raise SystemExit(1) from None


def _die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when the supervisor dies (even by SIGKILL), so a
    dead supervisor never leaves decoders or workers running as orphans (Linux prctl)."""
    import ctypes
    import multiprocessing

    pr_set_pdeathsig = 1
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:
        os._exit(1)  # the supervisor died before the request took effect


@dataclass
class Child:
    """One supervised child process and its restart bookkeeping."""

    name: str
    kind: str  # "decoder" or "worker"
    cameras: tuple[str, ...]
    build_args: Callable[[StopFlag], tuple[Any, ...]]
    target: str  # import string of the child's main (ChildTargets), resolved in the child
    heartbeat: Any = None  # workers: shared double, wall time (negative while starting)
    phase: Any = None  # workers: shared int, index into worker.PHASES
    env: dict[str, str] = field(default_factory=dict)  # set in the child before its target runs
    process: BaseProcess | None = None
    stop_flag: StopFlag | None = None
    started_at: float = 0.0  # wall time of the last start
    restarts: deque[float] = field(default_factory=deque)
    next_start: float = 0.0  # monotonic time before which it is not (re)started
    backoff_s: float = BACKOFF_INITIAL_S
    restart_count: int = 0  # since the daemon started (metrics)
    start_failures: int = 0  # consecutive deaths before serving (since it last served)
    served: bool = False  # reached serving since its last start
    ever_served: bool = False  # reached serving at least once in this daemon's life
    stop_deadline: float | None = None  # monotonic; set while a requested stop is in progress
    retire: bool = False  # remove once stopped (reload removed it)
    restart_when_stopped: bool = False  # start again once stopped (reload changed it)
    parked: str | None = None  # given up on (reason); never restarted until a reload changes it
    finished: bool = False  # a decoder whose every camera finished for good; not restarted until a reload

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    @property
    def stopping(self) -> bool:
        return self.stop_deadline is not None

    def start(self, ctx: SpawnContext, log_level: str) -> None:
        from streamdet.supervisor.children import child_entry

        self.stop_flag = StopFlag(ctx)
        if self.heartbeat is not None:
            self.heartbeat.value = 0.0
        if self.phase is not None:
            self.phase.value = 0
        self.served = False
        self.process = ctx.Process(target=child_entry,
                                   args=(self.name, log_level, self.target, self.build_args(self.stop_flag),
                                         dict(self.env)),
                                   name=self.name, daemon=False)
        with parent_signals_blocked():  # until its bootstrap ignores them (see child_entry)
            self.process.start()
        self.started_at = time.time()
        log.info("started %s (pid %d)%s", self.name, self.process.pid,
                 "".join(f" {k}={v}" for k, v in sorted(self.env.items())))

    def request_stop(self, timeout_s: float) -> None:
        """Ask the child to stop; the supervision loop kills it after ``timeout_s``."""
        if self.process is None:
            return
        if self.stop_flag is not None:
            self.stop_flag.set()
        if self.stop_deadline is None:
            self.stop_deadline = time.monotonic() + timeout_s

    def kill(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.process.kill()
            self.process.join(5)

    def reap(self) -> int | None:
        """Forget the exited process; returns its exit code."""
        code = None
        if self.process is not None:
            self.process.join(0)
            code = self.process.exitcode
            with contextlib.suppress(ValueError):
                self.process.close()
        self.process = None
        self.stop_deadline = None
        return code

    def record_restart(self, window_s: float, limit: int) -> bool:
        """Count one unplanned restart; False when more than ``limit`` fall within ``window_s``."""
        now = time.monotonic()
        while self.restarts and now - self.restarts[0] > window_s:
            self.restarts.popleft()
        self.restarts.append(now)
        self.restart_count += 1
        if len(self.restarts) > limit:
            return False
        if time.time() - self.started_at > window_s:
            self.backoff_s = BACKOFF_INITIAL_S  # it ran fine for a while: start over
        self.next_start = now + self.backoff_s
        self.backoff_s = min(self.backoff_s * 2, BACKOFF_MAX_S)
        return True
