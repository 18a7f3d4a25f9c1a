"""Runtime directory, pid file, ring names, stale segments and `streamdet reload`'s signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamdet.errors import StreamdetError
from streamdet.supervisor.runtime import PidFile, cleanup_stale_segments, ring_name, runtime_dir, send_reload


def test_runtime_dir_precedence() -> None:
    assert runtime_dir({"RUNTIME_DIRECTORY": "/run/streamdet", "XDG_RUNTIME_DIR": "/run/user/1"}) == \
        Path("/run/streamdet")
    assert runtime_dir({"XDG_RUNTIME_DIR": "/run/user/1"}) == Path("/run/user/1/streamdet")
    assert runtime_dir({}) == Path(f"/tmp/streamdet-{os.getuid()}")


def test_cleanup_stale_segments_by_camera_id(tmp_path: Path) -> None:
    dead_pid = 2**22 + 12345  # above the default pid_max: never a live process
    stale = tmp_path / ring_name(dead_pid, "front-door_1")
    live = tmp_path / ring_name(os.getpid(), "front-door_1")
    other = tmp_path / "someone_else"
    for p in (stale, live, other):
        p.write_bytes(b"x")
    assert cleanup_stale_segments(tmp_path) == [stale.name]
    assert not stale.exists() and live.exists() and other.exists()


def test_cleanup_stale_run_dirs(tmp_path: Path) -> None:
    from streamdet.supervisor.runtime import cleanup_stale_run_dirs

    dead = tmp_path / f"run-{2**22 + 12345}-abc"
    mine = tmp_path / f"run-{os.getpid()}-xyz"
    for d in (dead, mine):
        d.mkdir()
        (d / "publish.sock").write_bytes(b"")
    (tmp_path / "streamdet.pid").write_text("1\n")
    assert cleanup_stale_run_dirs(tmp_path) == [dead.name]
    assert not dead.exists() and mine.exists() and (tmp_path / "streamdet.pid").exists()


@pytest.fixture
def fake_daemon():
    """A process whose command line says streamdet, that records the SIGHUPs it receives."""
    code = ("import signal, sys, time\n"
            "signal.signal(signal.SIGHUP, lambda *a: print('HUP', flush=True))\n"
            "print('up', flush=True)\n"
            "time.sleep(30)\n")
    with subprocess.Popen([sys.executable, "-c", code, "streamdet"], stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
            yield proc
        finally:
            proc.kill()


def test_reload_signals_the_daemon_named_in_the_pid_file(tmp_path: Path, fake_daemon) -> None:
    (tmp_path / "streamdet.pid").write_text(f"{fake_daemon.pid}\n")
    assert send_reload(tmp_path) == fake_daemon.pid
    assert fake_daemon.stdout.readline().strip() == "HUP"


def test_reload_refuses_missing_and_stale_pid_files(tmp_path: Path) -> None:
    with pytest.raises(StreamdetError, match="no running streamdet found"):
        send_reload(tmp_path)
    (tmp_path / "streamdet.pid").write_text(f"{2**22 + 12345}\n")
    with pytest.raises(StreamdetError, match="stale pid file"):
        send_reload(tmp_path)


def test_pid_file_refuses_a_second_daemon_and_takes_over_a_dead_ones(tmp_path: Path, fake_daemon) -> None:
    pid_file = PidFile(tmp_path)
    pid_file.path.write_text(f"{fake_daemon.pid}\n")
    with pytest.raises(StreamdetError, match=f"another streamdet \\(pid {fake_daemon.pid}\\)"):
        pid_file.acquire()
    fake_daemon.kill()
    fake_daemon.wait()
    pid_file.acquire()
    assert pid_file.path.read_text().strip() == str(os.getpid())
    pid_file.release()
    assert not pid_file.path.exists()


def test_sighup_of_a_child_is_ignored(tmp_path: Path) -> None:
    """Children ignore SIGHUP (a terminal hang-up reaches the whole group; only the supervisor reloads)."""
    import multiprocessing as mp

    from streamdet.supervisor.children import child_entry

    proc = mp.get_context("spawn").Process(target=child_entry,
                                           args=("x", "info", "tests.supervisor.fakes:hang_forever", ()))
    proc.start()
    try:
        time.sleep(1.5)  # past the bootstrap
        os.kill(proc.pid, signal.SIGHUP)
        time.sleep(0.5)
        assert proc.is_alive()
    finally:
        proc.kill()
        proc.join(5)
