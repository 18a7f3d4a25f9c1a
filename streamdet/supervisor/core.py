"""The supervisor: the daemon's parent process.

Owns every shared-memory ring (created before the children that use them, unlinked in one place,
even after a SIGKILLed child), the publish proxy and the child processes (spawn context): decoders
and one worker per device. It never imports torch and never initialises CUDA.

- Failures (:mod:`streamdet.supervisor.policy`, which also lists the exit statuses): a dead or
  hung child is restarted with exponential backoff. A worker that exits with EXIT_CANNOT_START,
  or dies START_FAILURES_FATAL times in a row before serving and never served since the daemon
  started, cannot start: the daemon stops with exit status 2 and one line (systemd does not
  restart on 2). A worker that served before and then keeps dying (while serving or while
  restarting) ends the daemon with status 1 beyond ``restart_limit`` restarts in
  ``restart_window_s`` (systemd restarts it). A decoder in the same situations is parked instead
  (its cameras show ``failed`` with the reason): one bad camera never stops the others.
- Finished cameras (:mod:`streamdet.supervisor.finished`): a file camera that ended or failed for
  good gives up its decoder thread (its process, when it was the last camera there) and, once the
  worker has taken its frames, its ring; its final state stays in stats and metrics.
- Hangs: a serving child with no heartbeat for ``hang_timeout_s`` is killed and restarted; a worker
  still loading or warming up has ``startup_timeout_s`` (and must heartbeat while it loads).
- Watchdog: WATCHDOG=1 is sent only while this loop runs, the publish proxy runs and every child
  heartbeated within the last HEALTHY_BEAT_S seconds, or is stopping on request, or is waiting for
  a restart within its budget. A frozen child therefore silences the watchdog at once, and is
  killed and replaced once it passes its hang timeout.
- Reload (SIGHUP, ``streamdet reload``): the configuration file is read again; an invalid one is
  rejected with its located error and the daemon goes on with the old one; a valid one is applied
  as a diff (:mod:`streamdet.supervisor.reconcile`). RELOADING=1, then READY=1.
- MQTT bridge (``mqtt:``, :mod:`streamdet.supervisor.bridge`): one more child, restarted with
  backoff whenever it dies and never given up on: a broker problem never stops the daemon.
- Stop (SIGTERM/SIGINT): every child is asked to stop, killed after ``stop_timeout_s``; exit 0.

Signal handlers only record the signal; the supervision loop acts on it. Children and
multiprocessing's resource tracker ignore SIGHUP and SIGINT (:mod:`streamdet.supervisor.signals`),
so a signal to the whole process group is acted on once, here.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import shutil
import signal
import tempfile
import threading
import time
from multiprocessing.context import SpawnContext
from pathlib import Path
from typing import Any, Generic, TypeVar

from streamdet.bridge.check import mqtt_problems
from streamdet.config import Config
from streamdet.cpu_budget import usable_cpus
from streamdet.errors import ConfigError, StreamdetError
from streamdet.pipeline.ring.buffer import FrameRing
from streamdet.pipeline.worker.contract import SERVING
from streamdet.preflight import ring_bytes, shm_problem
from streamdet.supervisor.children import Child, ChildTargets
from streamdet.supervisor.finished import FinishedCameras
from streamdet.supervisor.plan import DaemonPlan, make_plan
from streamdet.supervisor.policy import EXIT_STOPPED, EXIT_UNUSABLE, RestartPolicy
from streamdet.supervisor.reconcile import Reconciler
from streamdet.supervisor.runtime import (
    PidFile,
    cleanup_stale_run_dirs,
    cleanup_stale_segments,
    runtime_dir,
)
from streamdet.supervisor.signals import start_resource_tracker
from streamdet.supervisor.state import SupervisorState
from streamdet.systemd import SystemdNotifier
from streamdet.transport.keys import check_curve
from streamdet.transport.proxy import PublishProxy

log = logging.getLogger("streamdet.supervisor")

TICK_S = 0.2
IPC_PATH_MAX = 100  # sockaddr_un.sun_path holds 107 bytes; keep a margin

HEALTHY_BEAT_S = 5.0  # a child whose last heartbeat is older than this (or hang_timeout_s) is not healthy
STARTUP_BEAT_GRACE_S = 30.0  # a starting child may go this long without a heartbeat (imports on a busy CPU)


T = TypeVar("T")


class _StateField(Generic[T]):
    """A Supervisor attribute that is a field of its :class:`SupervisorState` of the same name."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, sup: Supervisor, owner: type | None = None) -> T:
        value: T = getattr(sup.state, self.name)
        return value

    def __set__(self, sup: Supervisor, value: T) -> None:
        setattr(sup.state, self.name, value)


