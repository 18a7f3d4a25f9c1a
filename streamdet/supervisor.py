"""The supervisor: the daemon's parent process.

Owns every shared-memory ring (creates them before spawning, unlinks them in one place, even when
a child was SIGKILLed), the publish proxy, and the child processes (spawn context): decoders and
one worker per device. It restarts a dead or hung child with exponential backoff, bounded per
time window (beyond ``restart_limit`` restarts in ``restart_window_s`` the daemon exits 1 and
systemd takes over), and stops everything on SIGTERM/SIGINT with exit status 0. Signal handlers
only record the signal; the supervision loop acts on it. The supervisor never imports torch.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path

from streamdet.config import Config
from streamdet.cpu_budget import InferencePlan, inference_budget, plan_inference, usable_cpus
from streamdet.metrics import CameraTotals, MetricsServer, render_metrics
from streamdet.pipeline.decode import CameraSource, DecoderSpec, decoder_main
from streamdet.pipeline.publish import PublishProxy
from streamdet.pipeline.ring import FrameRing, slot_bytes_for
from streamdet.pipeline.worker import EXIT_BAD_MODEL, WorkerSpec, worker_main
from streamdet.stopflag import StopFlag
from streamdet.systemd import SystemdNotifier

log = logging.getLogger("streamdet.supervisor")

SHM_PREFIX = "streamdet"
TICK_S = 0.2
BACKOFF_INITIAL_S = 1.0
BACKOFF_MAX_S = 30.0


def _child_entry(name: str, log_level: str, target: Callable, args: tuple) -> None:
    """Bootstrap of every child: process name, signals, crash dumps, then the stage's main."""
    import faulthandler

    faulthandler.enable()
    # before any child imports torch/OpenMP: idle inference threads sleep instead of spinning on the
    # cores that decoders need (an operator's explicit setting wins)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # Ctrl-C in a terminal reaches the whole process group; only the supervisor acts on it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError), open("/proc/self/comm", "w") as f:
        f.write(f"sd-{name}"[:15])
    from streamdet.logs import setup_logging

    setup_logging(log_level, f"streamdet-{name}")
    target(*args)


@dataclass
class Child:
    """One supervised child process and its restart bookkeeping."""

    name: str
    target: Callable
    args: tuple
    cameras: tuple[str, ...]
    heartbeat: object | None = None  # multiprocessing Value('d') for workers
    process: BaseProcess | None = None
    started_at: float = 0.0  # wall time of the last start
    restarts: deque = field(default_factory=deque)
    next_start: float = 0.0  # monotonic time before which it is not restarted
    backoff_s: float = BACKOFF_INITIAL_S
    ready: bool = False
    restart_count: int = 0  # since the daemon started (metrics)


def local_endpoint(endpoint: str) -> str:
    """The address a local client connects to for a bound endpoint (wildcard hosts -> loopback)."""
    for wildcard in ("tcp://*:", "tcp://0.0.0.0:"):
        if endpoint.startswith(wildcard):
            return "tcp://127.0.0.1:" + endpoint[len(wildcard):]
    return endpoint


def cleanup_stale_segments(shm_dir: Path = Path("/dev/shm")) -> list[str]:
    """Unlink rings left by a streamdet whose supervisor died (its pid is gone); returns their names."""
    removed = []
    if not shm_dir.is_dir():
        return removed
    pattern = re.compile(rf"^{SHM_PREFIX}_(\d+)_\d+$")
    for entry in shm_dir.iterdir():
        m = pattern.match(entry.name)
        if not m:
            continue
        pid = int(m.group(1))
        try:
            os.kill(pid, 0)
            continue  # that supervisor still runs
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        with contextlib.suppress(OSError):
            entry.unlink()
            removed.append(entry.name)
    return removed


