"""The streamdet side of the benchmark: the daemon as a subprocess, watched by a subscriber.

``DaemonProcess`` starts ``python -m streamdet run cfg.yaml`` in its own session with its log in
a file, and always stops it (SIGTERM, then SIGKILL of its process group) even when the benchmark
is interrupted. ``run_unpaced`` plays non-looping files as fast as possible and waits for every
camera's last frame; ``run_trial`` plays paced looping files as live cameras and judges one
capacity trial with :mod:`streamdet.bench.accounting`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from streamdet.bench.accounting import TrialResult, account_daemon_window
from streamdet.bench.stages import summarize_stats
from streamdet.bench.workload import CLIP_FPS, DaemonSettings, cameras_for, free_port, write_daemon_config
from streamdet.errors import StreamdetError

STARTUP_TIMEOUT_S = 180.0  # python + torch import + model warm-up, on a loaded 2-core machine
RCVHWM = 200000


class BenchError(StreamdetError):
    """The benchmark could not measure (the daemon failed, a clip is unreadable, ...)."""


class DaemonProcess:
    """``streamdet run`` on a generated configuration, as a context manager that always stops it.

    ``command`` replaces the ``python -m streamdet run <config>`` command line (tests).
    """

    def __init__(self, config: Path, log_path: Path, stop_timeout_s: float = 20.0,
                 command: Sequence[str] | None = None) -> None:
        self.config = config
        self.log_path = log_path
        self.stop_timeout_s = stop_timeout_s
        self.command = list(command) if command is not None else [sys.executable, "-m", "streamdet", "run",
                                                                   str(config)]
        self.proc: subprocess.Popen | None = None

    def start(self) -> DaemonProcess:
        """Spawn the daemon (stdout and stderr to the log file)."""
        # a runtime directory of its own (pid file, sockets): a production daemon may run beside it
        runtime = self.log_path.parent / f"{self.log_path.stem}.run"
        runtime.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "RUNTIME_DIRECTORY": str(runtime)}  # (a long path: the daemon then keeps
        # its sockets under /tmp instead)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, env=env)
        return self

    def log_tail(self, lines: int = 25) -> str:
        """The last ``lines`` lines of the daemon's log."""
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(deque(f, maxlen=lines))
        except OSError:
            return ""

    def check_alive(self) -> None:
        """Raise BenchError (with the log tail) if the daemon has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(f"the daemon exited with status {self.proc.returncode} (log {self.log_path}):\n"
                             f"{self.log_tail()}")

    def stop(self) -> int | None:
        """SIGTERM, wait ``stop_timeout_s``, then SIGKILL its whole process group; returns the status."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                pass
            except KeyboardInterrupt:  # a second Ctrl-C: do not wait any longer
                pass
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        return proc.returncode

    def __enter__(self) -> DaemonProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class _Session:
    """A daemon plus a subscriber connected before it starts (nothing published is missed)."""

    def __init__(self, settings: DaemonSettings, workdir: Path, name: str, cameras: Sequence) -> None:
        from streamdet.client import Subscriber

        endpoint = f"tcp://127.0.0.1:{free_port()}"
        if settings.detect_every is not None:  # its own config and log beside the untracked run's
            name = f"{name}-track{settings.detect_every}"
        config = write_daemon_config(workdir / f"{name}.yaml", settings, endpoint, cameras)
        self.sub = Subscriber(endpoint, stats=True, rcvhwm=RCVHWM)
        self.daemon = DaemonProcess(config, workdir / f"{name}.log")
        self.detections: list[dict[str, Any]] = []
        self.stats: list[dict[str, Any]] = []

    def __enter__(self) -> _Session:
        try:
            self.daemon.start()
        except BaseException:
            self.sub.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.daemon.stop()
        finally:
            self.sub.close()

    def pump(self, until: Callable[[], bool], timeout_s: float, on_detection: Callable[[dict], None] | None = None,
             ) -> bool:
        """Receive until ``until()`` is true (returns True) or ``timeout_s`` passes (False)."""
        deadline = time.monotonic() + timeout_s
        last_check = 0.0
        while not until():
            now = time.monotonic()
            if now >= deadline:
                return False
            if now - last_check > 0.5:
                self.daemon.check_alive()
                last_check = now
            msg = self.sub.recv(timeout=min(0.2, max(0.0, deadline - now)))
            if msg is None:
                continue
            if msg["type"] == "stats":
                self.stats.append(msg)
            else:
                self.detections.append(msg)
                if on_detection is not None:
                    on_detection(msg)
        return True


