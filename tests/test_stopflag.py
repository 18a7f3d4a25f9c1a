"""StopFlag: shared with spawned children; set() never blocks, even after a waiter was SIGKILLed."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

from streamdet.stopflag import StopFlag


def _wait_then_exit(flag: StopFlag) -> None:
    raise SystemExit(0 if flag.wait(30) else 3)


def test_wait_times_out_and_sees_set() -> None:
    flag = StopFlag(mp.get_context("spawn"))
    t0 = time.monotonic()
    assert flag.wait(0.1) is False and time.monotonic() - t0 >= 0.1
    flag.set()
    assert flag.is_set() and flag.wait(0) is True
    flag.clear()
    assert not flag.is_set()


def test_child_sees_set_and_killed_waiter_does_not_block() -> None:
    ctx = mp.get_context("spawn")
    flag = StopFlag(ctx)
    victim = ctx.Process(target=_wait_then_exit, args=(flag,))
    waiter = ctx.Process(target=_wait_then_exit, args=(flag,))
    victim.start()
    waiter.start()
    time.sleep(1.0)
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(5)
    flag.set()  # an mp.Event would hang here
    waiter.join(10)
    assert waiter.exitcode == 0
