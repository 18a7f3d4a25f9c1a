"""A reload whose CurveZMQ key files are unusable is rejected like an invalid file: the running
configuration (and its publisher) stays."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from streamdet.transport.keys import keygen
from tests.supervisor.helpers import Running, fake_supervisor, write_config


def test_reload_with_a_secret_key_in_authorized_keys_is_rejected(tmp_path: Path, fixtures_dir: Path,
                                                                   monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    caplog.set_level(logging.INFO)
    path = write_config(tmp_path, fixtures_dir, cameras="  - {id: c0, url: a.mp4}")
    sup = fake_supervisor(path, monkeypatch)
    keys = tmp_path / "keys"
    keygen(keys, "server")
    keygen(keys / "clients", "alice")  # the mistake: alice's secret lands among the client keys
    with Running(sup) as run:
        run.wait(lambda: sup._ready, 60, "ready")
        before = {name: run.pid(name) for name in sup.children}
        text = path.read_text()
        curve = (f'publish: {{endpoint: "ipc://{tmp_path}/pub.sock", curve: {{server_secret_key: '
                 f'"{keys / "server.key_secret"}", authorized_keys: "{keys / "clients"}"}}}}')
        path.write_text("\n".join(curve if line.startswith("publish:") else line for line in text.splitlines()))
        sup.request_reload()
        run.wait(lambda: "reload rejected" in caplog.text, 20, "rejection")
        assert "alice.key_secret" in caplog.text and "secret key" in caplog.text
        assert sup.config.publish.curve is None  # still the running configuration
        assert {name: run.pid(name) for name in sup.children} == before  # nothing restarted
    assert run.result == [0]
