"""Prometheus metrics of the daemon, served by the supervisor through prometheus_client.

:class:`DaemonMetrics` owns its registry, the collector and the HTTP endpoint; the supervisor
feeds it the workers' stats messages and gives it callables for the rings' status, its children
and the publish proxy's rejected handshakes. docs/metrics.md lists the metrics. Labels carry
camera ids, worker and child names only, never URLs.

Modules: ``totals`` (stats messages -> running totals), ``collector`` (the metric families, built
at scrape time), ``daemon`` (registry and HTTP server).
"""

from streamdet.metrics.collector import ChildInfo, DaemonCollector
from streamdet.metrics.daemon import DaemonMetrics
from streamdet.metrics.totals import StatsTotals, TotalsSnapshot

__all__ = ["ChildInfo", "DaemonCollector", "DaemonMetrics", "StatsTotals", "TotalsSnapshot"]
