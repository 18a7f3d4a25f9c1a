"""The MQTT bridge against a real mosquitto: topics, payloads, outages, credentials, TLS."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from streamdet_client import wire
from streamdet_client.mqtt import TlsSettings
from tests.bridge.feed import CAMERAS, Feed
from tests.bridge.running import RunningBridge, fast_settings, until
from tests.helpers.mosquitto import Broker, Watcher, make_ca, require_mosquitto, retained

pytestmark = [pytest.mark.e2e]

BASE = "streamdet/gw1"


@pytest.fixture(autouse=True)
def _mosquitto() -> None:
    require_mosquitto()


def test_topics_and_payloads(tmp_path: Path) -> None:
    with Broker(tmp_path) as broker, Watcher(broker, "streamdet/#") as watch, Feed() as feed, \
            RunningBridge(fast_settings(broker.port), feed.endpoint) as run:
        until(lambda: all(len(watch.on(f"{BASE}/{c}/detections")) >= 5 for c in CAMERAS), "detections of both")
        until(lambda: any(json.loads(m.payload)["daemon"] for m in watch.on(f"{BASE}/stats")),
              "a bridge stats message with the daemon's stats")
        until(lambda: watch.on(f"{BASE}/cam1/state"), "a camera state")
        assert watch.last(f"{BASE}/available") == b"online"
        for cam in CAMERAS:
            got = [json.loads(m.payload) for m in watch.on(f"{BASE}/{cam}/detections")]
            for msg in got:  # the v1 wire message, unchanged: it decodes as one
                assert wire.decode([wire.detection_topic(cam), json.dumps(msg).encode()]) == msg
                assert msg["camera"] == cam
            seqs = [m["seq"] for m in got]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        state = json.loads(watch.last(f"{BASE}/cam1/state") or b"{}")
        assert (state["status"], state["decoder"], state["fps"]) == ("online", "streaming", 25.0)
        stats = [json.loads(m.payload) for m in watch.on(f"{BASE}/stats") if json.loads(m.payload)["daemon"]][-1]
        assert stats["gateway"] == "gw1" and stats["bridge"]["connected"] == 1
        assert stats["daemon"][0]["source"] == "worker-0 cpu"
        assert retained(broker, f"{BASE}/available") == b"online"
        assert retained(broker, f"{BASE}/cam2/state") is not None
        run.stop()
        assert run.counter("sent") > 0 and run.counter("dropped_queue_full") == 0
        # a clean stop: offline, retained, for the gateway and each of its cameras
        assert retained(broker, f"{BASE}/available") == b"offline"
        assert json.loads(retained(broker, f"{BASE}/cam1/state") or b"{}")["status"] == "offline"


def test_broker_absent_at_start_then_up(tmp_path: Path) -> None:
    broker = Broker(tmp_path)  # configured, not started: nothing listens on its port yet
    with Feed() as feed, RunningBridge(fast_settings(broker.port, max_queued=20), feed.endpoint) as run:
        until(lambda: run.counter("dropped_disconnected") > 0, "drops while the broker is absent")
        assert run.counter("connected") == 0 and run.counter("sent") == 0
        assert run.counter("queued") <= 20
        with broker.start(), Watcher(broker, "streamdet/#") as watch:
            until(lambda: run.counter("connected") == 1, "the bridge to connect")
            until(lambda: len(watch.on(f"{BASE}/cam1/detections")) >= 5, "detections once the broker is up")
            assert retained(broker, f"{BASE}/available") == b"online"
            assert run.counter("reconnects") == 0  # the first connection is not a reconnect


def test_broker_killed_and_restarted(tmp_path: Path) -> None:
    broker = Broker(tmp_path)
    with broker, Feed() as feed, RunningBridge(fast_settings(broker.port, max_queued=50), feed.endpoint) as run:
        until(lambda: run.counter("connected") == 1, "the bridge to connect")
        broker.kill()
        until(lambda: run.counter("connected") == 0, "the bridge to notice the outage")
        until(lambda: run.counter("dropped_disconnected") > 0, "drops counted during the outage")
        broker.start()
        with Watcher(broker, "streamdet/#") as watch:
            until(lambda: run.counter("connected") == 1, "the bridge to reconnect")
            until(lambda: len(watch.on(f"{BASE}/cam2/detections")) >= 5, "detections to resume")
            assert run.counter("reconnects") == 1
            assert retained(broker, f"{BASE}/available") == b"online"  # published again after the reconnect
            until(lambda: retained(broker, f"{BASE}/cam1/state"), "camera states published again")


def test_wrong_password_logs_once_and_backs_off(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="streamdet.bridge")
    with Broker(tmp_path, users={"gw": "right"}) as broker, Feed() as feed, \
            RunningBridge(fast_settings(broker.port, username="gw", password="wrong"), feed.endpoint) as run:
        until(lambda: broker.log_text().count("not authorised") >= 3, "three refused attempts")
        assert run.counter("connected") == 0
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1, [r.getMessage() for r in refused]
    assert refused[0].levelno == logging.ERROR and "mqtt.password" in refused[0].getMessage()
    assert "wrong" not in caplog.text  # the password is never logged
    # backoff, not a tight loop: 0.2, 0.4, 0.8, 1.0 ... s (+-50 %) between attempts
    attempts = broker.log_text().count("New connection from")
    assert 3 <= attempts <= 12, attempts


def test_right_password_connects(tmp_path: Path) -> None:
    with Broker(tmp_path, users={"gw": "right"}) as broker, Feed() as feed, \
            RunningBridge(fast_settings(broker.port, username="gw", password="right"), feed.endpoint) as run:
        until(lambda: run.counter("sent") > 5, "messages sent")


def test_tls_right_ca_accepted_wrong_ca_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="streamdet.bridge")
    good, other = make_ca(tmp_path, "good"), make_ca(tmp_path, "other")
    with Broker(tmp_path, tls=good) as broker, Feed() as feed:
        with RunningBridge(fast_settings(broker.port, tls=TlsSettings(ca_file=good.ca)), feed.endpoint) as run:
            until(lambda: run.counter("sent") > 5, "messages sent over TLS")
        assert retained(broker, f"{BASE}/available") == b"offline"  # and a clean stop over TLS
        caplog.clear()
        with RunningBridge(fast_settings(broker.port, tls=TlsSettings(ca_file=other.ca)), feed.endpoint) as run:
            until(lambda: broker.log_text().count("New connection from") >= 3, "attempts with the wrong CA")
            assert run.counter("connected") == 0 and run.counter("sent") == 0
        tls_lines = [r.getMessage() for r in caplog.records if "TLS" in r.getMessage()]
        assert len(tls_lines) == 1 and "does not verify" in tls_lines[0], tls_lines
