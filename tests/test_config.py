"""Tests of streamdet.config: schema, defaults, located error messages, secrets, paths, env."""

from __future__ import annotations

import pickle
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from streamdet.config import (
    CameraConfig,
    Config,
    load_config,
    parse_config,
    redact_url,
    summarize,
)
from streamdet.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "configs" / "cameras.example.yaml"
SECRET = "s3cr3t-Pa55"
ENV = {"DOOR_PASS": SECRET}

MINIMAL = """\
model: {weights: model.pt}
devices: [cpu]
publish: {endpoint: "tcp://127.0.0.1:5555"}
cameras:
  - {id: door, url: "rtsp://user:${DOOR_PASS}@10.0.0.5/stream1"}
  - {id: lobby, url: lobby.mp4, loop: true}
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A config folder holding model.pt and lobby.mp4."""
    (tmp_path / "model.pt").write_bytes(b"weights")
    (tmp_path / "lobby.mp4").write_bytes(b"video")
    return tmp_path


def parse(folder: Path, text: str, env: dict[str, str] | None = None) -> Config:
    return parse_config(textwrap.dedent(text), folder, env=ENV if env is None else env, source="cams.yaml")


def error(folder: Path, text: str, env: dict[str, str] | None = None) -> str:
    """The ConfigError message for ``text`` (which must be invalid)."""
    with pytest.raises(ConfigError) as info:
        parse(folder, text, env)
    return str(info.value)


def camera_yaml(url: str, **extra: object) -> str:
    """A valid file with a second camera whose url is ``url`` (on line 5)."""
    return (
        "model:\n"
        "  weights: model.pt\n"
        "cameras:\n"
        "  - {id: a, url: lobby.mp4}\n"
        f"  - id: b\n    url: {yaml.safe_dump(url, default_style=chr(34)).strip()}\n"
        + "".join(f"    {k}: {v}\n" for k, v in extra.items())
    )


# ------------------------------------------------------------------------------------------
# valid files


def test_minimal_file(folder: Path) -> None:
    (folder / "cameras.yaml").write_text(MINIMAL)
    config = load_config(folder / "cameras.yaml", env=ENV)
    assert config.model.weights == folder / "model.pt"
    assert config.devices == ("cpu",)
    assert config.publish.endpoint == "tcp://127.0.0.1:5555"
    door, lobby = config.cameras
    assert door.id == "door" and door.url == f"rtsp://user:{SECRET}@10.0.0.5/stream1"
    assert not door.is_file and door.redacted_url == "rtsp://***:***@10.0.0.5/stream1"
    assert lobby.url == str(folder / "lobby.mp4") and lobby.is_file and lobby.loop
    assert config.enabled_cameras == config.cameras


