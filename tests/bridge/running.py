"""Run an MqttBridge in a thread of the test, and wait for conditions on it."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

from streamdet_client.mqtt import BridgeSettings, MqttBridge

DEADLINE_S = 20.0


def fast_settings(port: int, **overrides: Any) -> BridgeSettings:
    """Settings for tests: short reconnect delays and stats interval."""
    base = BridgeSettings(host="127.0.0.1", port=port, gateway_id="gw1", reconnect_initial_s=0.2,
                          reconnect_max_s=1.0, stats_interval_s=0.5)
    return dataclasses.replace(base, **overrides)


def until(predicate: Callable[[], Any], what: str, timeout: float = DEADLINE_S) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


class RunningBridge:
    """``with RunningBridge(settings, endpoint) as b:`` runs ``b.bridge`` until the block ends."""

    def __init__(self, settings: BridgeSettings, endpoint: str, **kwargs: Any) -> None:
        self.bridge = MqttBridge(settings, endpoint, **kwargs)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.bridge.run, args=(self._stop.is_set,), daemon=True)

    def counter(self, name: str) -> int:
        return self.bridge.counters.snapshot()[name]

    def __enter__(self) -> RunningBridge:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(DEADLINE_S)
        assert not self._thread.is_alive(), "the bridge did not stop"

    def __exit__(self, *exc: object) -> None:
        self.stop()
