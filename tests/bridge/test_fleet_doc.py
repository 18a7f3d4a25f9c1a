"""docs/fleet.md as a new user would try it: its consumer and its store-and-forward mosquitto bridge."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.bridge.feed import Feed, detections
from tests.bridge.running import RunningBridge, fast_settings, until
from tests.helpers.mosquitto import Broker, Watcher, require_mosquitto

pytestmark = [pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[2]
FLEET = (REPO / "docs" / "fleet.md").read_text()
TIMEOUT_S = 60.0


def block(after: str, lang: str) -> str:
    """The first fenced ``lang`` block after the heading or line ``after``."""
    start = FLEET.index(after)
    m = re.compile(rf"```{lang}\n(.*?)```", re.S).search(FLEET, start)
    assert m is not None, f"no {lang} block after {after!r}"
    return m.group(1)


def test_the_consumer_receives_every_camera_and_drops_duplicates(tmp_path: Path) -> None:
    require_mosquitto()
    code = block("## A consumer", "python")
    assert len([ln for ln in code.splitlines() if ln.strip()]) <= 15
    local = "client.connect('127.0.0.1', int(__import__('sys').argv[1]))"
    code = code.replace('client.connect("mqtt.example.com")', local)
    script = tmp_path / "consumer.py"
    script.write_text(code)
    with Broker(tmp_path) as broker:
        proc = subprocess.Popen([sys.executable, "-u", str(script), str(broker.port)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")) if proc.stdout else None,
                                  daemon=True)
        reader.start()
        try:
            import paho.mqtt.client as mqtt

            pub = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
            pub.connect("127.0.0.1", broker.port)
            pub.loop_start()

            def send(gateway: str, camera: str, seq: int) -> None:
                payload = json.dumps(detections(camera, seq)).encode()
                pub.publish(f"streamdet/{gateway}/{camera}/detections", payload, qos=1).wait_for_publish(10)

            until(lambda: (send("gw1", "door", 0), lines)[1], "the consumer to print", TIMEOUT_S)
            for gateway, camera, seq in [("gw1", "door", 1), ("gw1", "door", 1), ("gw2", "door", 1),
                                         ("gw1", "yard", 1), ("gw1", "door", 2), ("gw1", "door", 2)]:
                send(gateway, camera, seq)
            until(lambda: any(ln.startswith("gw1 door 2") for ln in lines), "the last message", TIMEOUT_S)
            pub.loop_stop()
            pub.disconnect()
        finally:
            proc.terminate()
            proc.wait(10)
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()
    printed = [tuple(ln.split()[:3]) for ln in lines]
    after_first = printed[printed.index(("gw1", "door", "1")):]
    assert after_first == [("gw1", "door", "1"), ("gw2", "door", "1"), ("gw1", "yard", "1"), ("gw1", "door", "2")]
    assert all("'person'" in ln for ln in lines)


@pytest.mark.slow
def test_store_and_forward_through_a_local_mosquitto(tmp_path: Path) -> None:
    """The documented gateway mosquitto.conf (addresses and files replaced) rides out a central outage."""
    require_mosquitto()
    central = Broker(tmp_path)
    conf = block("/etc/mosquitto/conf.d/streamdet.conf", "")
    local = Broker(tmp_path)
    lines = []
    for line in conf.splitlines():
        key = line.split("#")[0].strip().split(" ")[0] if line.strip() else ""
        if key in ("listener", "bridge_cafile", "remote_username", "remote_password", "persistence_location"):
            continue
        if key == "address":
            line = f"address 127.0.0.1:{central.port}"
        lines.append(line.split("  #")[0].rstrip())
    lines += [f"listener {local.port} 127.0.0.1", f"persistence_location {local.root}/", f"log_dest file {local.log}",
              "log_type all", "restart_timeout 1"]
    local.conf.write_text("\n".join(lines) + "\n")
    settings = fast_settings(local.port, gateway_id="lobby-gw", qos=1)
    with central, local, Feed(period_s=0.05) as feed:
        watch = Watcher(central, "streamdet/#")
        try:
            with RunningBridge(settings, feed.endpoint) as run:
                until(lambda: len(watch.on("streamdet/lobby-gw/cam1/detections")) >= 5, "detections at the centre",
                      TIMEOUT_S)
                watch.close()
                central.kill()
                outage_from = feed.sent["cam1"]
                until(lambda: feed.sent["cam1"] >= outage_from + 40, "frames during the outage", TIMEOUT_S)
                outage_to = feed.sent["cam1"]
                central.start()
                watch = Watcher(central, "streamdet/#")
                until(lambda: outage_to in seqs(watch), "frames sent after the outage", TIMEOUT_S)
                assert run.counter("dropped_disconnected") == 0  # the local broker never went away
            got = seqs(watch)
            # what was published while the centre was down arrived afterwards (the first few may have
            # been in flight on the central connection when it broke)
            missing = set(range(outage_from + 5, outage_to)) - got
            assert not missing, sorted(missing)[:20]
        finally:
            watch.close()


def seqs(watch: Watcher) -> set[int]:
    return {json.loads(m.payload)["seq"] for m in watch.on("streamdet/lobby-gw/cam1/detections")}
