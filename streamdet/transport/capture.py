"""The proxy's capture socket: the supervisor reads the workers' stats without a public subscriber.

Consumes what ``zmq.proxy_steerable`` copies to its capture socket (every message it forwards,
in both directions) through an inproc PUB/SUB pair in the proxy's context; the SUB subscribes to
``stats/`` only, so detections are filtered out before they are queued. Produces decoded,
validated stats messages (``streamdet.wire.decode``) handed to a callback in this module's own
thread. A PUB never blocks: a slow callback loses stats messages, never stalls forwarding.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import zmq

from streamdet import wire
from streamdet.errors import WireError
from streamdet.transport.sockets import configure_capture, configure_capture_reader, make_socket

log = logging.getLogger(__name__)

CAPTURE_HWM = 1000  # stats messages waiting for the callback; beyond, the newest are lost
_POLL_MS = 100
_WARN_FIRST = 10  # problems logged one by one; after that, one line per _WARN_EVERY


class StatsCapture:
    """Reads the proxy's capture socket and calls ``on_stats(message)`` for each stats message.

    ``open()`` (in the starting thread) returns the PUB the proxy captures into (it moves to the
    proxy's thread); ``start()`` runs the reader thread; ``stop()`` ends it and closes its socket.
    ``delivered`` counts callback calls, ``invalid`` stats messages that broke the contract,
    ``failed`` callbacks that raised (logged; the thread carries on).
    """

    def __init__(self, context: zmq.Context, endpoint: str, on_stats: Callable[[dict[str, Any]], None]) -> None:
        self.endpoint = endpoint  # an inproc:// name unique in the context
        self.delivered = 0
        self.invalid = 0
        self.failed = 0
        self._ctx = context
        self._on_stats = on_stats
        self._sub: zmq.Socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def open(self) -> zmq.Socket:
        """Create the capture pair; returns the PUB to pass to ``zmq.proxy_steerable``."""
        pub = make_socket(self._ctx, zmq.PUB)
        configure_capture(pub, hwm=CAPTURE_HWM)
        pub.bind(self.endpoint)
        sub = make_socket(self._ctx, zmq.SUB)
        configure_capture_reader(sub, hwm=CAPTURE_HWM)
        sub.connect(self.endpoint)
        sub.setsockopt(zmq.SUBSCRIBE, wire.STATS_TOPIC)
        self._sub = sub
        return pub

    def start(self) -> None:
        """Run the reader thread (it takes over the SUB socket)."""
        self._thread = threading.Thread(target=self._run, name="streamdet-publish-stats", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """End the reader thread; True once it has ended (or never started)."""
        self._stop.set()
        if self._thread is None:
            if self._sub is not None:
                self._sub.close(linger=0)
                self._sub = None
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        sub = self._sub
        assert sub is not None
        try:
            while not self._stop.is_set():
                if not sub.poll(_POLL_MS, zmq.POLLIN):
                    continue
                while True:
                    try:
                        frames = sub.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._deliver(frames)
        except zmq.ContextTerminated:
            pass
        finally:
            sub.close(linger=0)
            self._sub = None

    def _deliver(self, frames: list[bytes]) -> None:
        try:
            msg = wire.decode(frames)
        except WireError as exc:
            self.invalid += 1
            if self.invalid <= _WARN_FIRST or self.invalid % 1000 == 0:
                log.warning("capture: skipped invalid stats message #%d: %s", self.invalid, exc)
            return
        if msg["type"] != wire.STATS:
            return
        try:
            self._on_stats(msg)
        except Exception:  # the callback is the caller's code; stats must keep coming
            self.failed += 1
            if self.failed <= _WARN_FIRST or self.failed % 1000 == 0:
                log.exception("capture: the stats callback raised (#%d)", self.failed)
            return
        self.delivered += 1
