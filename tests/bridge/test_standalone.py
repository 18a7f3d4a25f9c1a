"""``streamdet bridge mqtt`` on its own against any daemon: options, a clean stop, and a kill leaving the will."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bridge.feed import Feed
from tests.bridge.running import until
from tests.helpers.curve import make_keys
from tests.helpers.mosquitto import Broker, Watcher, require_mosquitto, retained

pytestmark = [pytest.mark.e2e]

TIMEOUT_S = 30.0


def bridge_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "streamdet", "bridge", "mqtt", *args]


def test_bad_options_are_usage_errors() -> None:
    for args, words in ((["--host", "b", "--gateway-id", "a/b"], "bad gateway id"),
                        (["--host", "b", "--username", "u"], "go together"),
                        (["--host", "b", "--password-env", "NO_SUCH_VAR_SD"], "no such environment variable"),
                        (["--host", "b", "--ca-file", "/nonexistent/ca.pem"], "no such file")):
        run = subprocess.run(bridge_cmd(*args), capture_output=True, text=True, timeout=60)
        assert run.returncode == 2 and words in run.stderr, (args, run.stderr)


def test_standalone_bridge_stops_cleanly_and_leaves_the_will_when_killed(tmp_path: Path) -> None:
    require_mosquitto()
    with Broker(tmp_path, users={"central": "pw"}) as broker, Feed() as feed, \
            Watcher(broker, "site/#", username="central", password="pw") as watch:
        env = {**os.environ, "BROKER_PW": "pw"}
        login = {"username": "central", "password": "pw"}
        args = ["--endpoint", feed.endpoint, "--host", "127.0.0.1", "--port", str(broker.port), "--gateway-id",
                "gw7", "--topic-prefix", "site", "--username", "central", "--password-env", "BROKER_PW"]
        for ending in (signal.SIGTERM, signal.SIGKILL):
            watch.clear()  # what the previous round left
            proc = subprocess.Popen(bridge_cmd(*args), env=env, stderr=subprocess.PIPE, text=True)
            try:
                until(lambda: len(watch.on("site/gw7/cam1/detections")) >= 3, "detections", TIMEOUT_S)
                until(lambda: watch.on("site/gw7/cam1/state"), "a camera state", TIMEOUT_S)
                assert watch.last("site/gw7/available") == b"online"
                watch.clear()
                proc.send_signal(ending)
                proc.wait(TIMEOUT_S)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
                err = proc.stderr.read() if proc.stderr else ""
                if proc.stderr:
                    proc.stderr.close()
            # SIGTERM: published offline itself; SIGKILL: the broker published the will
            until(lambda: watch.last("site/gw7/available") == b"offline", f"offline after {ending.name}", TIMEOUT_S)
            assert retained(broker, "site/gw7/available", **login) == b"offline"
            if ending == signal.SIGTERM:
                assert proc.returncode == 0, err
                assert "connected to mqtt://127.0.0.1" in err and "pw" not in err.replace("BROKER_PW", "")
                state = json.loads(retained(broker, "site/gw7/cam1/state", **login) or b"{}")
                assert state["status"] == "offline"


def test_standalone_bridge_with_curve(tmp_path: Path) -> None:
    """Curve keys as ``streamdet subscribe`` takes them: the bridge subscribes to a CURVE daemon."""
    require_mosquitto()
    import zmq

    from streamdet import wire
    from streamdet.transport.keys import load_server_keys
    from streamdet.transport.proxy import PublishProxy
    from tests.bridge.feed import detections

    keys = make_keys(tmp_path / "keys")
    curve = load_server_keys(keys.server_secret, keys.authorized_dir)
    internal = f"ipc://{tmp_path}/in.sock"
    with Broker(tmp_path) as broker, Watcher(broker, "streamdet/#") as watch, \
            PublishProxy(internal, "tcp://127.0.0.1:*", curve=curve) as proxy:
        ctx = zmq.Context()
        pub = ctx.socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 0)
        pub.connect(internal)
        proc = subprocess.Popen(bridge_cmd("--endpoint", str(proxy.bound_endpoint), "--server-key",
                                           str(keys.server_public), "--client-key", str(keys.alice_secret),
                                           "--host", "127.0.0.1", "--port", str(broker.port), "--gateway-id", "gw8"),
                                stderr=subprocess.DEVNULL)
        try:
            seq = 0

            def sent_and_seen() -> bool:
                nonlocal seq
                pub.send_multipart(wire.encode(detections("cam1", seq)))
                seq += 1
                return bool(watch.on("streamdet/gw8/cam1/detections"))

            until(sent_and_seen, "detections through CURVE", TIMEOUT_S)
        finally:
            proc.terminate()
            proc.wait(TIMEOUT_S)
            pub.close(0)
            ctx.term()
