"""A real ``streamdet run`` as a subprocess, for end-to-end fault tests.

    daemon = Daemon(tmp_path, config_text)      # config may use {endpoint}
    daemon.start(); daemon.wait_ready()         # "streamdet.supervisor: ready" in its log
    messages = MessageLog(daemon.endpoint)      # background subscriber: det/ and stats/
    pid = daemon.child_pid("sd-decoder-a")     # children by /proc comm
    ...
    assert daemon.stop() == 0
    assert_clean(daemon, fds_before)            # no orphan, no segment, no pid file, no fd leak

Each daemon has its own runtime directory (``RUNTIME_DIRECTORY``), its own ipc:// endpoint and
its own log file (stderr; stdout separately). While it runs, a watcher thread remembers every
process below it, so that after it exits (or is killed) the test can check none is left.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamdet.client import Subscriber
from streamdet.supervisor.runtime import PID_FILE, segments_of
from tests.helpers.procfs import ProcInfo, alive, children, descendants, open_fd_count, proc_info

READY_LINE = "streamdet.supervisor: ready"
READY_TIMEOUT_S = 180.0


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.1) -> bool:
    """Poll ``predicate`` until it is truthy or ``timeout`` passes; returns whether it became truthy."""
    end = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(interval)


def streamdet_env(runtime_dir: Path | None = None) -> dict[str, str]:
    """The environment of a streamdet subprocess: quiet OpenMP, unbuffered, its own runtime directory."""
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PYTHONUNBUFFERED="1")
    if runtime_dir is not None:
        env["RUNTIME_DIRECTORY"] = str(runtime_dir)
    return env


def streamdet_cli(*args: str, env: dict[str, str] | None = None,
                  timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``streamdet ARGS`` to completion (check, reload, ...)."""
    return subprocess.run([sys.executable, "-m", "streamdet", *args], env=env or streamdet_env(), text=True,
                          capture_output=True, timeout=timeout)


def report(what: str, **values: Any) -> None:
    """Print one line of measured figures (``pytest -s`` shows them; the fault matrix quotes them)."""
    text = ", ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
    print(f"[fault] {what}: {text}", flush=True)


