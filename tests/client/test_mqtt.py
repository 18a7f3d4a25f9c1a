"""The MQTT bridge's parts without a broker: settings, topics, the bounded queue, backoff with jitter."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from streamdet_client import StreamdetError, WireError
from streamdet_client.mqtt.link import backoff_delays, tls_context
from streamdet_client.mqtt.queue import COUNTER_FIELDS, BridgeCounters, Outgoing, OutQueue
from streamdet_client.mqtt.settings import BridgeSettings, TlsSettings, topic_safe_hostname
from streamdet_client.mqtt.topics import Topics, camera_state, detections_payload
from tests.bridge.feed import detections


def test_settings_defaults_and_ports() -> None:
    s = BridgeSettings(host="broker", gateway_id="gw1")
    assert (s.broker_port, s.broker) == (1883, "mqtt://broker:1883")
    t = BridgeSettings(host="broker", gateway_id="gw1", tls=TlsSettings())
    assert (t.broker_port, t.broker) == (8883, "mqtts://broker:8883")
    assert BridgeSettings(host="::1", gateway_id="gw1", port=1999).broker == "mqtt://[::1]:1999"
    assert "s3cret" not in repr(BridgeSettings(host="b", gateway_id="g", username="u", password="s3cret"))


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"gateway_id": "a/b"}, "bad gateway id"),
    ({"gateway_id": "+"}, "bad gateway id"),
    ({"gateway_id": ""}, "bad gateway id"),
    ({"topic_prefix": "x//y"}, "bad topic prefix"),
    ({"topic_prefix": "$SYS"}, "bad topic prefix"),
    ({"topic_prefix": "a/#"}, "bad topic prefix"),
    ({"username": "u"}, "username and password go together"),
    ({"password": "p"}, "username and password go together"),
    ({"qos": 2}, "bad qos 2"),
    ({"max_queued": 0}, "bad max_queued"),
    ({"protocol": "3.1"}, "bad protocol"),
    ({"port": 70000}, "bad broker port"),
    ({"reconnect_initial_s": 5.0, "reconnect_max_s": 1.0}, "reconnect delays"),
])
def test_settings_reject_bad_values_by_name(kwargs: dict[str, object], words: str) -> None:
    base: dict[str, object] = {"host": "broker", "gateway_id": "gw1"}
    with pytest.raises(StreamdetError, match=words):
        BridgeSettings(**{**base, **kwargs})  # type: ignore[arg-type]


def test_tls_cert_and_key_go_together() -> None:
    with pytest.raises(StreamdetError, match="cert_file and key_file"):
        TlsSettings(cert_file=Path("c.pem"))


def test_tls_context_names_a_missing_ca_file(tmp_path: Path) -> None:
    with pytest.raises(StreamdetError, match="cannot load .*missing.pem"):
        tls_context(TlsSettings(ca_file=tmp_path / "missing.pem"))
    ctx = tls_context(TlsSettings())
    assert ctx.check_hostname and not tls_context(TlsSettings(insecure=True)).check_hostname


def test_hostname_becomes_a_topic_level() -> None:
    assert topic_safe_hostname("gw 1/a+b#") == "gw-1-a-b-"
    assert topic_safe_hostname("") == "gateway"
    assert topic_safe_hostname("edge-01.site.example") == "edge-01.site.example"


def test_topics() -> None:
    t = Topics("fleet/eu", "gw1")
    assert (t.available, t.stats) == ("fleet/eu/gw1/available", "fleet/eu/gw1/stats")
    assert (t.detections("door"), t.state("door")) == ("fleet/eu/gw1/door/detections", "fleet/eu/gw1/door/state")
    with pytest.raises(WireError):
        t.detections("a/b")


def test_detections_payload_is_the_wire_message() -> None:
    msg = detections("cam1", 7)
    assert json.loads(detections_payload(msg)) == msg


def test_camera_state() -> None:
    online = camera_state("a", {"state": "streaming", "fps": 5.0, "latency_ms": {"p50": 1.0}}, ts=10.0)
    assert online == {"camera": "a", "status": "online", "decoder": "streaming", "fps": 5.0,
                      "latency_ms": {"p50": 1.0}, "ts": 10.0}
    assert camera_state("a", {"state": "backoff", "fps": 0.0, "latency_ms": {}})["status"] == "offline"
    assert camera_state("a", None)["status"] == "offline"


def test_queue_drops_the_oldest_and_counts_why() -> None:
    sink = [9.0] * len(COUNTER_FIELDS)
    counters = BridgeCounters(sink)
    q = OutQueue(3, counters)
    for i in range(5):
        q.put(Outgoing("t", str(i).encode()), connected=i < 4)  # the fifth arrives while disconnected
    snap = counters.snapshot()
    assert (snap["dropped_queue_full"], snap["dropped_disconnected"], snap["queued"]) == (1, 1, 3)
    assert sink[COUNTER_FIELDS.index("dropped_disconnected")] == 1.0 and sink[COUNTER_FIELDS.index("queued")] == 3
    got = [q.pop() for _ in range(4)]
    assert [g.payload for g in got if g] == [b"2", b"3", b"4"] and got[3] is None
    q.push_front(Outgoing("t", b"x"))
    assert q.pop() == Outgoing("t", b"x") and len(q) == 0
    assert counters.dropped == 2


def test_backoff_doubles_to_the_cap_with_jitter() -> None:
    nxt = backoff_delays(1.0, 8.0, 0.5, random.Random(1))
    seq = [nxt() for _ in range(7)]
    bases = [1, 2, 4, 8, 8, 8, 8]
    assert all(0.5 * b <= d <= 1.5 * b for d, b in zip(seq, bases, strict=True)), seq
    # two gateways that lost the broker at once do not come back in lock-step
    a, b = backoff_delays(1.0, 8.0, 0.5, random.Random(2)), backoff_delays(1.0, 8.0, 0.5, random.Random(3))
    assert [a() for _ in range(5)] != [b() for _ in range(5)]
    flat = backoff_delays(1.0, 8.0, 0.0, random.Random(4))
    assert [flat() for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