class Supervisor:
    """Runs the daemon for one validated configuration; see the module docstring."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.ctx = mp.get_context("spawn")
        self.stop_event = StopFlag(self.ctx)
        self.start_gate = StopFlag(self.ctx)  # set once every worker is ready: file cameras start then
        self.rings: dict[str, FrameRing] = {}
        self.children: list[Child] = []
        self.proxy: PublishProxy | None = None
        self.notifier = SystemdNotifier()
        self._signal: int | None = None
        self._tmpdir: str | None = None
        self._ready = False
        self._exit_status = 1  # when the supervision loop gives up
        self.metrics: MetricsServer | None = None
        self._camera_totals = CameraTotals()
        self._stats_thread: threading.Thread | None = None
        self._stats_stop = threading.Event()

    # -- signals -----------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: object) -> None:
        self._signal = signum

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """Ask the supervision loop to stop (as a signal would)."""
        self._signal = signum

    # -- set-up ------------------------------------------------------------------------------
    def _cameras(self) -> list:
        return [c for c in self.config.cameras if c.enabled]

    def _create_rings(self) -> dict[str, str]:
        slot_bytes = slot_bytes_for(self.config.ring.max_width, self.config.ring.max_height, "yuv420p")
        names = {}
        for i, cam in enumerate(self._cameras()):
            name = f"{SHM_PREFIX}_{os.getpid()}_{i}"
            self.rings[cam.id] = FrameRing.create(name, cam.id, self.config.ring.slots, slot_bytes)
            names[cam.id] = name
        return names

    def _camera_source(self, cam) -> CameraSource:
        c = self.config
        return CameraSource(
            camera_id=cam.id,
            url=str(cam.url),
            rtsp_transport=cam.rtsp_transport,
            realtime=cam.realtime,
            loop=cam.loop,
            max_fps=cam.max_fps,
            open_timeout_s=c.decode.open_timeout_s,
            read_timeout_s=c.decode.read_timeout_s,
            stall_timeout_s=c.decode.stall_timeout_s,
            backoff_initial_s=c.reconnect.initial_s,
            backoff_max_s=c.reconnect.max_s,
            backoff_jitter=c.reconnect.jitter,
            max_width=c.ring.max_width,
            max_height=c.ring.max_height,
            threads=self._decoder_threads(),
        )

    def _decoder_threads(self) -> int:
        """FFmpeg threads per camera: with at least as many cameras as CPUs, one each (threads
        within a decoder would only add switching: measured 2.6 vs 2.9 ms CPU per 720p frame),
        else FFmpeg's own choice (0), which lowers a few big streams' latency."""
        configured = self.config.decode.threads
        if configured != "auto":
            return int(configured)
        return 1 if len(self._cameras()) >= usable_cpus() else 0

    def _plan_children(self, ring_names: dict[str, str], internal_endpoint: str) -> None:
        c = self.config
        cams = self._cameras()
        per = max(1, c.decode.cameras_per_process)
        for k in range(0, len(cams), per):
            group = cams[k : k + per]
            spec = DecoderSpec(
                sources=[self._camera_source(cam) for cam in group],
                ring_names={cam.id: ring_names[cam.id] for cam in group},
                start_gate=self.start_gate,
            )
            name = f"decoder-{group[0].id}" if per == 1 else f"decoder-{k // per}"
            self.children.append(Child(name, decoder_main, (spec, self.stop_event), tuple(cam.id for cam in group)))
        devices = list(c.devices)
        plan = self._inference_plan(len(cams))
        for d, device in enumerate(devices):
            mine = [cam.id for i, cam in enumerate(cams) if i % len(devices) == d]
            if not mine:
                continue
            heartbeat = self.ctx.Value("d", 0.0, lock=False)
            spec = WorkerSpec(
                name=f"worker-{device.replace(':', '')}",
                device=device,
                ring_names={cam: ring_names[cam] for cam in mine},
                weights=str(c.model.weights),
                img_size=c.model.img_size,
                conf_thres=c.model.conf_thres,
                iou_thres=c.model.iou_thres,
                max_det=c.model.max_det,
                classes=tuple(c.model.classes) if c.model.classes is not None else None,
                half=c.model.half,
                max_batch=c.batching.max_batch,
                max_wait_ms=c.batching.max_wait_ms,
                publish_endpoint=internal_endpoint,
                stats_interval_s=c.publish.stats_interval_s,
                backend=c.model.backend,
                threads=plan.threads if device == "cpu" else None,
                lanes=plan.lanes if device == "cpu" else 1,
                export_cache=str(c.model.export_cache) if c.model.export_cache is not None else None,
            )
            self.children.append(
                Child(spec.name, worker_main, (spec, self.stop_event, heartbeat), tuple(mine), heartbeat=heartbeat)
            )

    def _inference_plan(self, cameras: int) -> InferencePlan:
        """Lanes and intra-op threads of each CPU worker: configured, or from the CPU budget."""
        t = self.config.threads
        lanes = None if t.lanes == "auto" else int(t.lanes)
        threads = None if t.inference == "auto" else int(t.inference)
        cpus = usable_cpus()
        budget = inference_budget(cpus, max(1, sum(1 for d in self.config.devices if d == "cpu")))
        plan = plan_inference(budget, lanes, threads)
        log.info("CPU budget: %d usable CPUs, %d cameras -> %d inference lane(s) of %d thread(s) per CPU worker",
                 cpus, cameras, plan.lanes, plan.threads)
        return plan

    # -- children ----------------------------------------------------------------------------
    def _start(self, child: Child) -> None:
        if child.heartbeat is not None:
            child.heartbeat.value = 0.0
        child.process = self.ctx.Process(
            target=_child_entry,
            args=(child.name, self.config.log_level, child.target, child.args),
            name=child.name,
            daemon=False,
        )
        child.process.start()
        child.started_at = time.time()
        log.info("started %s (pid %d)", child.name, child.process.pid)

    def _last_beat(self, child: Child) -> float | None:
        """Wall time of the child's last sign of life; None for a decoder whose cameras all ended
        (a finished file without ``loop``): it is idle, not hung."""
        if child.heartbeat is not None:
            return abs(child.heartbeat.value)  # negative while the worker loads (StartupBeat)
        statuses = [self.rings[cam].status() for cam in child.cameras]
        live = [st.heartbeat for st in statuses if st.state != "ended"]
        return max(live) if live else None

    def _is_hung(self, child: Child, now_wall: float) -> bool:
        beat = self._last_beat(child)
        if beat is None:
            return False
        return now_wall - max(beat, child.started_at) > self.config.supervisor.hang_timeout_s

    def _schedule_restart(self, child: Child, reason: str) -> bool:
        """Record a restart; returns False when the child exceeded its restart budget."""
        now = time.monotonic()
        window = self.config.supervisor.restart_window_s
        while child.restarts and now - child.restarts[0] > window:
            child.restarts.popleft()
        child.restarts.append(now)
        child.restart_count += 1
        if len(child.restarts) > self.config.supervisor.restart_limit:
            log.error("%s %s; %d restarts within %.0f s, giving up", child.name, reason, len(child.restarts) - 1,
                      window)
            return False
        if time.time() - child.started_at > window:
            child.backoff_s = BACKOFF_INITIAL_S  # it ran fine for a while: start over
        child.next_start = now + child.backoff_s
        log.warning("%s %s; restarting in %.1f s", child.name, reason, child.backoff_s)
        child.backoff_s = min(child.backoff_s * 2, BACKOFF_MAX_S)
        child.process = None
        return True

    def _supervise_once(self) -> bool:
        """One pass over the children; returns False when the daemon must give up."""
        now_wall = time.time()
        for child in self.children:
            proc = child.process
            if proc is None:
                if time.monotonic() >= child.next_start:
                    self._start(child)
                continue
            if not proc.is_alive():
                proc.join(0)
                code = proc.exitcode
                if code == EXIT_BAD_MODEL:
                    log.error("%s cannot load the model; stopping (see the error above)", child.name)
                    self._exit_status = 2
                    return False
                what = f"died (signal {-code})" if code is not None and code < 0 else f"exited with status {code}"
                if not self._schedule_restart(child, what):
                    return False
                continue
            if child.heartbeat is not None and not child.ready and child.heartbeat.value > 0:
                child.ready = True
            if self._is_hung(child, now_wall):
                log.error("%s (pid %d) sent no heartbeat for %.0f s; killing it", child.name, proc.pid,
                          self.config.supervisor.hang_timeout_s)
                proc.kill()
                proc.join(5)
                if not self._schedule_restart(child, "hung"):
                    return False
        if not self._ready and all(c.ready for c in self.children if c.heartbeat is not None):
            self._ready = True
            log.info("ready: %d cameras, %d workers", len(self.rings),
                     sum(1 for c in self.children if c.heartbeat is not None))
            self.start_gate.set()  # file cameras start now: no frame is read before a worker can take it
            self.notifier.ready(f"serving {len(self.rings)} cameras")
        return True

    def _stop_children(self) -> None:
        self.stop_event.set()
        deadline = time.monotonic() + self.config.supervisor.stop_timeout_s
        for child in reversed(self.children):  # workers first, then decoders
            if child.process is not None:
                child.process.join(max(0.0, deadline - time.monotonic()))
        for child in self.children:
            proc = child.process
            if proc is not None and proc.is_alive():
                log.warning("%s did not stop in time; killing it", child.name)
                proc.kill()
                proc.join(2)

    # -- metrics -----------------------------------------------------------------------------
    def _collect_stats(self, endpoint: str) -> None:
        from streamdet.client.subscriber import Subscriber

        with Subscriber(endpoint, cameras=[], stats=True) as sub:
            while not self._stats_stop.is_set():
                msg = sub.recv(timeout=0.5)
                if msg is not None:
                    self._camera_totals.add(msg)

    def render_metrics(self) -> str:
        """Current Prometheus exposition text."""
        return render_metrics(
            {cam: ring.status() for cam, ring in list(self.rings.items())},
            self._camera_totals.snapshot(),
            {c.name: c.restart_count for c in self.children},
            self._camera_totals.workers(),
        )

    def _start_metrics(self) -> None:
        m = self.config.metrics
        if m.port is None:
            return
        self._stats_thread = threading.Thread(
            target=self._collect_stats, args=(local_endpoint(self.config.publish.endpoint),),
            name="streamdet-stats", daemon=True,
        )
        self._stats_thread.start()
        self.metrics = MetricsServer(m.host, m.port, self.render_metrics).start()
        log.info("metrics on http://%s:%d/metrics", m.host, self.metrics.port)

    def _cleanup(self) -> None:
        self._stats_stop.set()
        if self.metrics is not None:
            with contextlib.suppress(Exception):
                self.metrics.stop()
        if self._stats_thread is not None:
            self._stats_thread.join(2)
        if self.proxy is not None:
            with contextlib.suppress(Exception):
                self.proxy.stop()
        for ring in self.rings.values():
            with contextlib.suppress(Exception):
                ring.close()
            with contextlib.suppress(Exception):
                ring.unlink()
        self.rings.clear()
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    # -- main ----------------------------------------------------------------------------------
    def run(self) -> int:
        """Run until a signal (exit 0), a crash loop (exit 1) or a model that cannot load (exit 2)."""
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            removed = cleanup_stale_segments()
            if removed:
                log.info("removed %d stale shared-memory segments of a dead streamdet", len(removed))
            self._tmpdir = tempfile.mkdtemp(prefix="streamdet-")
            internal = f"ipc://{self._tmpdir}/publish.sock"
            self.proxy = PublishProxy(internal, self.config.publish.endpoint, self.config.publish.hwm)
            self.proxy.start()
            log.info("publishing on %s", self.config.publish.endpoint)
            self._plan_children(self._create_rings(), internal)
            self._start_metrics()
            status = 0
            last_watchdog = 0.0
            while self._signal is None:
                if not self._supervise_once():
                    status = self._exit_status
                    break
                wd = self.notifier.watchdog_interval_s
                if wd is not None and time.monotonic() - last_watchdog >= wd:
                    self.notifier.watchdog()
                    last_watchdog = time.monotonic()
                time.sleep(TICK_S)
            if self._signal is not None:
                log.info("received %s; stopping", signal.Signals(self._signal).name)
            self.notifier.stopping()
            self._stop_children()
            log.info("stopped")
            return status
        finally:
            self.stop_event.set()
            for child in self.children:
                if child.process is not None and child.process.is_alive():
                    child.process.kill()
                    child.process.join(2)
            self._cleanup()
            for s, handler in previous.items():
                signal.signal(s, handler)


def run(config: Config) -> int:
    """Run the daemon for ``config``; returns the process exit status."""
    return Supervisor(config).run()