def run_until_published(config: Path, endpoint: str, expected: int, timeout_s: float) -> dict[str, list[dict]]:
    """Run ``streamdet run config`` until ``expected`` detection messages arrived on ``endpoint`` (or
    none came for 20 s), stop it with SIGTERM and check it exited 0; the messages by camera, in order."""
    sub = Subscriber(endpoint)
    proc = subprocess.Popen([sys.executable, "-m", "streamdet", "run", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    got: dict[str, list[dict]] = defaultdict(list)
    try:
        deadline = time.monotonic() + timeout_s
        last = time.monotonic()
        while time.monotonic() < deadline and sum(map(len, got.values())) < expected:
            msg = sub.recv(timeout=0.5)
            if msg is not None:
                got[msg["camera"]].append(msg)
                last = time.monotonic()
            elif time.monotonic() - last > 20 and got:
                break
    finally:
        sub.close()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out.decode()[-3000:]
    return got


@dataclass(frozen=True)
class Received:
    """A message and when this process received it (time.monotonic())."""

    t: float
    msg: dict[str, Any]


@dataclass(frozen=True)
class Replacement:
    """A child replaced after a fault: the new pid and, in seconds after the fault, when the old
    process was gone, when the new one existed and when it had taken the old one's name."""

    pid: int | None
    gone_s: float | None
    started_s: float | None
    named_s: float | None


class MessageLog:
    """A subscriber (every camera and stats) in a background thread, recording receive times."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self._lock = threading.Lock()
        self._det: dict[str, list[Received]] = defaultdict(list)
        self._stats: list[Received] = []
        self._stop = threading.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="message-log", daemon=True)
        self._thread.start()
        self._started.wait(10)

    def _run(self) -> None:
        sub = Subscriber(self.endpoint, stats=True)
        try:
            self._started.set()
            while not self._stop.is_set():
                msg = sub.recv(timeout=0.1)
                if msg is None:
                    continue
                rec = Received(time.monotonic(), msg)
                with self._lock:
                    if msg["type"] == "stats":
                        self._stats.append(rec)
                    else:
                        self._det[msg["camera"]].append(rec)
        finally:
            sub.close()

    def dets(self, camera: str, since: float = 0.0, until: float = float("inf")) -> list[Received]:
        """Detection messages of ``camera`` received in [since, until] (monotonic seconds)."""
        with self._lock:
            return [r for r in self._det.get(camera, ()) if since <= r.t <= until]

    def stats(self, since: float = 0.0) -> list[Received]:
        with self._lock:
            return [r for r in self._stats if r.t >= since]

    def states(self, camera: str, since: float = 0.0) -> list[str]:
        """The camera's decoder state in each stats message received since ``since``."""
        return [r.msg["cameras"][camera]["state"] for r in self.stats(since) if camera in r.msg["cameras"]]

    def wait_dets(self, camera: str, count: int = 1, since: float = 0.0, timeout: float = 30.0) -> bool:
        """Wait until ``count`` messages of ``camera`` arrived since ``since``."""
        return wait_for(lambda: len(self.dets(camera, since)) >= count, timeout)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


def longest_gap(recs: list[Received], start: float, end: float) -> tuple[float, float]:
    """The longest time in [start, end] without a message among ``recs`` (the edges count):
    (its length, when it began)."""
    times = [start] + [r.t for r in recs if start <= r.t <= end] + [end]
    return max((b - a, a) for a, b in zip(times, times[1:], strict=False))


def max_gap(recs: list[Received], start: float, end: float) -> float:
    """The length of :func:`longest_gap`."""
    return longest_gap(recs, start, end)[0]


def seq_breaks(recs: list[Received]) -> list[tuple[int, int]]:
    """Consecutive messages whose ``seq`` does not grow by exactly 1: (previous, next) pairs."""
    seqs = [r.msg["seq"] for r in recs]
    return [(a, b) for a, b in zip(seqs, seqs[1:], strict=False) if b != a + 1]


class Daemon:
    """One ``streamdet run`` subprocess in ``workdir`` (see the module docstring).

    ``config_text`` may contain ``{endpoint}``, replaced by this daemon's ipc:// endpoint.
    ``runtime_dir``: share one between daemons started one after another (default: its own).
    """

    def __init__(self, workdir: Path, config_text: str, name: str = "daemon", runtime_dir: Path | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.dir = workdir
        self.name = name
        self.endpoint = f"ipc://{workdir}/{name}.sock"
        self.config_path = workdir / f"{name}.yaml"
        # its own by default, short: the internal socket's path lies below it (107 bytes at most)
        self.runtime_dir = runtime_dir or Path(tempfile.mkdtemp(prefix=f"sd-{name}-"))
        self._own_runtime_dir = runtime_dir is None
        self.log_path = workdir / f"{name}.log"
        self.stdout_path = workdir / f"{name}.out"
        self.env = streamdet_env(self.runtime_dir)
        self.proc: subprocess.Popen[bytes] | None = None
        self.seen: dict[int, ProcInfo] = {}  # every process seen below the daemon while it ran
        self._watch_stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self.write_config(config_text)

    # -- lifecycle -----------------------------------------------------------------------------
    def write_config(self, text: str) -> None:
        """Write the configuration file (read at start and by every reload)."""
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text.replace("{endpoint}", self.endpoint))
        tmp.replace(self.config_path)

    def start(self, new_session: bool = False) -> Daemon:
        """``new_session``: in its own session and process group (pgid = its pid), as under a
        process manager; a test may then signal the whole group."""
        with open(self.log_path, "ab") as err, open(self.stdout_path, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "streamdet", "run", str(self.config_path)],
                                         stdout=out, stderr=err, env=self.env, start_new_session=new_session)
        self._watcher = threading.Thread(target=self._watch, name=f"watch-{self.name}", daemon=True)
        self._watcher.start()
        return self

    def _watch(self) -> None:
        assert self.proc is not None
        while not self._watch_stop.is_set() and self.proc.poll() is None:
            self.seen.update(descendants(self.proc.pid))
            self._watch_stop.wait(0.5)

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> float:
        """Wait for the ready line; returns the seconds it took. Fails with the log tail if the daemon exits."""
        t0 = time.monotonic()
        ok = wait_for(lambda: READY_LINE in self.log() or not self.running(), timeout, 0.2)
        if not (ok and READY_LINE in self.log()):
            code = self.proc.poll() if self.proc is not None else None
            why = f"not ready after {timeout:.0f} s" if self.running() else f"exited with status {code}"
            raise AssertionError(f"{self.name} {why}:\n{self.tail()}")
        return time.monotonic() - t0

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def wait_exit(self, timeout: float) -> int | None:
        """The exit status, or None if it still runs after ``timeout`` seconds."""
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._finished()
        return code

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait; returns the exit status (killed, and None, if it does not exit in time)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.seen.update(descendants(self.pid))
            self.proc.send_signal(signal.SIGTERM)
        code = self.wait_exit(timeout)
        if code is None:
            self.proc.kill()
            self.proc.wait(10)
        self._finished()
        return code

    def _finished(self) -> None:
        """The daemon exited: stop watching; remove its own runtime directory if it is empty
        (what a daemon leaves there stays for assert_clean to report)."""
        self._watch_stop.set()
        if self._watcher is not None:
            self._watcher.join(5)
        if self._own_runtime_dir:
            with contextlib.suppress(OSError):
                self.runtime_dir.rmdir()

    # -- log -----------------------------------------------------------------------------------
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def mark(self) -> int:
        """A position in the log: :meth:`log_since` and :meth:`wait_log` look after it."""
        return len(self.log())

    def log_since(self, mark: int) -> str:
        return self.log()[mark:]

    def tail(self, chars: int = 4000) -> str:
        return self.log()[-chars:]

    def wait_log(self, pattern: str, since: int = 0, timeout: float = 30.0) -> str | None:
        """The first log line after ``since`` matching the regular expression, or None after ``timeout``."""
        rx = re.compile(pattern)
        found: list[str] = []

        def look() -> bool:
            found[:] = [ln for ln in self.log_since(since).splitlines() if rx.search(ln)][:1]
            return bool(found)

        wait_for(look, timeout, 0.1)
        return found[0] if found else None

    # -- children ------------------------------------------------------------------------------
    def children(self) -> dict[str, int]:
        """Live direct children by name (/proc comm, e.g. ``sd-decoder-a``, ``sd-worker-cpu``)."""
        return {p.comm: p.pid for p in children(self.pid).values()}

    def pids(self) -> set[int]:
        """The pids of its live direct children."""
        return set(children(self.pid))

    def child_pid(self, comm: str) -> int | None:
        return self.children().get(comm[:15])

    def wait_replacement(self, old: int, known: set[int], since: float, timeout: float) -> Replacement:
        """After a fault injected at ``since`` into child ``old``: wait until it is gone (killed and
        reaped) and a child not in ``known`` exists, then until that one has renamed itself like
        ``old`` (a spawned child sets its name only after its imports)."""
        old_info = proc_info(old)
        name = old_info.comm if old_info is not None else None
        gone_s = started_s = named_s = None
        pid = None
        end = since + timeout
        while time.monotonic() < end and (gone_s is None or pid is None):
            now = time.monotonic() - since
            if gone_s is None and (old_info is None or not alive(old_info)):
                gone_s = now
            if pid is None:
                new = set(children(self.pid)) - known
                if new:
                    pid, started_s = min(new), now
            time.sleep(0.1)
        if pid is not None and wait_for(lambda: getattr(proc_info(pid), "comm", None) == name,
                                        max(0.0, end + 30 - time.monotonic()), 0.1):
            named_s = time.monotonic() - since
        return Replacement(pid, gone_s, started_s, named_s)


def assert_clean(daemon: Daemon, fds_before: int | None = None, grace_s: float = 5.0) -> None:
    """After the daemon exited: no process it started is left, none of its /dev/shm rings, no pid
    file and not its run-<pid>-* directory in its runtime directory, and (given ``fds_before``)
    this process has no more file descriptors open than before (subscribers closed first).

    ``grace_s``: multiprocessing's resource tracker exits by itself once the last process holding
    its pipe is gone, and children killed by PR_SET_PDEATHSIG need a moment to be reaped.
    """
    assert daemon.proc is not None and daemon.proc.poll() is not None, "the daemon still runs"
    pid = daemon.pid
    assert daemon.seen, "no child process was ever seen: the watcher did not work"
    wait_for(lambda: not any(alive(p) for p in daemon.seen.values()) and not segments_of(pid), grace_s)
    left = [f"{p.pid} {p.comm}" for p in daemon.seen.values() if alive(p)]
    assert not left, f"processes of daemon {pid} left running: {left}"
    assert segments_of(pid) == [], f"shared memory left: {segments_of(pid)}"
    rdir = daemon.runtime_dir
    assert not (rdir / PID_FILE).exists(), f"pid file left: {rdir / PID_FILE}"
    leftovers = sorted(p.name for p in rdir.glob(f"run-{pid}-*")) if rdir.exists() else []
    assert not leftovers, f"run directory left in {rdir}: {leftovers}"
    if fds_before is not None:
        assert open_fd_count() <= fds_before, f"file descriptors leaked: {open_fd_count()} open, {fds_before} before"
