"""The supervisor's view of the daemon for people: stats from the proxy, the metrics endpoint.

Stats messages reach the supervisor through the publish proxy's capture socket (never as a
subscriber of the public endpoint, which CurveZMQ may close to it); they feed the metrics.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamdet.supervisor.bridge import BridgeRunner
    from streamdet.supervisor.finished import FinishedCameras
    from streamdet.supervisor.state import SupervisorState

log = logging.getLogger("streamdet.supervisor")


def on_stats_callback(sup: SupervisorState) -> Callable[[Mapping[str, Any]], None]:
    """What the proxy calls with each stats message (from its capture thread)."""

    def on_stats(msg: Mapping[str, Any]) -> None:
        if sup.metrics is not None:
            sup.metrics.observe_stats(msg)
        web = sup.web
        if web is not None:
            web.on_stats(msg)

    return on_stats


def children_info(sup: SupervisorState) -> dict[str, dict[str, Any]]:
    """Per child: kind, restarts, phase, alive, parked (for the metrics)."""
    from streamdet.pipeline.worker.contract import PHASES

    out = {}
    for child in list(sup.children.values()):
        phase = PHASES[int(child.phase.value)] if child.phase is not None else None
        out[child.name] = {"kind": child.kind, "restarts": child.restart_count, "phase": phase,
                           "alive": child.alive, "parked": child.parked is not None}
    return out


def start_metrics(sup: SupervisorState, finished: FinishedCameras, bridge: BridgeRunner) -> None:
    m = sup.config.metrics
    if m.port is None:
        return
    from streamdet.metrics import DaemonMetrics

    metrics = DaemonMetrics(
        rings=finished.statuses,  # a released camera: its final status
        children=lambda: children_info(sup),
        rejected=lambda: sup.proxy.rejected_handshakes if sup.proxy is not None else 0,
    )
    from streamdet.bridge.metrics import BridgeCollector

    metrics.registry.register(BridgeCollector(bridge.counter_values))
    metrics.start(m.host, m.port)
    sup.metrics = metrics
    log.info("metrics on http://%s:%d/metrics", m.host, metrics.port)


def stop_metrics(sup: SupervisorState) -> None:
    if sup.metrics is not None:
        with contextlib.suppress(Exception):
            sup.metrics.stop()
        sup.metrics = None


def start_web(sup: SupervisorState, finished: FinishedCameras) -> None:
    """Serve the live view (``web:``) from this process; a port in use is logged, not fatal."""
    w = sup.config.web
    if w is None:
        return
    from streamdet.errors import StreamdetError
    from streamdet.web.service import WebService

    service = WebService(
        w,
        cameras=lambda: [c.id for c in sup.config.enabled_cameras],
        ring_names=lambda: {cam: ring.name for cam, ring in list(sup.rings.items())},
        statuses=finished.statuses,
        sizes=lambda: {cam: ring.latest_size() for cam, ring in list(sup.rings.items())},
        proxy=lambda: sup.proxy,
    )
    try:
        service.start()
    except StreamdetError as exc:
        log.error("%s; the daemon runs without it", exc)
        service.stop()
        return
    sup.web = service
    log.info("live view on %s", service.url)


def stop_web(sup: SupervisorState) -> None:
    if sup.web is not None:
        with contextlib.suppress(Exception):
            sup.web.stop()
        sup.web = None
