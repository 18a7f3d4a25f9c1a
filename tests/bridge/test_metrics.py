"""The bridge's counters on the daemon's metrics endpoint (streamdet.bridge.metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from streamdet.bridge.metrics import BridgeCollector
from streamdet_client.mqtt import COUNTER_FIELDS


def render(values: list[float] | None) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BridgeCollector(lambda: values))
    return generate_latest(registry).decode()


def test_bridge_metrics_by_name_and_reason() -> None:
    values = dict(zip(COUNTER_FIELDS, [1, 120, 3, 40, 2, 7], strict=True))
    text = render([float(values[f]) for f in COUNTER_FIELDS])
    assert "streamdet_mqtt_connected 1.0" in text
    assert "streamdet_mqtt_messages_sent_total 120.0" in text
    assert 'streamdet_mqtt_messages_dropped_total{reason="queue_full"} 3.0' in text
    assert 'streamdet_mqtt_messages_dropped_total{reason="disconnected"} 40.0' in text
    assert "streamdet_mqtt_reconnects_total 2.0" in text
    assert "streamdet_mqtt_queued 7.0" in text


def test_no_bridge_no_metrics() -> None:
    assert "streamdet_mqtt" not in render(None)