def run_unpaced(settings: DaemonSettings, clips: Sequence[Path], frames: int, workdir: Path,
                on_frame: Callable[[int], None] | None = None, idle_timeout_s: float | None = None) -> dict[str, Any]:
    """Play every clip once as fast as possible; count what was published.

    Finishes when each camera's last frame (index ``frames - 1``) was published, or when the stats
    say every camera ended and nothing was published for ``idle_timeout_s`` (default: three stats
    intervals, at least 5 s). frames/s is the total
    published frames over the time from the first to the last message (``ts_publish``), which
    leaves out daemon start-up and model warm-up.
    """
    cams = cameras_for(clips, len(clips), realtime=False, loop=False)
    idle_s = idle_timeout_s if idle_timeout_s is not None else max(5.0, 3 * settings.stats_interval_s)
    ids = [c.id for c in cams]
    seen: dict[str, set[int]] = {c: set() for c in ids}
    state = {"last_msg": time.monotonic(), "ended": False}

    def on_detection(msg: dict) -> None:
        seen.setdefault(msg["camera"], set()).add(msg["frame"])
        state["last_msg"] = time.monotonic()
        if on_frame is not None:
            on_frame(sum(len(s) for s in seen.values()))

    with _Session(settings, workdir, "daemon-unpaced", cams) as session:
        def done() -> bool:
            if all(frames - 1 in seen[c] for c in ids):
                return True
            if session.stats:
                last = session.stats[-1].get("cameras", {})
                ended = all(isinstance(last.get(c), dict) and last[c].get("state") == "ended" for c in ids)
                if ended and time.monotonic() - state["last_msg"] > idle_s:
                    return True
                if not ended:
                    state["last_msg"] = max(state["last_msg"], time.monotonic() - 1.0)
            return False

        complete = session.pump(done, STARTUP_TIMEOUT_S + frames * len(ids) * 0.5, on_detection)
        session.pump(lambda: False, min(2.5, 1.5 * settings.stats_interval_s))  # one more stats message
        dets, stats, seq_lost = session.detections, session.stats, session.sub.lost
    published = sum(len(s) for s in seen.values())
    expected = frames * len(ids)
    ts = [m["ts_publish"] for m in dets]
    span = max(ts) - min(ts) if ts else 0.0
    return {
        "cameras": len(ids),
        "frames_per_camera": frames,
        "frames_expected": expected,
        "frames_published": published,
        "frames_lost": expected - published,
        "messages": len(dets),
        # published with the tracker's boxes, without the detector (detect_every > 1): published, not lost
        "tracked_only": sum(1 for m in dets if m.get("inferred") is False),
        "seq_gaps": seq_lost,
        "span_s": round(span, 3),
        "fps": published / span if span > 0 else None,
        "fps_definition": "distinct (camera, frame) published / (last ts_publish - first ts_publish)",
        "complete": complete and all(frames - 1 in seen[c] for c in ids),
        "per_camera": {c: {"published": len(seen[c]), "lost": frames - len(seen[c])} for c in ids},
        "stages": summarize_stats(stats),
    }


def run_trial(settings: DaemonSettings, clips: Sequence[Path], clip_frames: int, n: int, rate: float,
              workdir: Path, *, seconds: float, warmup_s: float, latency_ms: float,
              max_drop_pct: float = 1.0) -> TrialResult:
    """One capacity trial: ``n`` paced looping file cameras at detection rate ``rate``.

    Waits until every camera published once, lets ``warmup_s`` pass, then judges the frames
    captured in the next ``seconds`` (collecting until ``latency_ms`` after the window, so late
    frames still count as published-but-slow rather than dropped).
    """
    cams = cameras_for(clips, n, realtime=True, loop=True, rate=rate)
    ids = {c.id for c in cams}
    with _Session(settings, workdir, f"daemon-capacity-{rate:g}fps-n{n}", cams) as session:
        started = session.pump(lambda: ids <= {m["camera"] for m in session.detections}, STARTUP_TIMEOUT_S)
        if not started and not session.detections:
            raise BenchError(f"the daemon published nothing in {STARTUP_TIMEOUT_S:g} s (log {session.daemon.log_path}):"
                             f"\n{session.daemon.log_tail()}")
        t_start = time.time() + warmup_s
        t_end = t_start + seconds
        session.pump(lambda: time.time() >= t_end + latency_ms / 1000.0 + 0.3, seconds + warmup_s + 60.0)
        session.detections = [m for m in session.detections if m["ts_capture"] >= t_start]
    return account_daemon_window(session.detections, sorted(ids), rate=rate, fps=CLIP_FPS,
                                 clip_frames=clip_frames, t_start=t_start, t_end=t_end, stats=session.stats,
                                 latency_bound_ms=latency_ms, max_drop_pct=max_drop_pct)
