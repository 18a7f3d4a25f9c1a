"""The bridge's counters on the daemon's metrics endpoint (names in docs/metrics.md).

A collector registered in the daemon's own registry; it reads the shared array the bridge child
writes (order :data:`streamdet_client.mqtt.COUNTER_FIELDS`) at each scrape, and reports nothing
when no bridge is configured.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from streamdet_client.mqtt import COUNTER_FIELDS


class BridgeCollector(Collector):
    """``streamdet_mqtt_*`` from ``read()`` (the shared counters, or None without a bridge)."""

    def __init__(self, read: Callable[[], Sequence[float] | None]) -> None:
        self.read = read

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        values = self.read()
        if values is None:
            return
        v = dict(zip(COUNTER_FIELDS, values, strict=True))
        connected = GaugeMetricFamily("streamdet_mqtt_connected", "1 while the bridge is connected to the broker")
        connected.add_metric([], v["connected"])
        sent = CounterMetricFamily("streamdet_mqtt_messages_sent",
                                   "MQTT messages the broker took (QoS 1: acknowledged)")
        sent.add_metric([], v["sent"])
        dropped = CounterMetricFamily("streamdet_mqtt_messages_dropped",
                                      "MQTT messages dropped, the oldest first, by why the queue was full",
                                      labels=["reason"])
        dropped.add_metric(["queue_full"], v["dropped_queue_full"])
        dropped.add_metric(["disconnected"], v["dropped_disconnected"])
        reconnects = CounterMetricFamily("streamdet_mqtt_reconnects",
                                         "Connections to the broker made again after one was lost")
        reconnects.add_metric([], v["reconnects"])
        queued = GaugeMetricFamily("streamdet_mqtt_queued", "MQTT messages waiting for the broker")
        queued.add_metric([], v["queued"])
        yield from (connected, sent, dropped, reconnects, queued)
