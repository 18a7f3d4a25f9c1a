"""The restart policy's exit statuses: 2 only for what can never work without a change, 1 for a
child that served and then keeps failing (systemd restarts the daemon)."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import pytest

from streamdet.supervisor.policy import EXIT_RUNTIME_FAILURE, EXIT_UNUSABLE
from streamdet.supervisor.runtime import segments_of
from tests.supervisor import fakes
from tests.supervisor.helpers import Running, fake_supervisor, write_config

ONE_CAMERA = "  - {id: cam1, url: a.mp4}"


@pytest.mark.slow  # restarts with real backoff: 15-35 s
def test_worker_that_served_then_dies_while_restarting_exits_1_after_its_budget(tmp_path: Path, fixtures_dir: Path,
                                                                              monkeypatch, caplog) -> None:
    caplog.set_level(logging.INFO)
    path = write_config(tmp_path, fixtures_dir, cameras=ONE_CAMERA,
                        supervisor="{restart_limit: 5, restart_window_s: 60, stop_timeout_s: 2}")
    sup = fake_supervisor(path, monkeypatch, worker=fakes.serve_once_then_die_while_starting)
    assert sup.run() == EXIT_RUNTIME_FAILURE
    worker = sup.children["worker-cpu"]
    assert worker.ever_served and not worker.served
    assert worker.start_failures == 5  # past START_FAILURES_FATAL: it served before, so only the budget counts
    assert worker.restart_count == 6  # restart_limit 5: the sixth restart gives up
    assert "giving up (exit status 1)" in caplog.text
    assert "cannot start" not in caplog.text and "exit status 2" not in caplog.text
    assert segments_of(os.getpid()) == []


@pytest.mark.slow  # restarts with real backoff: 15-35 s
def test_worker_killed_three_times_while_restarting_is_restarted_again(tmp_path: Path, fixtures_dir: Path,
                                                                      monkeypatch, caplog) -> None:
    """The issue's case: a worker that served, SIGKILLed (as by the OOM killer) three times in a
    row while it reloads its model: restarted each time within the budget, the daemon goes on."""
    path = write_config(tmp_path, fixtures_dir, cameras=ONE_CAMERA,
                        supervisor="{restart_limit: 10, restart_window_s: 60, stop_timeout_s: 2}")
    sup = fake_supervisor(path, monkeypatch, worker=fakes.serve_first_then_load_slowly)
    with Running(sup) as run:
        run.wait(lambda: sup._ready, 30, "ready")
        for kill in range(4):  # once while serving, three times while loading again
            pid = run.pid("worker-cpu")
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            run.wait(lambda old=pid: run.pid("worker-cpu") not in (None, old), 30, f"restart after kill {kill + 1}")
        worker = sup.children["worker-cpu"]
        assert worker.start_failures == 3 and worker.ever_served and not worker.served
        assert worker.restart_count == 4
    assert run.result == [0]
    assert caplog.text.count("worker-cpu died (signal 9); restarting") == 4


def test_every_decoder_given_up_on_without_serving_exits_2(tmp_path: Path, fixtures_dir: Path, monkeypatch,
                                                           caplog) -> None:
    path = write_config(tmp_path, fixtures_dir, cameras=ONE_CAMERA)
    sup = fake_supervisor(path, monkeypatch, decoder=fakes.crash_at_once)
    assert sup.run() == EXIT_UNUSABLE
    assert sup.children["decoder-cam1"].parked is not None and not sup.children["decoder-cam1"].ever_served
    assert "every decoder was given up on; stopping with exit status 2" in caplog.text


def test_every_decoder_given_up_on_after_serving_exits_1(tmp_path: Path, fixtures_dir: Path, monkeypatch,
                                                         caplog) -> None:
    path = write_config(tmp_path, fixtures_dir, cameras=ONE_CAMERA)  # restart_limit 2
    sup = fake_supervisor(path, monkeypatch, decoder=fakes.decoder_serving_then_crashing)
    assert sup.run() == EXIT_RUNTIME_FAILURE
    decoder = sup.children["decoder-cam1"]
    assert decoder.parked is not None and "too often" in decoder.parked and decoder.ever_served
    assert "every decoder was given up on; stopping with exit status 1" in caplog.text
