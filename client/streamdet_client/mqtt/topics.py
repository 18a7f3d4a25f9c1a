"""The MQTT topics and payloads the bridge publishes (documented in docs/wire.md, "MQTT topics").

``<prefix>/<gateway>/available`` (retained ``online``/``offline``; ``offline`` is also the will),
``<prefix>/<gateway>/<camera>/detections`` (the v1 wire message, unchanged),
``<prefix>/<gateway>/<camera>/state`` (retained JSON) and ``<prefix>/<gateway>/stats`` (JSON,
periodic). Pure functions of the settings and the messages; standard library only.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streamdet_client import wire

ONLINE, OFFLINE = "online", "offline"
STREAMING = "streaming"  # the decoder state in which a camera counts as online
_SEPARATORS = (",", ":")


@dataclass(frozen=True)
class Topics:
    """Topic names under ``<prefix>/<gateway_id>``."""

    prefix: str
    gateway_id: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.gateway_id}"

    @property
    def available(self) -> str:
        return f"{self.base}/available"

    @property
    def stats(self) -> str:
        return f"{self.base}/stats"

    def detections(self, camera: str) -> str:
        wire.detection_topic(camera)  # a camera id is always a safe topic level; raises WireError if not
        return f"{self.base}/{camera}/detections"

    def state(self, camera: str) -> str:
        wire.detection_topic(camera)
        return f"{self.base}/{camera}/state"


def dumps(value: Mapping[str, Any]) -> bytes:
    """Compact JSON bytes (the wire's own encoding)."""
    return json.dumps(value, separators=_SEPARATORS, ensure_ascii=False).encode("utf-8")


def detections_payload(msg: Mapping[str, Any]) -> bytes:
    """The payload of a detections topic: the v1 wire message as the daemon publishes it."""
    return wire.encode(msg)[1]


def camera_state(camera: str, stats: Mapping[str, Any] | None, ts: float | None = None) -> dict[str, Any]:
    """The retained state of one camera: ``online`` while its decoder streams, with fps and latency
    from its last stats entry; ``offline`` (no figures) when ``stats`` is None (gone or stopped)."""
    now = time.time() if ts is None else ts
    if stats is None:
        return {"camera": camera, "status": OFFLINE, "decoder": None, "fps": None, "latency_ms": None, "ts": now}
    state = str(stats.get("state"))
    return {"camera": camera, "status": ONLINE if state == STREAMING else OFFLINE, "decoder": state,
            "fps": stats.get("fps"), "latency_ms": stats.get("latency_ms"), "ts": now}
