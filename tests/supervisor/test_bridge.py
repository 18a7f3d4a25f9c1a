"""The supervisor's MQTT bridge child (streamdet.supervisor.bridge) and its restart policy, without processes."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from streamdet.bridge.child import CHILD_NAME, BridgeKeys, admit_bridge, bridge_curve
from streamdet.config import Config, parse_config
from streamdet.supervisor.bridge import BridgeRunner
from streamdet.supervisor.policy import RestartPolicy
from streamdet.transport.sockets import CurveServerKeys


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "m.pt").write_bytes(b"w")
    (tmp_path / "a.mp4").write_bytes(b"v")
    return tmp_path


def config(folder: Path, mqtt: str = "", publish: str = "tcp://127.0.0.1:5555") -> Config:
    text = f"model: {{weights: m.pt}}\ncameras: [{{id: a, url: a.mp4}}]\npublish: {{endpoint: '{publish}'}}\n{mqtt}"
    return parse_config(text, folder)


def fake_sup(cfg: Config) -> Any:
    return SimpleNamespace(children={}, ctx=mp.get_context("spawn"), config=cfg)


def test_bridge_child_follows_mqtt_and_nothing_else(folder: Path) -> None:
    plain, a = config(folder), config(folder, "mqtt: {host: a, gateway_id: g}\n")
    sup = fake_sup(plain)
    runner = BridgeRunner(sup)
    assert runner.sync(None, plain) is None and CHILD_NAME not in sup.children
    assert runner.counter_values() is None
    assert runner.sync(plain, a) == "MQTT bridge started"
    child = sup.children[CHILD_NAME]
    assert (child.kind, child.cameras) == ("bridge", ())
    settings, endpoint, curve, stop, counters = child.build_args("STOP")
    assert (settings.host, settings.gateway_id, endpoint, curve, stop) == ("a", "g", "tcp://127.0.0.1:5555", None,
                                                                          "STOP")
    sup.config = a
    assert runner.counter_values() == [0.0] * 6
    # another camera, another log level: not the bridge's business
    other = parse_config("model: {weights: m.pt}\ncameras: [{id: b, url: a.mp4}]\nlog_level: debug\n"
                         "mqtt: {host: a, gateway_id: g}\n", folder)
    assert runner.sync(a, other) is None
    # the broker or the endpoint it reads from changes: restarted
    b = config(folder, "mqtt: {host: b, gateway_id: g}\n")
    assert runner.sync(a, b) == "MQTT bridge restarted" and sup.children[CHILD_NAME] is child
    assert child.build_args("S")[0].host == "b" and child.next_start == 0.0
    moved = config(folder, "mqtt: {host: b, gateway_id: g}\n", publish="tcp://0.0.0.0:6000")
    assert runner.sync(b, moved) == "MQTT bridge restarted"
    assert child.build_args("S")[1] == "tcp://127.0.0.1:6000"  # wildcard binds are read on loopback
    # mqtt: removed: the bridge is retired (it stops cleanly, publishing offline)
    assert runner.sync(moved, plain) == "MQTT bridge stopped" and child.retire
    assert runner.sync(plain, b) == "MQTT bridge restarted" and not child.retire


def test_curve_daemon_admits_the_bridge_key() -> None:
    keys = BridgeKeys.generate()
    server = CurveServerKeys(b"S" * 40, b"s" * 40, frozenset({b"A" * 40}))
    admitted = admit_bridge(server, keys)
    assert admitted is not None and admitted.authorized == {b"A" * 40, keys.public_key}
    client = bridge_curve(server, keys)
    assert client is not None and (client.server_key, client.public_key) == (b"S" * 40, keys.public_key)
    assert admit_bridge(None, keys) is None and bridge_curve(None, keys) is None
    assert keys.secret_key.decode() not in repr(keys)


def test_a_dying_bridge_is_restarted_with_backoff_and_never_given_up(folder: Path) -> None:
    cfg = config(folder, "mqtt: {host: a, gateway_id: g}\nsupervisor: {restart_limit: 2}\n")
    sup = fake_sup(cfg)
    BridgeRunner(sup).sync(None, cfg)
    child = sup.children[CHILD_NAME]
    policy = RestartPolicy(sup)
    delays = []
    for _ in range(8):  # far beyond restart_limit: a worker would end the daemon, a decoder be parked
        child.started_at = time.time()  # it died right after its start
        assert policy.on_death(child, 1) is True
        delays.append(child.backoff_s)
    assert child.parked is None and child.restart_count == 8
    assert delays == sorted(delays) and delays[-1] == 30.0  # exponential, capped
