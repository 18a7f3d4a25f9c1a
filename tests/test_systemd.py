"""sd_notify: datagrams reach a NOTIFY_SOCKET; outside systemd everything is a no-op."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from streamdet.systemd import SystemdNotifier


def test_noop_without_systemd() -> None:
    n = SystemdNotifier(environ={})
    assert not n.enabled and not n.ready() and n.watchdog_interval_s is None


def test_sends_states(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.settimeout(2)
        n = SystemdNotifier(environ={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "20000000",
                                     "WATCHDOG_PID": str(os.getpid())})
        assert n.watchdog_interval_s == 10.0
        assert n.ready("serving 2 cameras")
        assert server.recv(256) == b"READY=1\nSTATUS=serving 2 cameras"
        assert n.watchdog() and server.recv(256) == b"WATCHDOG=1"
        assert n.stopping() and server.recv(256) == b"STOPPING=1"


def test_watchdog_for_another_pid_is_ignored() -> None:
    n = SystemdNotifier(environ={"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"})
    assert n.watchdog_interval_s is None
    assert not n.ready()  # socket missing: reported, not raised
