"""Supervisor failure handling with stand-in children: crash loops, hangs, children that cannot
start, decoders parked instead of stopping the daemon, the honest watchdog, clean exit."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from pathlib import Path

from streamdet.supervisor.runtime import segments_of
from tests.supervisor import fakes
from tests.supervisor.helpers import Running, fake_supervisor, write_config

ONE_CAMERA = "  - {id: cam1, url: a.mp4}"
TWO_CAMERAS = "  - {id: cam1, url: a.mp4}\n  - {id: cam2, url: b.mp4}"


def test_worker_crash_loop_exits_1_and_unlinks_rings(tmp_path: Path, fixtures_dir: Path, monkeypatch, caplog) -> None:
    caplog.set_level(logging.INFO)
    path = write_config(tmp_path, fixtures_dir, cameras=ONE_CAMERA)

    sup = fake_supervisor(path, monkeypatch, worker=fakes.serve_briefly_then_crash)
    assert sup.run() == 1
    assert "giving up" in caplog.text and "exited with status 3" in caplog.text
    assert sup.children["worker-cpu"].restart_count == 3  # restart_limit 2: the third restart gives up
    assert segments_of(os.getpid()) == []


def test_worker_that_cannot_start_exits_2_at_once(tmp_path: Path, fixtures_dir: Path, monkeypatch, caplog) -> None:
    caplog.set_level(logging.INFO)
    path = write_config(tmp_path, fixtures_dir, cameras=ONE_CAMERA)
    sup = fake_supervisor(path, monkeypatch, worker=fakes.cannot_start)
    assert sup.run() == 2
    assert "worker-cpu cannot start" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # the worker's own line is the one error
    assert sup.children["worker-cpu"].restart_count == 0
    assert segments_of(os.getpid()) == []


def test_worker_dying_before_serving_exits_2_whatever_the_backoff(tmp_path: Path, fixtures_dir: Path, monkeypatch,
                                                                  caplog) -> None:
    # a restart budget that would never trip (100 restarts in 1 s): the start failures still end it
    path = write_config(tmp_path, fixtures_dir, cameras=ONE_CAMERA,
                        supervisor="{restart_limit: 100, restart_window_s: 1, stop_timeout_s: 2}")
    sup = fake_supervisor(path, monkeypatch, worker=fakes.crash_at_once)
    assert sup.run() == 2
    assert "3 times in a row before it started serving" in caplog.text
    assert sup.children["worker-cpu"].start_failures == 3


def test_decoder_crash_loop_parks_it_and_the_rest_keeps_serving(tmp_path: Path, fixtures_dir: Path, monkeypatch,
                                                                caplog) -> None:
    path = write_config(tmp_path, fixtures_dir, cameras=TWO_CAMERAS)
    sup = fake_supervisor(path, monkeypatch, decoder=fakes.decoder_crashing_for_cam2)
    with Running(sup) as run:
        run.wait(lambda: sup.children["decoder-cam2"].parked is not None, 30, "decoder-cam2 parked")
        status = sup.rings["cam2"].status()
        assert status.state == "failed" and "before it started serving" in status.last_error
        time.sleep(0.5)
        assert run.pid("decoder-cam1") is not None and run.pid("worker-cpu") is not None
        assert sup.healthy()
    assert run.result == [0]


def test_hung_child_is_killed_and_restarted_within_the_hang_timeout(tmp_path: Path, fixtures_dir: Path, monkeypatch,
                                                                    caplog) -> None:
    path = write_config(tmp_path, fixtures_dir, cameras=TWO_CAMERAS)
    sup = fake_supervisor(path, monkeypatch)
    with Running(sup) as run:
        run.wait(lambda: sup._ready, 30, "ready")
        # a decoder counts as serving once its first heartbeat is seen; stopped before that, it would
        # rightly get the start-up grace (30 s) instead of hang_timeout_s (a race on a busy machine)
        run.wait(lambda: sup.children["decoder-cam1"].served, 30, "the decoder serving")
        worker_pid, decoder_pid = run.pid("worker-cpu"), run.pid("decoder-cam1")
        assert worker_pid and decoder_pid
        os.kill(worker_pid, signal.SIGSTOP)
        os.kill(decoder_pid, signal.SIGSTOP)
        t0 = time.monotonic()
        run.wait(lambda: not sup.healthy(), 10, "the watchdog's health check to fail")
        run.wait(lambda: run.pid("worker-cpu") not in (None, worker_pid)
                 and run.pid("decoder-cam1") not in (None, decoder_pid), 30, "both replaced")
        replaced_after = time.monotonic() - t0
        run.wait(lambda: sup.healthy(), 20, "healthy again")
        assert sup.children["decoder-cam2"].restart_count == 0
    assert replaced_after < 3.0 + 10.0  # hang_timeout_s 3 + restart on a busy machine; the bound is 20 s
    assert "sent no heartbeat" in caplog.text
    assert run.result == [0]


def test_watchdog_is_sent_only_while_healthy(tmp_path: Path, fixtures_dir: Path, monkeypatch) -> None:
    import socket

    sock_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(sock_path))
    listener.settimeout(0.1)
    monkeypatch.setenv("NOTIFY_SOCKET", str(sock_path))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # WATCHDOG=1 every 0.2 s while healthy
    path = write_config(tmp_path, fixtures_dir, cameras=ONE_CAMERA,
                        supervisor="{hang_timeout_s: 30, stop_timeout_s: 2}")
    sup = fake_supervisor(path, monkeypatch)

    def watchdogs(seconds: float) -> int:
        n, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            with contextlib.suppress(TimeoutError):
                n += listener.recv(4096).count(b"WATCHDOG=1")
        return n

    try:
        with Running(sup) as run:
            run.wait(lambda: sup._ready, 30, "ready")
            assert watchdogs(1.5) >= 3
            pid = run.pid("worker-cpu")
            assert pid
            os.kill(pid, signal.SIGSTOP)  # frozen, long before hang_timeout_s (30 s): unhealthy in 5 s
            run.wait(lambda: not sup.healthy(), 10, "frozen worker noticed")
            listener.settimeout(0.01)
            while True:  # drop what was sent before it was noticed
                try:
                    listener.recv(4096)
                except TimeoutError:
                    break
            listener.settimeout(0.1)
            assert watchdogs(1.5) == 0
            os.kill(pid, signal.SIGCONT)
            run.wait(lambda: sup.healthy(), 10, "healthy again")
            assert watchdogs(1.5) >= 3
    finally:
        listener.close()


def test_stale_pid_file_and_second_daemon(tmp_path: Path, fixtures_dir: Path, monkeypatch, caplog) -> None:
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "rt"))
    path = write_config(tmp_path, fixtures_dir, cameras=ONE_CAMERA)
    (tmp_path / "rt").mkdir()
    (tmp_path / "rt" / "streamdet.pid").write_text("999999999\n")  # a dead daemon's pid file: taken over
    sup = fake_supervisor(path, monkeypatch)
    with Running(sup) as run:
        run.wait(lambda: sup._ready, 30, "ready")
        assert (tmp_path / "rt" / "streamdet.pid").read_text().strip() == str(os.getpid())
    assert not (tmp_path / "rt" / "streamdet.pid").exists()
    assert [p.name for p in (tmp_path / "rt").iterdir()] == []  # private run directory removed too


def test_a_runtime_directory_too_long_for_a_socket_path_still_works(tmp_path: Path, fixtures_dir: Path,
                                                                     monkeypatch) -> None:
    long_dir = tmp_path / ("x" * 60) / ("y" * 60)
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(long_dir))
    path = write_config(tmp_path, fixtures_dir, cameras=ONE_CAMERA)
    sup = fake_supervisor(path, monkeypatch)
    with Running(sup) as run:
        run.wait(lambda: sup._ready, 30, "ready")
        assert len(sup.internal_endpoint) <= len("ipc://") + 100 and not str(sup.workdir).startswith(str(long_dir))
        assert (long_dir / "streamdet.pid").exists()
        workdir = sup.workdir
    assert run.result == [0] and not workdir.exists()
