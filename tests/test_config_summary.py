"""The publish line of ``streamdet check``'s summary names CurveZMQ and its client keys."""

from __future__ import annotations

import textwrap
from pathlib import Path

import streamdet.config
from streamdet.config import CurveConfig, parse_config, summarize

BASE = """\
model: {weights: model.pt}
cameras:
  - {id: lobby, url: lobby.mp4}
"""


def _publish_line(folder: Path, extra: str = "") -> str:
    config = parse_config(textwrap.dedent(BASE) + extra, folder, env={}, source="cams.yaml")
    return next(line for line in summarize(config).splitlines() if line.startswith("publish:"))


def _folder(tmp_path: Path) -> Path:
    (tmp_path / "model.pt").write_bytes(b"weights")
    (tmp_path / "lobby.mp4").write_bytes(b"video")
    return tmp_path


CURVE = """\
publish:
  curve: {server_secret_key: keys/server.key_secret, authorized_keys: keys/clients}
"""


def test_no_curve_says_nothing(tmp_path: Path) -> None:
    assert "CURVE" not in _publish_line(_folder(tmp_path))


def test_curve_counts_the_client_keys(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    clients = folder / "keys" / "clients"
    clients.mkdir(parents=True)
    for name in ("alice.key", "bob.key"):
        (clients / name).write_text("curve\n")
    (clients / "alice.key_secret").write_text("not a public key\n")  # not counted
    (clients / "notes.txt").write_text("")
    assert _publish_line(folder, CURVE).endswith(", CURVE (2 client keys))")
    (clients / "bob.key").unlink()
    assert _publish_line(folder, CURVE).endswith(", CURVE (1 client key))")


def test_curve_without_the_directory_here(tmp_path: Path) -> None:
    line = _publish_line(_folder(tmp_path), CURVE)
    assert line.endswith(", CURVE)")


def test_curve_config_is_exported() -> None:
    assert "CurveConfig" in streamdet.config.__all__
    assert streamdet.config.CurveConfig is CurveConfig


def _summary_lines(folder: Path, extra: str) -> list[str]:
    config = parse_config(textwrap.dedent(BASE) + extra, folder, env={"WEB_PASS": "s3cret"}, source="cams.yaml")
    return summarize(config).splitlines()


def test_web_line_names_the_address_and_auth_only_when_configured(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    assert not any(line.startswith("web:") for line in _summary_lines(folder, ""))
    (line,) = [x for x in _summary_lines(folder, "web: {port: 8081}\n") if x.startswith("web:")]
    assert "http://127.0.0.1:8081/" in line and "no auth: loopback only" in line
    extra = 'web: {host: 0.0.0.0, port: 8082, auth: {username: ops, password: "${WEB_PASS}"}}\n'
    lines = _summary_lines(folder, extra)
    (line,) = [x for x in lines if x.startswith("web:")]
    assert "http://0.0.0.0:8082/" in line and "HTTP Basic auth" in line
    assert not any("s3cret" in x for x in lines)  # the password never shows