def test_minimal_file_uses_process_environment(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (folder / "cameras.yaml").write_text(MINIMAL)
    monkeypatch.setenv("DOOR_PASS", "from-env")
    assert "from-env" in load_config(str(folder / "cameras.yaml")).cameras[0].url


def test_defaults(folder: Path) -> None:
    config = parse(folder, "model: {weights: model.pt}\ncameras: [{id: a, url: lobby.mp4}]\n")
    m = config.model
    assert (m.img_size, m.conf_thres, m.iou_thres, m.classes, m.max_det, m.half, m.backend) == (
        None, 0.25, 0.45, None, 300, False, "auto")  # img_size None: the checkpoint's training size
    assert config.devices == ("cpu",)
    p = config.publish
    assert (p.endpoint, p.hwm, p.stats_interval_s) == ("tcp://127.0.0.1:5555", 1000, 5.0)
    cam = config.cameras[0]
    assert (cam.enabled, cam.max_fps, cam.rtsp_transport, cam.realtime, cam.loop) == (
        True, None, "tcp", True, False)
    assert (config.batching.max_batch, config.batching.max_wait_ms) == (8, 10.0)
    assert (config.ring.slots, config.ring.max_width, config.ring.max_height) == (3, 1920, 1080)
    d = config.decode
    assert (d.cameras_per_process, d.open_timeout_s, d.read_timeout_s, d.stall_timeout_s) == (1, 10, 10, 10)
    r = config.reconnect
    assert (r.initial_s, r.max_s, r.jitter) == (1.0, 30.0, 0.2)
    s = config.supervisor
    assert (s.restart_limit, s.restart_window_s, s.hang_timeout_s, s.startup_timeout_s, s.stop_timeout_s) == (
        5, 60, 10, 300, 8)
    assert config.log_level == "info"
    assert (config.metrics.port, config.metrics.host) == (None, "127.0.0.1")


def _example_keys(data: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in data.items():
        keys.add(prefix + key)
        if isinstance(value, dict):
            keys |= _example_keys(value, prefix + key + ".")
    return keys


def test_example_file_validates_and_documents_every_key(tmp_path: Path) -> None:
    shutil.copy(EXAMPLE, tmp_path / "cameras.yaml")
    (tmp_path / "yolov5s.pt").write_bytes(b"w")
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "lobby.mp4").write_bytes(b"v")
    env = {"FRONT_DOOR_PASS": SECRET, "GARAGE_PASS": SECRET}
    config = load_config(tmp_path / "cameras.yaml", env=env)
    # every value shown in the example is the default
    defaults = Config(model={"weights": tmp_path / "yolov5s.pt"}, cameras=config.cameras)
    assert config == defaults
    # every key of every section appears in the example
    data = yaml.safe_load(EXAMPLE.read_text())
    documented = _example_keys(data)
    expected = set()
    for name, info in Config.model_fields.items():
        expected.add(name)
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, Config.__mro__[1]):
            expected |= {f"{name}.{k}" for k in sub.model_fields}
    assert expected <= documented, expected - documented
    assert set(CameraConfig.model_fields) == set(data["cameras"][0])
    assert SECRET not in summarize(config)


# ------------------------------------------------------------------------------------------
# error kinds: key path and line


def test_unknown_keys_top_nested_and_camera(folder: Path) -> None:
    msg = error(folder, """\
        model:
          weights: model.pt
          img_szie: 640
        cameras:
          - id: a
            url: lobby.mp4
            colour: red
        frobnicate: 1
        """)
    lines = msg.splitlines()
    assert lines[0] == "cams.yaml: 3 configuration errors:"
    assert "  model.img_szie (line 3): unknown key (did you mean 'img_size'?)" in lines
    assert any(line.startswith("  cameras[0].colour (line 7): unknown key") for line in lines)
    assert any(line.startswith("  frobnicate (line 8): unknown key (valid: model, devices") for line in lines)


def test_single_error_is_one_line(folder: Path) -> None:
    msg = error(folder, "model: {weights: model.pt}\ncameras: [{id: a, url: lobby.mp4}]\nring: {slot: 3}\n")
    assert msg == "cams.yaml: ring.slot (line 3): unknown key (did you mean 'slots'?)"


@pytest.mark.parametrize(
    "url",
    ["rtsp//x/stream", "rtsp:/host/stream", "ftp://host/x", "", "   ", "rtsp://host/my stream",
     "rtsp://", "rtsp://user:pw@", "http://host:notaport/x", "gopher:x", " lobby.mp4"],
)
def test_bad_url(folder: Path, url: str) -> None:
    msg = error(folder, camera_yaml(url))
    assert msg.startswith("cams.yaml: cameras[1].url (line 6): bad URL"), msg


def test_bad_url_with_password_is_redacted(folder: Path) -> None:
    msg = error(folder, camera_yaml(f"rtsp//admin:{SECRET}@10.0.0.5/s"))
    assert SECRET not in msg and "***" in msg


def test_missing_weights(folder: Path) -> None:
    msg = error(folder, "cameras: [{id: a, url: lobby.mp4}]\nmodel:\n  img_size: 320\n  weights: nope/m.pt\n")
    assert msg == f"cams.yaml: model.weights (line 4): file not found: {folder / 'nope' / 'm.pt'}"


def test_weights_directory_is_not_a_file(folder: Path) -> None:
    (folder / "dir.pt").mkdir()
    msg = error(folder, "model: {weights: dir.pt}\ncameras: [{id: a, url: lobby.mp4}]\n")
    assert msg == f"cams.yaml: model.weights (line 1): not a file: {folder / 'dir.pt'}"


