"""The daemon's metrics endpoint: its own registry, the collector, and prometheus_client's HTTP server."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest, start_http_server

from streamdet.metrics.collector import ChildInfo, DaemonCollector
from streamdet.metrics.totals import StatsTotals

log = logging.getLogger("streamdet.metrics")

STOP_JOIN_S = 2.0


class DaemonMetrics:
    """Everything the supervisor needs for ``/metrics``::

        m = DaemonMetrics(rings=lambda: {cam: ring.status() for cam, ring in rings.items()},
                          children=lambda: {c.name: ChildInfo(restarts=c.restart_count, phase=..., alive=...)
                                            for c in children},   # or dicts with those keys
                          rejected=lambda: proxy.rejected_handshakes)
        m.start("127.0.0.1", 9108)   # port 0: an ephemeral port, read back from m.port
        m.observe_stats(msg)         # each stats message, from the thread that receives them
        m.stop()

    No global state: the metrics live in this object's own ``CollectorRegistry`` (never
    prometheus_client's default one), so several instances (tests) never clash.
    """

    def __init__(self, rings: Callable[[], Mapping[str, Any]] | None = None,
                 children: Callable[[], Mapping[str, ChildInfo | Mapping[str, Any]]] | None = None,
                 rejected: Callable[[], int] | None = None) -> None:
        self.totals = StatsTotals()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(DaemonCollector(self.totals.snapshot, rings, children, rejected))
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def observe_stats(self, msg: Mapping[str, Any]) -> None:
        """Add one decoded stats message to the totals (thread-safe; other message types are ignored)."""
        self.totals.observe(msg)

    def render(self) -> str:
        """The exposition text a scrape gets now."""
        return generate_latest(self.registry).decode("utf-8")

    def start(self, host: str = "127.0.0.1", port: int = 0) -> DaemonMetrics:
        """Serve the metrics over HTTP on ``host:port`` in a daemon thread (any path answers)."""
        if self._server is not None:
            raise RuntimeError("metrics server already started")
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise OSError(exc.errno, f"metrics: cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        return self

    @property
    def port(self) -> int:
        """The port actually bound (the ephemeral one when started with port 0)."""
        if self._server is None:
            raise RuntimeError("metrics server not started")
        return int(self._server.server_address[1])

    def stop(self) -> None:
        """Stop serving and close the socket; safe to call twice or without start()."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(STOP_JOIN_S)

    def __enter__(self) -> DaemonMetrics:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
