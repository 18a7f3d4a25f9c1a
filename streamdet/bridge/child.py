"""The bridge child process of the daemon: one per daemon, started when ``mqtt:`` is configured.

It subscribes to the daemon's own public endpoint (wildcard hosts become loopback). When the daemon
publishes with CurveZMQ, the supervisor makes a key pair for the bridge at start (kept in memory,
never written) and admits its public key beside ``publish.curve.authorized_keys``
(:func:`bridge_curve`), so the bridge needs no key files of its own. Its counters go to a shared
array the supervisor reads for the metrics (:data:`streamdet_client.mqtt.COUNTER_FIELDS` order).
"""

from __future__ import annotations

from collections.abc import MutableSequence
from dataclasses import dataclass
from typing import Any

from streamdet_client.mqtt import BridgeSettings
from streamdet_client.transport import CurveClientKeys, CurveServerKeys

CHILD_NAME = "mqtt-bridge"


@dataclass(frozen=True, repr=False)
class BridgeKeys:
    """The bridge's CURVE key pair (Z85); ``repr`` hides the secret."""

    public_key: bytes
    secret_key: bytes

    @classmethod
    def generate(cls) -> BridgeKeys:
        import zmq

        public, secret = zmq.curve_keypair()
        return cls(public, secret)

    def __repr__(self) -> str:
        return f"BridgeKeys(public_key={self.public_key!r}, secret_key=<hidden>)"


def admit_bridge(curve: CurveServerKeys | None, keys: BridgeKeys | None) -> CurveServerKeys | None:
    """The proxy's CURVE keys with the bridge's public key admitted too (unchanged without either)."""
    if curve is None or keys is None:
        return curve
    return CurveServerKeys(curve.public_key, curve.secret_key, curve.authorized | {keys.public_key})


def bridge_curve(curve: CurveServerKeys | None, keys: BridgeKeys | None) -> CurveClientKeys | None:
    """The bridge's client keys for the daemon's CURVE server, or None without CURVE."""
    if curve is None or keys is None:
        return None
    return CurveClientKeys(server_key=curve.public_key, public_key=keys.public_key, secret_key=keys.secret_key)


def bridge_main(settings: BridgeSettings, endpoint: str, curve: CurveClientKeys | None, stop: Any,
                counters: MutableSequence[float] | None) -> None:
    """The child's target: bridge ``endpoint`` into the broker until ``stop`` is set, then stop cleanly."""
    from streamdet_client.mqtt import MqttBridge

    MqttBridge(settings, endpoint, curve=curve, counter_sink=counters).run(stop.is_set)