def test_missing_camera_file_names_resolved_path(folder: Path) -> None:
    msg = error(folder, camera_yaml("clips/../clips/gone.mp4"))
    assert msg == f"cams.yaml: cameras[1].url (line 6): file not found: {folder / 'clips' / 'gone.mp4'}"


def test_disabled_camera_file_may_be_missing(folder: Path) -> None:
    config = parse(folder, camera_yaml("gone.mp4", enabled="false"))
    assert not config.cameras[1].enabled and config.enabled_cameras == config.cameras[:1]


def test_duplicate_ids_name_both_positions(folder: Path) -> None:
    text = """\
        model: {weights: model.pt}
        cameras:
          - {id: door, url: lobby.mp4}
          - {id: yard, url: lobby.mp4}
          - {id: door, url: lobby.mp4}
        """
    msg = error(folder, text)
    assert msg == "cams.yaml: cameras[2].id (line 5): duplicate camera id 'door' (also cameras[0].id, line 3)"
    # also reported when another error stops the cross-field check
    msg = error(folder, text + "ring: {slots: 1}\n")
    assert "  cameras[2].id (line 5): duplicate camera id 'door' (also cameras[0].id, line 3)" in msg
    assert "  ring.slots (line 6): " in msg


@pytest.mark.parametrize("cam_id", ["bad id", "a/b", "x" * 65, "ümlaut", '""', "det/x"])
def test_bad_id(folder: Path, cam_id: str) -> None:
    text = f"model: {{weights: model.pt}}\ncameras:\n  - url: lobby.mp4\n    id: {cam_id}\n"
    msg = error(folder, text)
    assert msg.startswith("cams.yaml: cameras[0].id (line 4): bad camera id"), msg


def test_integer_id_becomes_string(folder: Path) -> None:
    assert parse(folder, "model: {weights: model.pt}\ncameras: [{id: 101, url: lobby.mp4}]\n").cameras[0].id == "101"


def test_unset_env_var(folder: Path) -> None:
    msg = error(folder, MINIMAL, env={})
    assert msg == "cams.yaml: cameras[0].url (line 5): environment variable DOOR_PASS is not set"


def test_bad_types(folder: Path) -> None:
    msg = error(folder, """\
        model:
          weights: model.pt
          img_size: big
          half: maybe
        cameras:
          - {id: a, url: lobby.mp4, max_fps: -1}
        batching: 5
        ring: [1, 2]
        """)
    assert "  model.img_size (line 3): Input should be a valid integer" in msg
    assert "  model.half (line 4): Input should be a valid boolean" in msg
    assert "  cameras[0].max_fps (line 6): Input should be greater than 0" in msg
    assert "  batching (line 7): expected a mapping of keys, got an integer" in msg
    assert "  ring (line 8): expected a mapping of keys, got a list" in msg


def test_cameras_must_be_a_list(folder: Path) -> None:
    msg = error(folder, "model: {weights: model.pt}\ncameras:\n  a: 1\n")
    assert msg == "cams.yaml: cameras (line 2): expected a list, got a mapping"


def test_missing_required_keys_point_at_parent(folder: Path) -> None:
    msg = error(folder, "log_level: info\ndevices: [cpu]\n")
    assert "  model (line 1): required key is missing" in msg
    assert "  cameras (line 1): required key is missing" in msg
    msg = error(folder, "model:\n  img_size: 320\ncameras:\n  - {id: a, url: lobby.mp4}\n  - id: b\n")
    assert "  model.weights (line 1): required key is missing" in msg
    assert "  cameras[1].url (line 5): required key is missing" in msg


def test_yaml_syntax_error_has_line_and_column(folder: Path) -> None:
    msg = error(folder, "model: {weights: model.pt}\ncameras:\n  - id: a\n   url: x\n")
    assert re.match(r"cams\.yaml: invalid YAML at line 4, column \d+: ", msg), msg
    msg = error(folder, "model: {weights: model.pt\n")
    assert re.match(r"cams\.yaml: invalid YAML at line 2, column 1: ", msg), msg


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n", "null\n"])
def test_empty_file(folder: Path, text: str) -> None:
    assert "configuration is empty" in error(folder, text)


