"""The ``web:`` section: defaults, the auth rule off loopback, secrets kept out of messages."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from streamdet.config import load_config
from streamdet.config.loader import parse_config
from streamdet.config.web import WebConfig, is_loopback
from streamdet.errors import ConfigError
from tests.helpers.daemon import streamdet_cli

BASE = "model: {weights: model.pt}\ncameras: [{id: a, url: lobby.mp4}]\n"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "model.pt").write_bytes(b"weights")
    (tmp_path / "lobby.mp4").write_bytes(b"video")
    return tmp_path


def parse(folder: Path, extra: str, env: dict[str, str] | None = None):
    return parse_config(BASE + textwrap.dedent(extra), folder, env=env or {}, source="cams.yaml")


def test_off_when_absent_and_loopback_by_default(folder: Path) -> None:
    assert parse(folder, "").web is None
    web = parse(folder, "web: {port: 8081}\n").web
    assert web is not None and (web.host, web.port, web.max_fps, web.auth) == ("127.0.0.1", 8081, 5.0, None)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"])
def test_loopback_needs_no_auth(host: str) -> None:
    assert is_loopback(host)
    assert WebConfig(host=host).auth is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "gateway.local"])
def test_any_other_host_requires_auth_naming_the_key(folder: Path, host: str) -> None:
    assert not is_loopback(host)
    with pytest.raises(ConfigError) as info:
        parse(folder, f'web: {{host: "{host}"}}\n')
    assert "web.auth" in str(info.value) and "line 3" in str(info.value)


def test_auth_with_a_password_from_the_environment(folder: Path) -> None:
    cfg = parse(folder, 'web: {host: 0.0.0.0, auth: {username: ops, password: "${WEB_PASS}"}}\n',
                env={"WEB_PASS": "hunter2-secret"})
    assert cfg.web is not None and cfg.web.auth is not None
    assert cfg.web.auth.password.get_secret_value() == "hunter2-secret"
    assert "hunter2-secret" not in repr(cfg) and "hunter2-secret" not in str(cfg.web)


@pytest.mark.parametrize(("extra", "key"), [
    ("web: {auth: {username: 'a:b', password: x}}\n", "web.auth.username"),
    ("web: {auth: {username: a, password: ''}}\n", "web.auth.password"),
    ("web: {auth: {username: a}}\n", "web.auth.password"),
    ("web: {max_fps: 0}\n", "web.max_fps"),
    ("web: {port: 70000}\n", "web.port"),
    ("web: {host: 'a b'}\n", "web.host"),
    ("web: {colour: red}\n", "web.colour"),
])
def test_bad_values_name_their_key(folder: Path, extra: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(folder, extra)
    assert key in str(info.value)


def test_check_exits_2_naming_web_auth(folder: Path) -> None:
    path = folder / "cams.yaml"
    path.write_text(BASE + "web: {host: 0.0.0.0, port: 8080}\n")
    res = streamdet_cli("check", str(path))
    assert res.returncode == 2
    assert "web.auth" in res.stderr and "not loopback" in res.stderr
    path.write_text(BASE + 'web: {host: 0.0.0.0, auth: {username: ops, password: "${P}"}}\n')
    with pytest.raises(ConfigError, match="P"):  # an unset variable is an error too
        load_config(path, env={})
    assert load_config(path, env={"P": "x"}).web is not None


def test_the_demo_serves_the_live_view_on_loopback() -> None:
    import yaml

    demo = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs" / "demo.yaml").read_text())
    web = WebConfig(**demo["web"])
    assert is_loopback(web.host) and web.port == 8080 and web.auth is None


@pytest.mark.parametrize(("extra", "other"), [
    ("metrics: {port: 9108}\nweb: {port: 9108}\n", "metrics.port"),
    ('publish: {endpoint: "tcp://127.0.0.1:8080"}\nweb: {port: 8080}\n', "publish.endpoint"),
])
def test_a_port_used_twice_is_refused(folder: Path, extra: str, other: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(folder, extra)
    assert "web.port" in str(info.value) and other in str(info.value)


def test_same_port_on_other_addresses_is_fine(folder: Path) -> None:
    cfg = parse(folder, "metrics: {port: 9108, host: 127.0.0.2}\nweb: {port: 9108}\n")
    assert cfg.web is not None and cfg.web.port == 9108