class Supervisor:
    """Runs the daemon for one validated configuration; see the module docstring.

    ``config_path``: the file a reload re-reads (None: reload is refused with a log line).
    """

    def __init__(self, config: Config, config_path: str | Path | None = None,
                 targets: ChildTargets | None = None) -> None:
        self.state = SupervisorState(config=config, ctx=mp.get_context("spawn"), cpus=usable_cpus())
        self.config_path = Path(config_path) if config_path is not None else None
        self.notifier = SystemdNotifier()
        self._signal: int | None = None
        self._reload_requested = False
        self._pidfile: PidFile | None = None
        self._ready = False
        self._stats_thread: threading.Thread | None = None
        self._stats_stop = threading.Event()
        self.finished = FinishedCameras(self.state)
        self.reconciler = Reconciler(self.state, self.finished, targets)
        self.policy = RestartPolicy(self.state)

    # -- the state, as attributes (the parts use ``self.state``) --------------------------------
    config = _StateField[Config]()
    ctx = _StateField[SpawnContext]()
    cpus = _StateField[int]()
    rings = _StateField[dict[str, FrameRing]]()
    children = _StateField[dict[str, Child]]()
    plan = _StateField[DaemonPlan | None]()
    proxy = _StateField[PublishProxy | None]()
    start_gate = _StateField[Any]()
    metrics = _StateField[Any]()
    web = _StateField[Any]()

    # -- signals -----------------------------------------------------------------------------
    #: what each signal asks for: the name of the handler (handlers only record it; the loop acts)
    SIGNAL_HANDLERS = {signal.SIGTERM: "handle_term", signal.SIGINT: "handle_term", signal.SIGHUP: "handle_hup"}

    def _on_signal(self, signum: int, _frame: object) -> None:
        getattr(self, self.SIGNAL_HANDLERS[signal.Signals(signum)])(signum)

    def handle_term(self, signum: int) -> None:
        """SIGTERM, SIGINT: stop (children get stop_timeout_s, then SIGKILL); exit 0."""
        self._signal = signum

    def handle_hup(self, signum: int) -> None:
        """SIGHUP: reload the configuration at the next tick of the supervision loop."""
        self._reload_requested = True

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """Ask the supervision loop to stop (as a signal would)."""
        self._signal = signum

    def request_reload(self) -> None:
        """Ask the supervision loop to re-read the configuration (as SIGHUP does)."""
        self._reload_requested = True

    # -- health ----------------------------------------------------------------------------
    def _last_beat(self, child: Child) -> float | None:
        """Wall time of the child's last sign of life; None for a decoder whose cameras all ended
        (a finished file without ``loop``) or failed for good: it is idle, not hung."""
        if child.heartbeat is not None:
            return abs(child.heartbeat.value)  # negative while the worker loads (StartupBeat)
        beats = []
        for cam in child.cameras:
            ring = self.rings.get(cam)
            if ring is None:
                continue
            st = ring.status()
            if st.state not in ("ended", "failed"):
                beats.append(st.heartbeat)
        return max(beats) if beats else None

    def _serving(self, child: Child) -> bool:
        if child.phase is not None:
            return int(child.phase.value) >= SERVING
        beat = self._last_beat(child)
        return beat is None or beat >= child.started_at

    def hang_reason(self, child: Child, now_wall: float) -> str | None:
        """Why a running child counts as hung, or None."""
        s = self.config.supervisor
        beat = self._last_beat(child)
        since = now_wall - max(beat or 0.0, child.started_at)
        if child.served or (child.phase is not None and self._serving(child)):
            if beat is not None and since > s.hang_timeout_s:
                return f"sent no heartbeat for {since:.0f} s (hang_timeout_s {s.hang_timeout_s:g})"
            return None
        if now_wall - child.started_at > s.startup_timeout_s:
            return f"did not finish starting within startup_timeout_s ({s.startup_timeout_s:g} s)"
        if beat is not None and since > max(s.hang_timeout_s, STARTUP_BEAT_GRACE_S):
            return f"sent no heartbeat for {since:.0f} s while starting"
        return None

    def healthy(self) -> bool:
        """Whether WATCHDOG=1 may be sent (see the module docstring)."""
        if self.proxy is None or not self.proxy.running:
            return False
        now_wall = time.time()
        fresh_s = min(self.config.supervisor.hang_timeout_s, HEALTHY_BEAT_S)
        for child in self.children.values():
            if child.parked or child.stopping:
                continue
            if child.process is None:
                continue  # waiting for its (budgeted) restart
            if not child.process.is_alive() or self.hang_reason(child, now_wall) is not None:
                return False
            beat = self._last_beat(child)
            if beat is not None and now_wall - max(beat, child.started_at) > fresh_s:
                return False  # frozen or stuck, not yet past its hang timeout: say nothing to systemd
        return True

    # -- supervision -------------------------------------------------------------------------
    def _supervise_once(self) -> bool:
        """One pass over the children; returns False when the daemon must give up."""
        now_mono, now_wall = time.monotonic(), time.time()
        for child in list(self.children.values()):
            if child.parked or child.finished:
                continue
            if child.process is None:
                if child.retire:
                    del self.children[child.name]
                elif child.kind == "decoder" and all(self.finished.is_finished(c) for c in child.cameras):
                    child.finished = True  # nothing left for it to decode (until a reload)
                elif now_mono >= child.next_start:
                    child.start(self.ctx, self.config.log_level)
                continue
            alive = child.process.is_alive()
            if child.stopping:
                if alive and now_mono > (child.stop_deadline or 0.0):
                    log.warning("%s did not stop in time; killing it", child.name)
                    child.kill()
                    alive = False
                if not alive:
                    child.reap()
                    if child.retire:
                        del self.children[child.name]
                        log.info("%s stopped (removed by reload)", child.name)
                    elif child.restart_when_stopped:
                        child.restart_when_stopped = False
                        child.next_start, child.start_failures = 0.0, 0
                continue
            if not alive:
                if not self.policy.on_death(child, child.reap()):
                    return False
                continue
            if not child.served and self._serving(child):
                child.served, child.ever_served, child.start_failures = True, True, 0
            reason = self.hang_reason(child, now_wall)
            if reason is not None:
                pid = child.process.pid
                child.kill()
                log.error("%s (pid %s) %s; killed it", child.name, pid, reason)
                if not self.policy.on_death(child, child.reap()):
                    return False
        for cam in self.finished.poll():
            self.reconciler.release_ring(cam)
        self._maybe_ready()
        return True

    def _maybe_ready(self) -> None:
        if self._ready:
            return
        workers = [c for c in self.children.values() if c.kind == "worker"]
        if all(c.served for c in workers):
            self._ready = True
            log.info("ready: %d cameras, %d workers", len(self.rings), len(workers))
            self.start_gate.set()  # file cameras start now: no frame is read before a worker can take it
            self.notifier.ready(f"serving {len(self.rings)} cameras")

    def _stop_children(self) -> None:
        timeout = self.config.supervisor.stop_timeout_s
        workers = [c for c in self.children.values() if c.kind == "worker"]
        decoders = [c for c in self.children.values() if c.kind != "worker"]
        for group in (workers, decoders):  # workers first: they stop reading, then the decoders
            for child in group:
                child.request_stop(timeout)
            deadline = time.monotonic() + timeout
            for child in group:
                if child.process is not None:
                    child.process.join(max(0.0, deadline - time.monotonic()))
        for child in self.children.values():
            if child.process is not None and child.process.is_alive():
                log.warning("%s did not stop in time; killing it", child.name)
                child.kill()

    # -- reload ------------------------------------------------------------------------------
    def _reload(self) -> None:
        from streamdet.config import load_config

        self._reload_requested = False
        self.notifier.reloading()
        try:
            if self.config_path is None:
                raise StreamdetError("this daemon was started without a configuration file")
            new = load_config(self.config_path)
            too_big = shm_problem(new, held_bytes=ring_bytes(self.config))  # what our rings hold comes back
            if too_big:
                raise ConfigError(too_big)
            key_problems = check_curve(new) + mqtt_problems(new)  # bad key files: no publisher, no bridge
            if key_problems:
                raise ConfigError("; ".join(key_problems))
        except StreamdetError as exc:
            log.error("reload rejected, still running the previous configuration: %s", exc)
            self.notifier.ready("reload rejected: configuration invalid")
            return
        outcome = self.reconciler.apply(new)
        if outcome.restart_metrics:
            self._stop_metrics()
            self._start_metrics()
        if outcome.restart_web:
            self._stop_web()
            self._start_web()
        log.info("reloaded %s: %s", self.config_path, outcome.summary)
        self.notifier.ready(f"serving {len(self.rings)} cameras")

    # -- metrics -----------------------------------------------------------------------------
    def _start_metrics(self) -> None:
        from streamdet.supervisor.observe import start_metrics

        start_metrics(self.state, self.finished, self.reconciler.bridge)

    def _stop_metrics(self) -> None:
        from streamdet.supervisor.observe import stop_metrics

        stop_metrics(self.state)

    def _start_web(self) -> None:
        from streamdet.supervisor.observe import start_web

        start_web(self.state, self.finished)

    def _stop_web(self) -> None:
        from streamdet.supervisor.observe import stop_web

        stop_web(self.state)

    # -- main ----------------------------------------------------------------------------------
    def _open(self) -> None:
        removed = cleanup_stale_segments()
        if removed:
            log.info("removed %d stale shared-memory segments of a dead streamdet", len(removed))
        rdir = runtime_dir()
        self._pidfile = PidFile(rdir)
        self._pidfile.acquire()
        stale = cleanup_stale_run_dirs(rdir)
        if stale:
            log.info("removed %d run directories of a dead streamdet in %s", len(stale), rdir)
        too_big = shm_problem(self.config)  # rings that do not fit: SIGBUS on a later write, so refuse now
        if too_big:
            raise ConfigError(too_big)
        bridge_problems = mqtt_problems(self.config)  # no paho, unreadable TLS files: refuse, exit 2
        if bridge_problems:
            raise ConfigError("; ".join(bridge_problems))
        run_dir = Path(tempfile.mkdtemp(prefix=f"run-{os.getpid()}-", dir=rdir))
        if len(f"{run_dir}/publish.sock") > IPC_PATH_MAX:  # a Unix socket path's limit
            run_dir.rmdir()
            run_dir = Path(tempfile.mkdtemp(prefix=f"streamdet-run-{os.getpid()}-"))
            log.info("runtime directory %s is too long for a socket path; using %s", rdir, run_dir)
        self.state.run_dir = run_dir
        from streamdet.stopflag import StopFlag

        self.start_gate = StopFlag(self.ctx)
        self.proxy = self.reconciler.start_proxy(self.config)
        self.plan = make_plan(self.config, self.cpus)
        log.info("CPU budget: %d usable CPUs, %d cameras -> %d inference lane(s) of %d thread(s) per CPU worker",
                 self.cpus, sum(len(d.cameras) for d in self.plan.decoders), self.plan.inference.lanes,
                 self.plan.inference.threads)
        self.reconciler.create(self.plan)
        self._start_metrics()
        self._start_web()

    @property
    def internal_endpoint(self) -> str:
        return self.state.internal_endpoint

    @property
    def workdir(self) -> Path:
        return self.state.workdir

    def run(self) -> int:
        """Run until a signal (exit 0), a runtime failure (exit 1) or what cannot work without a
        change (exit 2); :mod:`streamdet.supervisor.policy` lists the exit statuses."""
        start_resource_tracker()  # before any ring or child: immune to a process-group SIGHUP
        previous = {s: signal.signal(s, self._on_signal) for s in self.SIGNAL_HANDLERS}
        status = EXIT_STOPPED
        try:
            self._open()
            last_watchdog = 0.0
            while self._signal is None:
                if self._reload_requested:
                    self._reload()
                if not self._supervise_once():
                    status = self.policy.exit_status
                    break
                if self.proxy is not None and not self.proxy.running:
                    self.proxy = self.reconciler.restart_proxy(self.config, "it stopped")
                wd = self.notifier.watchdog_interval_s
                if wd is not None and time.monotonic() - last_watchdog >= wd and self.healthy():
                    self.notifier.watchdog()
                    last_watchdog = time.monotonic()
                time.sleep(TICK_S)
            if self._signal is not None:
                log.info("received %s; stopping", signal.Signals(self._signal).name)
            self.notifier.stopping()
            self._stop_children()
            log.info("stopped")
            return status
        except StreamdetError as exc:
            log.error("%s", exc)
            return EXIT_UNUSABLE
        finally:
            for child in self.children.values():
                if child.stop_flag is not None:
                    child.stop_flag.set()
                child.kill()
            self._cleanup()
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _cleanup(self) -> None:
        self._stop_web()
        self._stop_metrics()
        if self.proxy is not None:
            with contextlib.suppress(Exception):
                self.proxy.stop()
        for ring in self.rings.values():
            with contextlib.suppress(Exception):
                ring.close()
            with contextlib.suppress(Exception):
                ring.unlink()
        self.rings.clear()
        if self.state.run_dir is not None:
            shutil.rmtree(self.state.run_dir, ignore_errors=True)
        if self._pidfile is not None:
            self._pidfile.release()


def run(config: Config, config_path: str | Path | None = None) -> int:
    """Run the daemon for ``config``; returns the process exit status."""
    return Supervisor(config, config_path).run()
