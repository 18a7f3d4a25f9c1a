"""The supervised MQTT bridge in a real daemon (``streamdet run`` with ``mqtt:``) against real mosquittos.

One daemon throughout: detections reach the broker; the broker is killed and restarted and
detections resume with the daemon, its worker and its decoder untouched; a reload that points
``mqtt:`` at another broker restarts the bridge alone (the old broker keeps ``offline``); killing
the daemon outright leaves the will ``offline`` retained; a bridge killed by itself is restarted; a
reload whose ``mqtt:`` names a missing TLS file is rejected; the bridge's counters are on ``/metrics``.
"""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from pathlib import Path

import pytest

from streamdet.client import Subscriber
from streamdet.supervisor.runtime import segments_of
from tests.bridge.running import until
from tests.helpers.daemon import Daemon
from tests.helpers.media import make_test_clip
from tests.helpers.mosquitto import Broker, Watcher, require_mosquitto, retained
from tests.helpers.rtsp import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = REPO / "configs" / "demo" / "shapes_yolov5n.pt"
BASE = "fleet/gw-e2e"
TIMEOUT_S = 60.0


def config(port: int, metrics_port: int, clip: Path) -> str:
    return f"""
model: {{weights: "{WEIGHTS}", backend: torch, img_size: 256}}
devices: [cpu]
metrics: {{port: {metrics_port}}}
publish: {{endpoint: "{{endpoint}}", stats_interval_s: 1.0}}
cameras:
  - {{id: a, url: "{clip}", loop: true, max_fps: 5}}
mqtt:
  host: 127.0.0.1
  port: {port}
  gateway_id: gw-e2e
  topic_prefix: fleet
  stats_interval_s: 1.0
  reconnect: {{initial_s: 0.2, max_s: 1.0}}
"""


def test_daemon_bridge_outage_reload_and_will(tmp_path: Path) -> None:
    require_mosquitto()
    first, second = Broker(tmp_path), Broker(tmp_path)
    metrics_port = free_port()
    clip = make_test_clip(tmp_path / "a.mp4", width=320, height=240, frames=50)  # a fresh clone has no demo clips
    daemon = Daemon(tmp_path / "d", config(first.port, metrics_port, clip), name="mq")

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
            return str(r.read().decode())

    with first, second, Watcher(first, "fleet/#") as watch_first:
        daemon.start()
        try:
            daemon.wait_ready()
            until(lambda: len(watch_first.on(f"{BASE}/a/detections")) >= 3, "detections on the first broker",
                  TIMEOUT_S)
            msg = json.loads(watch_first.on(f"{BASE}/a/detections")[-1].payload)
            assert (msg["v"], msg["type"], msg["camera"]) == (1, "detections", "a")
            until(lambda: watch_first.on(f"{BASE}/a/state"), "camera a's state", TIMEOUT_S)
            assert json.loads(watch_first.last(f"{BASE}/a/state") or b"{}")["status"] == "online"
            worker, decoder = daemon.child_pid("sd-worker-cpu"), daemon.child_pid("sd-decoder-a")
            bridge = daemon.child_pid("sd-mqtt-bridge")
            assert worker and decoder and bridge
            until(lambda: "streamdet_mqtt_connected 1.0" in scrape(), "the bridge's metrics", TIMEOUT_S)
            assert "streamdet_mqtt_messages_sent_total" in scrape()

            # broker outage: the daemon keeps serving, the bridge reconnects, detections resume
            first.kill()
            watch_first.close()
            with Subscriber(daemon.endpoint, ["a"]) as sub:  # the daemon keeps serving ZeroMQ subscribers
                got = [sub.recv(TIMEOUT_S) for _ in range(3)]
            assert all(m is not None and m["camera"] == "a" for m in got)
            first.start()
            with Watcher(first, "fleet/#") as again:
                until(lambda: len(again.on(f"{BASE}/a/detections")) >= 3, "detections after the outage", TIMEOUT_S)
                assert retained(first, f"{BASE}/available") == b"online"
            until(lambda: "streamdet_mqtt_reconnects_total 1.0" in scrape(), "the reconnect counted", TIMEOUT_S)
            assert 'streamdet_mqtt_messages_dropped_total{reason="disconnected"}' in scrape()
            assert (daemon.child_pid("sd-worker-cpu"), daemon.child_pid("sd-decoder-a")) == (worker, decoder)
            assert daemon.child_pid("sd-mqtt-bridge") == bridge

            # a reload that changes only mqtt: restarts only the bridge
            mark = daemon.mark()
            with Watcher(second, "fleet/#") as watch_second:
                daemon.write_config(config(second.port, metrics_port, clip))
                daemon.signal(signal.SIGHUP)
                line = daemon.wait_log(r"reloaded .*", since=mark, timeout=TIMEOUT_S)
                assert line is not None and "MQTT bridge restarted" in line and "restarted 0" in line, line
                assert "workers restarted" not in line
                until(lambda: len(watch_second.on(f"{BASE}/a/detections")) >= 3, "detections on the second broker",
                      TIMEOUT_S)
            assert retained(first, f"{BASE}/available") == b"offline"  # the old bridge stopped cleanly
            assert (daemon.child_pid("sd-worker-cpu"), daemon.child_pid("sd-decoder-a")) == (worker, decoder)

            # the bridge dies: restarted by the supervisor, the rest untouched
            new_bridge = daemon.child_pid("sd-mqtt-bridge")
            assert new_bridge is not None
            mark = daemon.mark()
            os.kill(new_bridge, signal.SIGKILL)
            assert daemon.wait_log(r"mqtt-bridge died \(signal 9\); restarting", since=mark, timeout=TIMEOUT_S)
            until(lambda: daemon.child_pid("sd-mqtt-bridge") not in (None, new_bridge), "a new bridge", TIMEOUT_S)
            until(lambda: retained(second, f"{BASE}/available") == b"online", "online from the new bridge",
                  TIMEOUT_S)

            # a reload whose mqtt: cannot work is rejected as a whole, the bridge untouched
            mark = daemon.mark()
            running_bridge = daemon.child_pid("sd-mqtt-bridge")
            daemon.write_config(config(second.port, metrics_port, clip) + "  tls: {ca_file: missing-ca.pem}\n")
            daemon.signal(signal.SIGHUP)
            line = daemon.wait_log(r"reload rejected", since=mark, timeout=TIMEOUT_S)
            assert line is not None and "mqtt.tls.ca_file" in line and "no such file" in line, line
            assert daemon.child_pid("sd-mqtt-bridge") == running_bridge

            # the daemon killed outright: its bridge dies with it and the broker publishes the will
            assert daemon.proc is not None
            pid = daemon.pid
            daemon.proc.kill()
            daemon.wait_exit(30)
            until(lambda: not daemon.children() if daemon.running() else True, "children gone", TIMEOUT_S)
            for name in segments_of(pid):  # the rings a SIGKILLed supervisor leaves behind
                (Path("/dev/shm") / name).unlink(missing_ok=True)
            until(lambda: retained(second, f"{BASE}/available") == b"offline", "the retained will", TIMEOUT_S)
        finally:
            daemon.stop()