@pytest.mark.parametrize(("text", "kind"), [("- a\n- b\n", "a list"), ("hello\n", "a string")])
def test_top_level_must_be_mapping(folder: Path, text: str, kind: str) -> None:
    msg = error(folder, text)
    assert "top level must be a mapping" in msg and kind in msg, msg


def test_duplicate_yaml_key(folder: Path) -> None:
    text = "model:\n  weights: model.pt\n  img_size: 320\n  img_size: 640\ncameras: [{id: a, url: lobby.mp4}]\n"
    msg = error(folder, text)
    assert msg == "cams.yaml: model.img_size (line 4): duplicate key (first defined on line 3)"


def test_several_errors_sorted_by_line(folder: Path) -> None:
    msg = error(folder, """\
        model: {weights: model.pt, img_size: 100}
        cameras: [{id: a, url: lobby.mp4}]
        reconnect: {initial_s: 60}
        log_level: loud
        """)
    lines = msg.splitlines()
    assert lines[0] == "cams.yaml: 3 configuration errors:"
    assert lines[1] == "  model.img_size (line 1): must be a multiple of 32 (got 100; try 96)"
    assert lines[2] == "  reconnect.initial_s (line 3): must be <= max_s (30)"
    assert lines[3].startswith("  log_level (line 4): Input should be 'debug'")


def test_anchors_and_merge_keys(folder: Path) -> None:
    text = """\
        model: {weights: model.pt}
        cameras:
          - &cam {id: z, url: "rtsp://h/0", max_fps: 5, rtsp_transport: udp}
          - {<<: *cam, id: a, url: "rtsp://h/1"}
          - {<<: *cam, id: b, max_fps: 7}
        """
    config = parse(folder, text)
    assert [(c.id, c.url, c.max_fps, c.rtsp_transport) for c in config.cameras] == [
        ("z", "rtsp://h/0", 5, "udp"), ("a", "rtsp://h/1", 5, "udp"), ("b", "rtsp://h/0", 7, "udp")]
    msg = error(folder, text.replace("max_fps: 5", "max_fps: 5, colour: red"))
    # a merged key is reported where it is written: the anchor's line
    assert "  cameras[1].colour (line 3): unknown key" in msg


