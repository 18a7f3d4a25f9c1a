"""What the supervisor does when a child exits unasked, and the daemon's exit statuses.

Exit statuses of the daemon (``streamdet run``), as systemd's unit reads them:

- :data:`EXIT_STOPPED` (0): stopped by SIGTERM or SIGINT.
- :data:`EXIT_RUNTIME_FAILURE` (1): a failure at run time that a fresh start may cure: a worker
  that served and then keeps dying beyond ``restart_limit`` restarts within ``restart_window_s``
  (whether it dies while serving or while restarting: an OOM kill during a reload of the model
  counts here), every decoder given up on after some of them had served, or an unexpected error.
  systemd restarts the daemon (``Restart=on-failure``).
- :data:`EXIT_UNUSABLE` (2): what can never work without a change: a bad configuration, key file
  or endpoint, an unusable checkpoint or backend, a device that does not exist (the worker says
  so with EXIT_CANNOT_START), a worker that died START_FAILURES_FATAL times in a row without ever
  serving since the daemon started, or every decoder given up on without any having served.
  ``RestartPreventExitStatus=2`` keeps systemd from restarting it.

Statuses children exit with, seen by the supervisor only: EXIT_CANNOT_START (78, a worker that
cannot start: its model, backend or device) and EXIT_FINISHED (79, a decoder whose every camera
ended or failed for good: not restarted until a reload changes one of them).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from typing import TYPE_CHECKING

from streamdet.pipeline.decode.contract import EXIT_FINISHED
from streamdet.pipeline.worker.contract import EXIT_CANNOT_START
from streamdet.supervisor.children import START_FAILURES_FATAL, Child

if TYPE_CHECKING:
    from streamdet.supervisor.state import SupervisorState

log = logging.getLogger("streamdet.supervisor")

EXIT_STOPPED = 0
EXIT_RUNTIME_FAILURE = 1
EXIT_UNUSABLE = 2


class RestartPolicy:
    """Decides, for each child that exited unasked, between a restart, parking it (decoders),
    marking it finished (decoders) and stopping the daemon; ``exit_status`` is the daemon's
    status once it decided to stop."""

    def __init__(self, state: SupervisorState) -> None:
        self.state = state
        self.exit_status = EXIT_RUNTIME_FAILURE

    def _give_up(self, status: int, line: str) -> bool:
        log.error("%s", line)
        self.exit_status = status
        return False

    def on_death(self, child: Child, code: int | None) -> bool:
        """``child`` exited unasked with ``code``; returns False when the daemon must stop."""
        what = f"died (signal {-code})" if code is not None and code < 0 else f"exited with status {code}"
        if child.kind == "worker" and code == EXIT_CANNOT_START:  # it logged the one error line naming why
            log.info("%s cannot start; stopping with exit status %d", child.name, EXIT_UNUSABLE)
            self.exit_status = EXIT_UNUSABLE
            return False
        if child.kind == "bridge":  # a broker problem never stops the daemon: restart it with backoff, always
            child.record_restart(self.state.config.supervisor.restart_window_s, sys.maxsize)
            log.warning("%s %s; restarting in %.1f s", child.name, what, child.next_start - time.monotonic())
            return True
        if child.kind == "decoder" and code == EXIT_FINISHED:
            child.finished = True
            log.info("%s finished: every camera of it ended or failed for good; not restarted until a reload "
                     "changes one of them", child.name)
            return True
        if not child.served:
            child.start_failures += 1
            if child.start_failures >= START_FAILURES_FATAL and not child.ever_served:
                line = (f"{child.name} {what} {child.start_failures} times in a row before it started serving, "
                        "and never served since the daemon started")
                if child.kind == "worker":
                    return self._give_up(EXIT_UNUSABLE, f"{line}; it cannot start, stopping with exit status "
                                                        f"{EXIT_UNUSABLE}")
                self.park(child, line)
                return not self._every_decoder_parked()
        s = self.state.config.supervisor
        if not child.record_restart(s.restart_window_s, s.restart_limit):
            line = f"{child.name} {what}; {len(child.restarts) - 1} restarts within {s.restart_window_s:.0f} s"
            if child.kind == "worker":
                return self._give_up(EXIT_RUNTIME_FAILURE, f"{line}, giving up (exit status {EXIT_RUNTIME_FAILURE})")
            self.park(child, f"{what} too often ({line})")
            return not self._every_decoder_parked()
        log.warning("%s %s; restarting in %.1f s", child.name, what, child.next_start - time.monotonic())
        return True

    def park(self, child: Child, reason: str) -> None:
        """Give up on a decoder until a reload: its cameras show ``failed`` with the reason."""
        child.parked = reason
        log.error("%s %s; its cameras (%s) are stopped until a reload changes them", child.name, reason,
                  ", ".join(child.cameras))
        for cam in child.cameras:
            ring = self.state.rings.get(cam)
            if ring is not None:
                with contextlib.suppress(Exception):
                    ring.set_state("failed", error=f"decoder {reason}"[:256])

    def _every_decoder_parked(self) -> bool:
        """Whether nothing is left to decode because every decoder was given up on; sets the exit
        status: 2 when none of them ever served (an environment that cannot run a decoder), else 1."""
        decoders = [c for c in self.state.children.values() if c.kind == "decoder"]
        if not decoders or not all(c.parked for c in decoders):
            return False
        if any(c.ever_served for c in decoders):
            self.exit_status = EXIT_RUNTIME_FAILURE
        else:
            self.exit_status = EXIT_UNUSABLE
        log.error("every decoder was given up on; stopping with exit status %d", self.exit_status)
        return True
