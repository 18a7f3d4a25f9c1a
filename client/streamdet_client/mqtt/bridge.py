"""The MQTT bridge: a streamdet daemon's ZeroMQ stream in, MQTT topics out (docs/wire.md, "MQTT topics").

``MqttBridge`` subscribes to one daemon (every camera and the stats), turns each message into MQTT
messages (:mod:`streamdet_client.mqtt.topics`) and queues them for the broker link
(:mod:`streamdet_client.mqtt.link`), which runs in its own thread: the ZeroMQ side never waits for
the broker. Per camera it keeps the last stats entry and publishes the camera's retained ``state``
with each stats message, ``offline`` for a camera missing from the stats for three intervals and for
every camera on a clean stop. Every ``stats_interval_s`` it publishes ``<prefix>/<gateway>/stats``:
its own counters and the daemon's last stats per source.

Runs in the daemon's bridge child process (``streamdet.bridge``) or on its own
(``streamdet bridge mqtt``, ``streamdet-bridge``). Imports pyzmq, paho-mqtt and the standard library.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, MutableSequence
from typing import Any

from streamdet_client import wire
from streamdet_client.mqtt.link import MqttLink
from streamdet_client.mqtt.queue import BridgeCounters, Outgoing, OutQueue
from streamdet_client.mqtt.settings import BridgeSettings
from streamdet_client.mqtt.topics import Topics, camera_state, detections_payload, dumps
from streamdet_client.subscriber import Subscriber
from streamdet_client.transport import CurveClientKeys

log = logging.getLogger("streamdet.bridge")

RECV_S = 0.2  # longest wait for a ZeroMQ message before the bridge looks at its clock and stop flag
STALE_INTERVALS = 3  # a camera missing from the stats this many intervals is offline


class MqttBridge:
    """One daemon's messages into one broker; ``run(should_stop)`` until ``should_stop()`` is true.

    ``endpoint``: the daemon's public endpoint; ``server_key``/``client_key`` (certificate files) or
    ``curve`` (keys in memory) connect with CurveZMQ. ``counter_sink``: a shared array mirroring
    the counters (see :class:`~streamdet_client.mqtt.queue.BridgeCounters`).
    """

    def __init__(self, settings: BridgeSettings, endpoint: str, *, server_key: str | None = None,
                 client_key: str | None = None, curve: CurveClientKeys | None = None,
                 counter_sink: MutableSequence[float] | None = None) -> None:
        self.settings = settings
        self.endpoint = endpoint
        self.topics = Topics(settings.topic_prefix, settings.gateway_id)
        self.counters = BridgeCounters(counter_sink)
        self.queue = OutQueue(settings.max_queued, self.counters)
        self._cameras: dict[str, tuple[float, dict[str, Any] | None]] = {}  # camera -> (last seen, stats)
        self._sources: dict[str, dict[str, Any]] = {}  # the daemon's last stats message per source
        self._interval_s = 5.0  # the daemon's stats interval, from its stats messages
        self._republish = False
        self.link = MqttLink(settings, self.queue, self.counters, on_connect=self._on_connect)
        self.subscriber = Subscriber(endpoint, None, stats=True, server_key=server_key, client_key=client_key,
                                     curve=curve)

    def _on_connect(self) -> None:
        self._republish = True  # the retained camera states, again (read by the ZeroMQ thread)

    def _put(self, topic: str, payload: bytes, *, retain: bool = False, qos: int | None = None) -> None:
        self.queue.put(Outgoing(topic, payload, self.settings.qos if qos is None else qos, retain),
                       self.link.connected)

    def _state(self, camera: str, stats: dict[str, Any] | None) -> None:
        self._put(self.topics.state(camera), dumps(camera_state(camera, stats)), retain=True, qos=1)

    def handle(self, msg: dict[str, Any]) -> None:
        """Queue the MQTT messages for one decoded wire message."""
        if msg["type"] == wire.DETECTIONS:
            self._put(self.topics.detections(msg["camera"]), detections_payload(msg))
        elif msg["type"] == wire.STATS:
            now = time.monotonic()
            self._interval_s = float(msg.get("interval_s") or self._interval_s)
            self._sources[str(msg.get("source"))] = msg
            for camera, stats in msg["cameras"].items():
                self._cameras[camera] = (now, stats)
                self._state(camera, stats)

    def _expire(self, now: float) -> None:
        """Cameras missing from the stats for STALE_INTERVALS intervals: offline (once)."""
        for camera, (seen, stats) in list(self._cameras.items()):
            if stats is not None and now - seen > STALE_INTERVALS * self._interval_s:
                self._cameras[camera] = (seen, None)
                self._state(camera, None)

    def stats_message(self) -> dict[str, Any]:
        """What ``<prefix>/<gateway>/stats`` carries: the bridge's counters and the daemon's last stats."""
        return {"v": wire.VERSION, "type": "bridge_stats", "gateway": self.settings.gateway_id, "ts": time.time(),
                "bridge": self.counters.snapshot(), "daemon": list(self._sources.values())}

    def run(self, should_stop: Callable[[], bool]) -> None:
        """Bridge until ``should_stop()``; then publish every camera ``offline`` and stop cleanly."""
        log.info("MQTT bridge: %s -> %s (gateway %r, topics %s/...)", self.endpoint, self.settings.broker,
                 self.settings.gateway_id, self.topics.base)
        self.link.start()
        next_stats = time.monotonic() + self.settings.stats_interval_s
        try:
            while not should_stop():
                msg = self.subscriber.recv(RECV_S)
                if msg is not None:
                    self.handle(msg)
                now = time.monotonic()
                if self._republish:
                    self._republish = False
                    for camera, (_seen, stats) in self._cameras.items():
                        self._state(camera, stats)
                self._expire(now)
                if now >= next_stats:
                    next_stats = now + self.settings.stats_interval_s
                    self._put(self.topics.stats, dumps(self.stats_message()))
        finally:
            for camera in self._cameras:
                self._state(camera, None)
            self.link.stop()
            self.subscriber.close()
