"""Signals that only the supervisor acts on: SIGHUP (reload) and SIGINT (stop).

A terminal's Ctrl-C, ``kill -HUP -PGID`` and some process managers signal the whole process
group: the supervisor, its children and multiprocessing's resource tracker (a helper process the
supervisor starts). Only the supervisor may act on them, so that a group SIGHUP is one reload and
nothing else:

- children are spawned with SIGHUP and SIGINT blocked (:func:`parent_signals_blocked`): a blocked
  signal stays blocked across fork and exec, so a child that is still importing its modules cannot
  die of one; its bootstrap then ignores both and unblocks them (:func:`ignore_parent_signals`);
- the resource tracker is started deliberately, once, before any child or ring
  (:func:`start_resource_tracker`), with SIGHUP ignored (an ignored disposition survives exec; the
  tracker ignores SIGINT and SIGTERM itself). Left to start on first use it would die of a group
  SIGHUP, stay a zombie and print a traceback when the rings are unlinked at shutdown.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from multiprocessing import resource_tracker

log = logging.getLogger("streamdet.supervisor")

PARENT_SIGNALS = (signal.SIGHUP, signal.SIGINT)  # the supervisor's alone: reload and stop


@contextlib.contextmanager
def parent_signals_blocked() -> Iterator[None]:
    """Block SIGHUP and SIGINT in the calling thread for the block's duration: a process forked or
    spawned meanwhile starts with them blocked. A signal sent meanwhile is not lost: the kernel
    hands it to another thread of this process, or delivers it here once the block ends."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, PARENT_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def ignore_parent_signals() -> None:
    """In a child (first thing in its bootstrap): ignore SIGHUP and SIGINT, then unblock them
    (one that arrived while the child started is discarded, not delivered)."""
    for signum in PARENT_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, PARENT_SIGNALS)


def start_resource_tracker() -> None:
    """Start multiprocessing's resource tracker now, immune to SIGHUP and SIGINT (see the module
    docstring). Call it from the supervisor before it creates a ring or starts a child; where the
    tracker already runs (started by the caller's own code) it is left alone."""
    if threading.current_thread() is not threading.main_thread():  # tests: only the mask can be set here
        with parent_signals_blocked():
            resource_tracker.ensure_running()
        return
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with parent_signals_blocked():
            resource_tracker.ensure_running()
    finally:
        signal.signal(signal.SIGHUP, previous if previous is not None else signal.SIG_DFL)
