"""The previous metrics API, kept as thin wrappers over the new one until the supervisor uses
:class:`~streamdet.metrics.daemon.DaemonMetrics` directly; then delete this module."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from streamdet.metrics.collector import ChildInfo, DaemonCollector
from streamdet.metrics.totals import StatsTotals, TotalsSnapshot


class CameraTotals(StatsTotals):
    """Former name of :class:`StatsTotals`; ``add`` is ``observe``."""

    def add(self, stats_msg: Mapping[str, Any]) -> None:
        self.observe({"type": "stats", **stats_msg})

    def workers(self) -> None:
        """Worker figures are part of :meth:`snapshot` now."""
        return None


def render_metrics(rings: Mapping[str, Any], cameras: TotalsSnapshot, restarts: Mapping[str, int],
                   workers: object = None) -> str:
    """The exposition text for ring statuses, a :meth:`CameraTotals.snapshot` and restart counts
    (``workers`` is ignored: the snapshot holds them)."""
    registry = CollectorRegistry(auto_describe=False)
    children = {name: ChildInfo(restarts=n) for name, n in restarts.items()}
    registry.register(DaemonCollector(lambda: cameras, lambda: rings, lambda: children))
    return generate_latest(registry).decode("utf-8")


class _TextCollector:
    """Serves exposition text produced elsewhere (the old ``render`` callables)."""

    def __init__(self, render: Callable[[], str]) -> None:
        self.render = render

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield from text_string_to_metric_families(self.render())


class MetricsServer:
    """Former HTTP server: serves ``render()`` on ``host:port`` through prometheus_client."""

    def __init__(self, host: str, port: int, render: Callable[[], str]) -> None:
        self.host, self._port = host, port
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_TextCollector(render))
        self._server: Any = None
        self._thread: Any = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1]) if self._server is not None else self._port

    def start(self) -> MetricsServer:
        self._server, self._thread = start_http_server(self._port, addr=self.host, registry=self.registry)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(2)
            self._server = None
