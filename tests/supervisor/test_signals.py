"""SIGHUP and SIGINT are the supervisor's: its children and multiprocessing's resource tracker
ignore them (checked in /proc/PID/status), also while a child is still starting."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from streamdet.supervisor.children import Child
from streamdet.supervisor.signals import PARENT_SIGNALS, parent_signals_blocked
from tests.helpers.daemon import wait_for
from tests.helpers.procfs import children, proc_info


def signal_sets(pid: int) -> dict[str, set[int]]:
    """The signals ``pid`` ignores (SigIgn) and blocks (SigBlk), from /proc/PID/status."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("SigIgn", "SigBlk"):
            mask = int(value.strip(), 16)
            out[key] = {n for n in range(1, 65) if mask & (1 << (n - 1))}
    return out


def test_parent_signals_blocked_restores_the_mask() -> None:
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    with parent_signals_blocked():
        assert set(PARENT_SIGNALS) <= signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before


def test_a_child_ignores_sighup_and_sigint_and_survives_them() -> None:
    ctx = mp.get_context("spawn")
    child = Child("sigtest", "decoder", (), lambda stop: (), "tests.supervisor.fakes:hang_forever")
    child.start(ctx, "warning")
    try:
        assert child.process is not None and child.process.pid is not None
        pid = child.process.pid
        assert wait_for(lambda: getattr(proc_info(pid), "comm", "") == "sd-sigtest", 30), "bootstrap not done"
        sets = signal_sets(pid)
        assert {signal.SIGHUP, signal.SIGINT} <= sets["SigIgn"]
        assert not {signal.SIGHUP, signal.SIGINT} & sets["SigBlk"]  # ignored, not left blocked
        os.kill(pid, signal.SIGHUP)
        os.kill(pid, signal.SIGINT)
        time.sleep(0.5)
        assert child.process.is_alive()
    finally:
        child.kill()


def test_the_resource_tracker_started_by_the_supervisor_ignores_sighup() -> None:
    code = ("import time; from streamdet.supervisor.signals import start_resource_tracker; "
            "start_resource_tracker(); print('started', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
        (tracker,) = children(proc.pid)
        assert "resource_tracker" in Path(f"/proc/{tracker}/cmdline").read_text(errors="replace")
        assert signal.SIGHUP in signal_sets(tracker)["SigIgn"]
        os.kill(tracker, signal.SIGHUP)
        time.sleep(0.5)
        info = proc_info(tracker)
        assert info is not None and info.state != "Z"
        # the daemon's own SIGHUP disposition is back to what it was (the default here)
        assert signal.SIGHUP not in signal_sets(proc.pid)["SigIgn"]
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
