"""The supervisor's MQTT bridge child: started when ``mqtt:`` is configured, changed by a reload alone.

One child, named :data:`streamdet.bridge.child.CHILD_NAME`, of kind ``bridge``. The restart policy
restarts it with backoff whenever it dies and never gives up on it (a broker problem never stops
the daemon). A reload that changes ``mqtt:`` (or the publish endpoint it reads from) restarts this
child alone; one that removes ``mqtt:`` stops it (it publishes ``offline`` first). When the daemon
publishes with CurveZMQ, the bridge connects with a key pair made here and admitted by the proxy
(:func:`streamdet.bridge.child.admit_bridge`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from streamdet.bridge.child import CHILD_NAME, BridgeKeys, bridge_curve
from streamdet.config import Config
from streamdet.stopflag import StopFlag
from streamdet.supervisor.children import Child

BRIDGE_TARGET = "streamdet.bridge.child:bridge_main"

if TYPE_CHECKING:
    from streamdet.supervisor.state import SupervisorState

log = logging.getLogger("streamdet.supervisor")


def _bridge_key(config: Config) -> tuple[Any, ...] | None:
    """What a change of restarts the bridge: its section and where it reads from; None: no bridge."""
    if config.mqtt is None:
        return None
    return config.mqtt, config.publish.endpoint, config.publish.curve


class BridgeRunner:
    """Creates, restarts and retires the bridge child of the supervisor's ``state`` (see the module docstring)."""

    def __init__(self, state: SupervisorState) -> None:
        self.state = state
        self.keys = BridgeKeys.generate()  # admitted by a CURVE proxy whether or not a bridge runs
        self.counters: Any = None  # shared array of the running bridge's counters (COUNTER_FIELDS order)

    def counter_values(self) -> Sequence[float] | None:
        """The bridge's counters for the metrics, or None when no bridge is configured."""
        if self.state.config.mqtt is None or self.counters is None:
            return None
        return list(self.counters)

    def _args(self, config: Config) -> Any:
        from streamdet.supervisor.runtime import local_endpoint
        from streamdet.transport.keys import server_keys_from_config

        assert config.mqtt is not None
        settings = config.mqtt.bridge_settings()
        endpoint = local_endpoint(config.publish.endpoint)
        curve = bridge_curve(server_keys_from_config(config), self.keys)
        counters = self.counters

        def build(stop: StopFlag) -> tuple[Any, ...]:
            return settings, endpoint, curve, stop, counters

        return build

    def sync(self, old: Config | None, new: Config) -> str | None:
        """Make the bridge child match ``new`` (``old``: what ran before; None at the first start).
        Returns a note for the reload summary, or None when nothing changed."""
        from streamdet_client.mqtt import COUNTER_FIELDS

        before, after = (None if old is None else _bridge_key(old)), _bridge_key(new)
        child = self.state.children.get(CHILD_NAME)
        if after is None:
            if child is None or child.retire:
                return None
            child.retire = True
            child.request_stop(new.supervisor.stop_timeout_s)
            return "MQTT bridge stopped"
        if before == after and child is not None and not child.retire:
            return None
        if self.counters is None:
            self.counters = self.state.ctx.RawArray("d", len(COUNTER_FIELDS))
        if child is None:
            child = Child(CHILD_NAME, "bridge", (), self._args(new), BRIDGE_TARGET)
            self.state.children[CHILD_NAME] = child
            assert new.mqtt is not None
            log.info("MQTT bridge to %s configured", new.mqtt.bridge_settings().broker)
            return "MQTT bridge started"
        child.build_args = self._args(new)
        child.retire = False
        child.parked = None
        if child.process is None:
            child.next_start, child.start_failures = 0.0, 0
        else:
            child.restart_when_stopped = True
            child.request_stop(new.supervisor.stop_timeout_s)
        return "MQTT bridge restarted"
