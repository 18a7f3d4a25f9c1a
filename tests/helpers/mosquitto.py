"""A real MQTT broker for tests: Debian's ``mosquitto`` on a free loopback port, with its own config.

Never the system service: each ``Broker`` writes its config, password file and (optionally) TLS
files under the test's ``tmp_path``, runs ``mosquitto -c`` as a child of the test and stops it by
its pid. ``Broker.kill()`` then ``start()`` again restarts it on the same port (a broker outage).
``Watcher`` is a paho client that records every message under a topic filter; ``make_ca`` writes a
test CA and a server certificate for 127.0.0.1 with the ``openssl`` command.
"""

from __future__ import annotations

import contextlib
import getpass
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.rtsp import free_port

MOSQUITTO = "/usr/sbin/mosquitto"
START_S = 10.0


def require_mosquitto() -> None:
    """Fail (not skip) without mosquitto or paho-mqtt: .ci/run installs both."""
    if not Path(MOSQUITTO).is_file() or shutil.which("mosquitto_passwd") is None:
        pytest.fail("mosquitto is not installed: apt-get install mosquitto (tools/setup.sh --test does it)")
    try:
        import paho.mqtt.client  # noqa: F401
    except ImportError:
        pytest.fail("paho-mqtt is not installed: pip install -e '.[dev,mqtt]' (tools/setup.sh does it)")


@dataclass(frozen=True)
class TlsFiles:
    """A CA and a server certificate/key signed by it (for 127.0.0.1 and localhost)."""

    ca: Path
    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(root: Path, name: str = "ca") -> TlsFiles:
    """A fresh CA in ``root/name`` and a server certificate for 127.0.0.1 signed by it."""
    d = root / name
    d.mkdir(parents=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=streamdet test {name}",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
             "-out", "server.csr", cwd=d)
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", "ext.cnf", "-out", "server.crt", cwd=d)
    return TlsFiles(d / "ca.crt", d / "server.crt", d / "server.key")


class Broker:
    """mosquitto on 127.0.0.1:``port`` (a free one by default); a context manager that stops it."""

    def __init__(self, root: Path, *, users: dict[str, str] | None = None, tls: TlsFiles | None = None,
                 port: int | None = None) -> None:
        self.root = root / f"mosquitto-{id(self):x}"
        self.root.mkdir(parents=True)
        self.port = port or free_port()
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.root / "mosquitto.log"
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", f"log_dest file {self.log}",
                 "log_type all", f"user {getpass.getuser()}"]
        if users:
            pw = self.root / "passwords"
            for i, (user, password) in enumerate(users.items()):
                subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if i == 0 else []), str(pw), user, password],
                               check=True, capture_output=True, timeout=30)
            pw.chmod(0o600)
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines.append("allow_anonymous true")
        if tls is not None:
            lines += [f"cafile {tls.ca}", f"certfile {tls.cert}", f"keyfile {tls.key}"]
        self.conf = self.root / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self) -> Broker:
        """Start it and wait until its port accepts connections."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {err} {self.log_text()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return self
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on port {self.port} within {START_S} s")

    def kill(self) -> None:
        """SIGKILL it (an outage); ``start()`` brings it back on the same port."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close_pipe()

    def _close_pipe(self) -> None:
        if self.proc is not None and self.proc.stderr is not None and not self.proc.stderr.closed:
            self.proc.stderr.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._close_pipe()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> Broker:
        return self if self.running else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Message:
    topic: str
    payload: bytes
    retain: bool
    at: float


class Watcher:
    """A paho subscriber recording every message under ``topic`` (retained ones included)."""

    def __init__(self, broker: Broker, topic: str = "#", *, username: str | None = None,
                 password: str | None = None) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
        if username is not None:
            self.client.username_pw_set(username, password)
        if broker.tls is not None:
            self.client.tls_set(ca_certs=str(broker.tls.ca))
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        if not self._subscribed.wait(START_S):
            raise RuntimeError("watcher did not subscribe")

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._lock:
            self.messages.append(Message(msg.topic, bytes(msg.payload), bool(msg.retain), time.monotonic()))

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()

    def on(self, topic: str) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def last(self, topic: str) -> bytes | None:
        found = self.on(topic)
        return found[-1].payload if found else None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def retained(broker: Broker, topic: str, timeout: float = 1.5, *, username: str | None = None,
             password: str | None = None) -> bytes | None:
    """The retained payload of ``topic`` as a new subscriber sees it (None: nothing retained)."""
    with Watcher(broker, topic, username=username, password=password) as w:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [m for m in w.on(topic) if m.retain]
            if found:
                return found[-1].payload
            time.sleep(0.05)
    return None
