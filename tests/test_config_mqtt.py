"""The ``mqtt:`` configuration section (streamdet.config.mqtt): defaults, checks, secrets, the example."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from streamdet.config import parse_config
from streamdet.config.mqtt import MqttConfig, default_gateway_id
from streamdet.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "configs" / "cameras.example.yaml"
SECRET = "mq-s3cr3t-Pw"
BASE = "model: {weights: model.pt}\ncameras: [{id: a, url: lobby.mp4}]\n"


@pytest.fixture(autouse=True)
def _files(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"weights")
    (tmp_path / "lobby.mp4").write_bytes(b"video")


def parse(tmp_path: Path, mqtt: str) -> MqttConfig:
    config = parse_config(BASE + mqtt, tmp_path, env={"MQ_PASS": SECRET, "MQTT_PASS": SECRET})
    assert config.mqtt is not None
    return config.mqtt


def error(tmp_path: Path, mqtt: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + mqtt, tmp_path, env={"MQ_PASS": SECRET})
    return str(info.value)


def test_absent_is_off_and_defaults(tmp_path: Path) -> None:
    assert parse_config(BASE, tmp_path).mqtt is None
    m = parse(tmp_path, "mqtt: {host: broker}\n")
    s = m.bridge_settings()
    assert (s.host, s.broker_port, s.topic_prefix, s.qos, s.max_queued, s.protocol) == (
        "broker", 1883, "streamdet", 0, 1000, "3.1.1")
    assert s.gateway_id == default_gateway_id()
    assert re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", s.gateway_id)
    if re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", socket.gethostname()):
        assert s.gateway_id == socket.gethostname()
    assert parse(tmp_path, "mqtt: {host: b, tls: {}}\n").bridge_settings().broker_port == 8883


def test_full_section_and_relative_tls_paths(tmp_path: Path) -> None:
    m = parse(tmp_path, """mqtt:
  host: broker.example
  port: 18883
  gateway_id: gw-1
  topic_prefix: fleet/eu
  username: gw
  password: "${MQ_PASS}"
  tls: {ca_file: certs/ca.pem, cert_file: certs/c.pem, key_file: certs/c.key, insecure: true}
  qos: 1
  max_queued: 50
  protocol: 5
  reconnect: {initial_s: 0.5, max_s: 10, jitter: 0.3}
""")
    s = m.bridge_settings()
    assert s.tls is not None and s.tls.ca_file == tmp_path / "certs" / "ca.pem" and s.tls.insecure
    assert (s.port, s.gateway_id, s.topic_prefix, s.qos, s.max_queued, s.protocol) == (
        18883, "gw-1", "fleet/eu", 1, 50, "5")
    assert (s.username, s.password) == ("gw", SECRET)
    assert (s.reconnect_initial_s, s.reconnect_max_s, s.reconnect_jitter) == (0.5, 10.0, 0.3)
    assert SECRET not in repr(m) and SECRET not in str(m) and SECRET not in repr(s)


@pytest.mark.parametrize(("mqtt", "words"), [
    ("mqtt: {port: 1883}", "mqtt.host"),
    ("mqtt: {host: 'mqtt://b'}", "bad host"),
    ("mqtt: {host: b, gateway_id: 'a/b'}", "mqtt.gateway_id (line 3): bad gateway id"),
    ("mqtt: {host: b, topic_prefix: 'x/+'}", "mqtt.topic_prefix (line 3): bad topic prefix"),
    ("mqtt: {host: b, username: u}", "mqtt.password (line 3): username and password go together"),
    ("mqtt: {host: b, password: '${MQ_PASS}'}", "mqtt.username (line 3): username and password go together"),
    ("mqtt: {host: b, qos: 2}", "mqtt.qos"),
    ("mqtt: {host: b, protocol: 4}", "mqtt.protocol"),
    ("mqtt: {host: b, max_queued: 0}", "mqtt.max_queued"),
    ("mqtt: {host: b, tls: {key_file: k.pem}}", "mqtt.tls.cert_file (line 3): cert_file and key_file go together"),
    ("mqtt: {host: b, reconnect: {initial_s: 9, max_s: 1}}", "mqtt.reconnect.initial_s"),
    ("mqtt: {host: b, colour: red}", "mqtt.colour"),
])
def test_bad_values_name_the_key(tmp_path: Path, mqtt: str, words: str) -> None:
    msg = error(tmp_path, mqtt + "\n")
    assert words in msg, msg
    assert SECRET not in msg


def test_the_example_block_validates(tmp_path: Path) -> None:
    """The commented-out ``mqtt:`` of configs/cameras.example.yaml, uncommented, is a valid section."""
    lines = EXAMPLE.read_text().splitlines()
    start = lines.index("# mqtt:")
    block = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        block.append(line[2:])
    m = parse(tmp_path, "\n".join(block) + "\n")
    assert m.host == "broker.example.com" and m.password is not None
    assert m.password.get_secret_value() == SECRET
