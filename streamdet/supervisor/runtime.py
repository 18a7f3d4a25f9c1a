"""Where a running daemon keeps its run-time files, and how other commands find it.

The runtime directory holds the pid file (``streamdet.pid``, which ``streamdet reload`` signals)
and a private sub-directory per daemon for the internal ZeroMQ socket and the workers' live
settings. It is systemd's ``$RUNTIME_DIRECTORY`` (``RuntimeDirectory=streamdet``), else
``$XDG_RUNTIME_DIR/streamdet``, else ``/tmp/streamdet-<uid>``. Shared-memory rings are named
``streamdet_<supervisor pid>_<camera id>``: stable per camera across reloads, and a daemon that
died leaves names that the next one recognises and removes.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
from collections.abc import Mapping
from pathlib import Path

from streamdet.camera_id import CAMERA_ID_PATTERN
from streamdet.errors import StreamdetError

SHM_PREFIX = "streamdet"
PID_FILE = "streamdet.pid"
_RING_RE = re.compile(rf"^{SHM_PREFIX}_(\d+)_({CAMERA_ID_PATTERN})$")


def runtime_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The runtime directory (see the module docstring); not created here."""
    env = os.environ if environ is None else environ
    if env.get("RUNTIME_DIRECTORY"):
        return Path(env["RUNTIME_DIRECTORY"].split(":")[0])
    if env.get("XDG_RUNTIME_DIR"):
        return Path(env["XDG_RUNTIME_DIR"]) / "streamdet"
    return Path("/tmp") / f"streamdet-{os.getuid()}"


def ring_name(supervisor_pid: int, camera_id: str) -> str:
    """The shared-memory name of one camera's ring."""
    return f"{SHM_PREFIX}_{supervisor_pid}_{camera_id}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_streamdet(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"streamdet" in cmdline


def cleanup_stale_segments(shm_dir: Path = Path("/dev/shm")) -> list[str]:
    """Unlink rings left by a streamdet whose supervisor died (its pid is gone); returns their names."""
    removed: list[str] = []
    if not shm_dir.is_dir():
        return removed
    for entry in shm_dir.iterdir():
        m = _RING_RE.match(entry.name)
        if not m or _pid_alive(int(m.group(1))):
            continue
        with contextlib.suppress(OSError):
            entry.unlink()
            removed.append(entry.name)
    return removed


def cleanup_stale_run_dirs(directory: Path) -> list[str]:
    """Remove the private ``run-<pid>-*`` directories (sockets, live settings) of streamdet
    daemons that died without cleaning up (SIGKILL, power loss); returns their names."""
    import shutil

    removed: list[str] = []
    if not directory.is_dir():
        return removed
    for entry in directory.glob("run-*-*"):
        pid = entry.name.split("-")[1]
        if not entry.is_dir() or not pid.isdigit() or _pid_alive(int(pid)):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry.name)
    return removed


def segments_of(pid: int, shm_dir: Path = Path("/dev/shm")) -> list[str]:
    """The ring names in ``shm_dir`` that belong to supervisor ``pid`` (tests, leak checks)."""
    if not shm_dir.is_dir():
        return []
    return sorted(e.name for e in shm_dir.iterdir() if (m := _RING_RE.match(e.name)) and int(m.group(1)) == pid)


class PidFile:
    """``<runtime dir>/streamdet.pid``: written at start, removed at exit; refuses a second daemon."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / PID_FILE

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        other = read_pid(self.path)
        if other is not None and other != os.getpid() and _pid_alive(other) and _is_streamdet(other):
            raise StreamdetError(f"another streamdet (pid {other}) is running with runtime directory "
                                 f"{self.path.parent}; stop it, or set RUNTIME_DIRECTORY to run a second one")
        tmp = self.path.with_name(f".{PID_FILE}.{os.getpid()}")
        tmp.write_text(f"{os.getpid()}\n")
        tmp.replace(self.path)

    def release(self) -> None:
        if read_pid(self.path) == os.getpid():
            with contextlib.suppress(OSError):
                self.path.unlink()


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def send_reload(directory: Path | None = None) -> int:
    """Send SIGHUP to the daemon whose pid file is in ``directory``; returns its pid."""
    path = (directory or runtime_dir()) / PID_FILE
    pid = read_pid(path)
    if pid is None:
        raise StreamdetError(f"no running streamdet found: {path} does not exist or holds no pid "
                             "(is the daemon running? under systemd use `systemctl reload streamdet`)")
    if not _pid_alive(pid) or not _is_streamdet(pid):
        raise StreamdetError(f"{path} names pid {pid}, which is not a running streamdet (a stale pid file)")
    os.kill(pid, signal.SIGHUP)
    return pid


def local_endpoint(endpoint: str) -> str:
    """The address a local client connects to for a bound endpoint (wildcard hosts -> loopback)."""
    for wildcard in ("tcp://*:", "tcp://0.0.0.0:"):
        if endpoint.startswith(wildcard):
            return "tcp://127.0.0.1:" + endpoint[len(wildcard):]
    return endpoint
