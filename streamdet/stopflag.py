"""A process-shared stop flag that survives children being SIGKILLed.

``multiprocessing.Event`` is built on a Condition whose ``set()`` waits for every sleeping waiter
to acknowledge; a waiter killed with SIGKILL never does, and the supervisor would hang on
shutdown. This flag is one shared byte: ``set()`` never blocks, and ``wait()`` polls it.
"""

from __future__ import annotations

import time
from multiprocessing.context import BaseContext

POLL_S = 0.05


class StopFlag:
    """Event-like (``is_set``, ``set``, ``wait``) flag shared with spawned children."""

    def __init__(self, ctx: BaseContext) -> None:
        self._value = ctx.RawValue("b", 0)

    def is_set(self) -> bool:
        return bool(self._value.value)

    def set(self) -> None:
        self._value.value = 1

    def clear(self) -> None:
        self._value.value = 0

    def wait(self, timeout: float | None = None) -> bool:
        """Block until set or ``timeout`` seconds passed; returns whether the flag is set."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._value.value:
            if deadline is None:
                time.sleep(POLL_S)
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(POLL_S, remaining))
        return True