# ------------------------------------------------------------------------------------------
# other validation rules


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("model: {weights: model.pt, img_size: 4160}", "model.img_size (line 1): Input should be less than"),
        ("model: {weights: model.pt, conf_thres: 1}", "model.conf_thres (line 1): Input should be less than 1"),
        ("model: {weights: model.pt, classes: []}", "model.classes (line 1): empty list"),
        ("model: {weights: model.pt, classes: [0, -1]}", "model.classes[1] (line 1): Input should be greater"),
        ("model: {weights: model.pt, max_det: 0}", "model.max_det (line 1): Input should be greater"),
        ("devices: [cpu, tpu]", "devices[1] (line 2): unknown device 'tpu'"),
        ("devices: [cuda, 'cuda:0']", "devices[1] (line 2): duplicate device 'cuda:0' (also devices[0], line 2)"),
        ("devices: []", "devices (line 2): must list at least one device"),
        ("cameras: []", "cameras (line 2): must list at least one camera"),
        ("cameras: [{id: a, url: lobby.mp4, enabled: false}]", "cameras (line 2): no enabled camera"),
        ("cameras: [{id: a, url: lobby.mp4, rtsp_transport: http}]", "cameras[0].rtsp_transport (line 2): "),
        ("batching: {max_batch: 257}", "batching.max_batch (line 2): Input should be less than or equal to 256"),
        ("batching: {max_wait_ms: .inf}", "batching.max_wait_ms (line 2): "),
        ("ring: {slots: 65}", "ring.slots (line 2): "),
        ("decode: {stall_timeout_s: 0}", "decode.stall_timeout_s (line 2): Input should be greater than 0"),
        ("reconnect: {jitter: 1.5}", "reconnect.jitter (line 2): "),
        ("supervisor: {restart_limit: -1}", "supervisor.restart_limit (line 2): "),
        ("metrics: {port: 70000}", "metrics.port (line 2): "),
        ("metrics: {port: 5555}", "metrics.port (line 2): port 5555 is also used by publish.endpoint"),
        ("metrics: {port: 9100, host: 'not a host'}", "metrics.host (line 2): bad host"),
        ("publish: {endpoint: 'inproc://x'}", "publish.endpoint (line 2): inproc:// works only inside one process"),
        ("publish: {endpoint: 'tcp://127.0.0.1'}", "publish.endpoint (line 2): bad endpoint"),
        ("publish: {endpoint: 'tcp://*:*'}", "publish.endpoint (line 2): bad endpoint"),
        ("publish: {endpoint: 'udp://1.2.3.4:5'}", "publish.endpoint (line 2): bad endpoint"),
        ("publish: {endpoint: 'ipc://'}", "publish.endpoint (line 2): bad endpoint"),
        ("publish: {hwm: 0}", "publish.hwm (line 2): "),
    ],
)
def test_rules(folder: Path, section: str, message: str) -> None:
    key = section.split(":")[0]
    base = {"model": "model: {weights: model.pt}", "cameras": "cameras: [{id: a, url: lobby.mp4}]"}
    if key == "model":
        text = f"{section}\n{base['cameras']}\n"
    elif key == "cameras":
        text = f"{base['model']}\n{section}\n"
    else:
        text = f"{base['model']}\n{section}\n{base['cameras']}\n"
    msg = error(folder, text)
    assert msg.startswith(f"cams.yaml: {message}"), msg


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [("tcp://*:5555", "tcp://*:5555"), ("tcp://[::1]:6000", "tcp://[::1]:6000"),
     ("tcp://eth0:5555", "tcp://eth0:5555"), ("ipc:///run/streamdet.sock", "ipc:///run/streamdet.sock"),
     ("ipc://@streamdet", "ipc://@streamdet")],
)
def test_good_endpoints(folder: Path, endpoint: str, expected: str) -> None:
    config = parse(folder, f"model: {{weights: model.pt}}\npublish: {{endpoint: '{endpoint}'}}\n"
                   "cameras: [{id: a, url: lobby.mp4}]\n")
    assert config.publish.endpoint == expected


def test_half_needs_cuda(folder: Path) -> None:
    text = "model: {weights: model.pt, half: true}\ndevices: [cuda, cpu]\ncameras: [{id: a, url: lobby.mp4}]\n"
    msg = error(folder, text)
    assert msg == ("cams.yaml: model.half (line 1): FP16 needs CUDA devices, but devices includes 'cpu' "
                   "(also devices, line 2)")
    assert parse(folder, text.replace(", cpu", "")).model.half


def test_devices_normalised(folder: Path) -> None:
    cams = "cameras: [{id: a, url: lobby.mp4}]\n"
    config = parse(folder, "model: {weights: model.pt}\ndevices: [CUDA, 'cuda:1', cpu]\n" + cams)
    assert config.devices == ("cuda:0", "cuda:1", "cpu")
    config = parse(folder, "model: {weights: model.pt}\ndevices: 'cuda:2'\n" + cams)
    assert config.devices == ("cuda:2",)


def test_devices_auto_stands_alone(folder: Path) -> None:
    cams = "cameras: [{id: a, url: lobby.mp4}]\n"
    for spelling in ("auto", "AUTO", "[auto]"):
        config = parse(folder, f"model: {{weights: model.pt}}\ndevices: {spelling}\n" + cams)
        assert config.devices == ("auto",) and config.auto_devices
    assert "devices:    auto (one worker per visible GPU" in summarize(config)
    assert not parse(folder, "model: {weights: model.pt}\n" + cams).auto_devices
    msg = error(folder, "model: {weights: model.pt}\ndevices: [cuda:0, auto]\n" + cams)
    assert msg == ("cams.yaml: devices[1] (line 2): auto stands alone (devices: auto); it cannot be combined "
                   "with other devices")


