"""The MQTT bridge: a daemon's detections into an MQTT broker (needs the ``[mqtt]`` extra, paho-mqtt 2.x).

Topics and payloads are in docs/wire.md ("MQTT topics"); fleets, store-and-forward and consumers in
docs/fleet.md. Names are imported on first use: the settings (``streamdet_client.mqtt.settings``,
read by the daemon's configuration) load neither pyzmq nor paho.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamdet_client.mqtt.bridge import MqttBridge
    from streamdet_client.mqtt.queue import COUNTER_FIELDS, BridgeCounters, Outgoing, OutQueue
    from streamdet_client.mqtt.settings import BridgeSettings, TlsSettings
    from streamdet_client.mqtt.topics import Topics

__all__ = ["COUNTER_FIELDS", "BridgeCounters", "BridgeSettings", "MqttBridge", "OutQueue", "Outgoing", "TlsSettings",
           "Topics"]

_LAZY = {"MqttBridge": "bridge", "COUNTER_FIELDS": "queue", "BridgeCounters": "queue", "Outgoing": "queue",
         "OutQueue": "queue", "BridgeSettings": "settings", "TlsSettings": "settings", "Topics": "topics"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'streamdet_client.mqtt' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"streamdet_client.mqtt.{module}"), name)