def test_camera_decode_modes(folder: Path) -> None:
    text = "model: {weights: model.pt}\ncameras: [{id: a, url: lobby.mp4%s}]\n"
    assert parse(folder, text % "").cameras[0].decode == "auto"
    nvdec = parse(folder, text % ", decode: nvdec")
    assert nvdec.cameras[0].decode == "nvdec" and " decode=nvdec" in summarize(nvdec)
    assert "decode=" not in summarize(parse(folder, text % ""))  # the default is not repeated
    assert parse(folder, text % ", decode: cpu").cameras[0].decode == "cpu"
    msg = error(folder, text % ", decode: gpu")
    assert msg.startswith("cams.yaml: cameras[0].decode (line 2): ") and "'nvdec'" in msg


def test_log_level_case_insensitive(folder: Path) -> None:
    config = parse(folder, "model: {weights: model.pt}\nlog_level: DEBUG\ncameras: [{id: a, url: lobby.mp4}]\n")
    assert config.log_level == "debug"


@pytest.mark.parametrize(
    "url",
    ["rtsp://10.0.0.5/s", "rtsps://cam.local:322/s", "http://h/mjpg", "https://h/live.m3u8", "rtmp://h/app/key",
     "RTSP://h/s", "rtsp://[fe80::1]:554/s", "rtsp://u:p%40ss@h:554/Streaming/Channels/101?transportmode=unicast"],
)
def test_good_network_urls_unchanged(folder: Path, url: str) -> None:
    assert parse(folder, camera_yaml(url)).cameras[1].url == url


# ------------------------------------------------------------------------------------------
# secrets


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("rtsp://user:pw@10.0.0.5/stream1", "rtsp://***:***@10.0.0.5/stream1"),
        ("rtsp://admin@10.0.0.5:554/s", "rtsp://***@10.0.0.5:554/s"),
        ("rtsp://10.0.0.5/s", "rtsp://10.0.0.5/s"),
        ("rtsp://u:p@ss@h/s", "rtsp://***:***@h/s"),
        ("rtsp://u:pa/ss@h/s", "rtsp://***:***@h/s"),
        ("rtsp//u:pw@h/s", "rtsp//***:***@h/s"),
        ("http://h/cgi?user=admin&pwd=pw&res=hd#x", "http://h/cgi?user=***&pwd=***&res=hd#x"),
        ("/data/cam@2.mp4", "/data/cam@2.mp4"),
        ("rtsp:u:pw@h", "rtsp:***:***@h"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_secret_never_in_repr_str_or_summary(folder: Path) -> None:
    config = parse(folder, MINIMAL)
    assert SECRET in config.cameras[0].url  # the decoder needs it
    for text in (repr(config), str(config), repr(config.cameras[0]), str(config.cameras[0]),
                 summarize(config), repr(config.cameras), f"{config.cameras[0]}"):
        assert SECRET not in text
    assert "rtsp://***:***@10.0.0.5/stream1" in summarize(config)


def test_secret_never_in_error_messages(folder: Path) -> None:
    env = {"PW": SECRET, "HOST": "", "ID": f"bad {SECRET}"}
    msg = error(folder, """\
        model: {weights: model.pt}
        cameras:
          - {id: a, url: "rtsp://admin:${PW}@${HOST}/s"}
          - {id: b, url: "rtsp//admin:${PW}@host/s"}
          - {id: c, url: "ftp://admin:${PW}@host/s"}
          - {id: "${ID}", url: lobby.mp4}
          - {id: e, url: "${PW}"}
          - {id: f, url: "rtsp://admin:hunter2@host/s", max_fps: 0}
        """, env=env)
    assert SECRET not in msg and "hunter2" not in msg, msg
    assert "cameras[0].url (line 3): bad URL" in msg
    assert "cameras[3].id (line 6): bad camera id" in msg
    assert "cameras[4].url (line 7): file not found" in msg


def test_validation_error_from_python_hides_input() -> None:
    with pytest.raises(ValidationError) as info:
        CameraConfig(id="a b", url=f"rtsp://u:{SECRET}@h/s")
    assert SECRET not in str(info.value)


# ------------------------------------------------------------------------------------------
# paths, environment, pickling


def test_relative_paths_resolve_against_config_folder(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sub = folder / "etc"
    sub.mkdir()
    (folder / "clips").mkdir()
    (folder / "clips" / "a b.mp4").write_bytes(b"v")
    (sub / "cameras.yaml").write_text(
        "model: {weights: ../model.pt}\n"
        "publish: {endpoint: 'ipc://run/sd.sock'}\n"
        "cameras:\n"
        "  - {id: a, url: ../lobby.mp4}\n"
        "  - {id: b, url: 'file://../clips/a%20b.mp4'}\n"
        f"  - {{id: c, url: 'file://{folder}/lobby.mp4'}}\n"
        f"  - {{id: d, url: '{folder}/clips/a b.mp4'}}\n"
    )
    monkeypatch.chdir("/")
    config = load_config(Path("/") / (sub / "cameras.yaml").relative_to("/"))
    assert config.model.weights == folder / "model.pt"
    assert config.publish.endpoint == f"ipc://{sub}/run/sd.sock"
    assert [c.url for c in config.cameras] == [
        str(folder / "lobby.mp4"), str(folder / "clips" / "a b.mp4"), str(folder / "lobby.mp4"),
        str(folder / "clips" / "a b.mp4")]
    assert all(c.is_file and Path(c.url).is_absolute() for c in config.cameras)


def test_env_interpolation(folder: Path) -> None:
    env = {"USER_": "viewer", "PW": SECRET, "FPS": "12.5", "MODEL": "model.pt", "EMPTY": ""}
    config = parse(folder, """\
        model: {weights: "${MODEL}"}
        cameras:
          - {id: a, url: "rtsp://${USER_}:${PW}@h/s${EMPTY}", max_fps: "${FPS}"}
          - {id: b, url: "rtsp://h/$${literal}"}
        """, env=env)
    assert config.model.weights == folder / "model.pt"
    assert config.cameras[0].url == f"rtsp://viewer:{SECRET}@h/s"
    assert config.cameras[0].max_fps == 12.5
    assert config.cameras[1].url == "rtsp://h/${literal}"


@pytest.mark.parametrize("ref", ["${1X}", "${X", "${}", "${A-B}"])
def test_bad_env_reference(folder: Path, ref: str) -> None:
    msg = error(folder, f"model: {{weights: model.pt}}\ncameras:\n  - id: a\n    url: 'rtsp://h/{ref}'\n")
    assert msg.startswith("cams.yaml: cameras[0].url (line 4): bad environment reference"), msg


def test_several_unset_vars(folder: Path) -> None:
    msg = error(folder, "model: {weights: '${M}'}\ncameras:\n  - {id: a, url: 'rtsp://${U}:${P}@h/s'}\n", env={})
    assert "  model.weights (line 1): environment variable M is not set" in msg
    assert "  cameras[0].url (line 3): environment variable U is not set" in msg
    assert "  cameras[0].url (line 3): environment variable P is not set" in msg
    assert "file not found" not in msg and "bad URL" not in msg


def test_pickle_round_trip_and_frozen(folder: Path) -> None:
    config = parse(folder, MINIMAL)
    clone = pickle.loads(pickle.dumps(config))
    assert clone == config and clone.cameras[0].url == config.cameras[0].url
    assert clone.cameras[1].is_file
    with pytest.raises(ValidationError):
        config.log_level = "debug"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        config.cameras[0].url = "rtsp://x/y"  # type: ignore[misc]
    assert hash(config) == hash(clone)


def test_load_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    (tmp_path / "bin.yaml").write_bytes(b"model: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(tmp_path / "bin.yaml")


def test_summarize_lists_everything(folder: Path) -> None:
    text = summarize(parse(folder, MINIMAL))
    for needle in ("model.pt", "img_size=from the checkpoint", "devices:    cpu", "tcp://127.0.0.1:5555", "door",
                   "lobby",
                   str(folder / "lobby.mp4"), "loop", "rtsp_transport=tcp", "max_batch=8", "3 slots",
                   "reconnect", "supervisor", "log_level:  info", "metrics:    off"):
        assert needle in text, needle


def test_config_module_does_not_import_heavy_modules() -> None:
    code = "import sys, streamdet.config; sys.exit(any(m in sys.modules for m in ('torch', 'av', 'zmq', 'cv2')))"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
