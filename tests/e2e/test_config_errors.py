"""Bad configuration: `streamdet check` and `streamdet run` exit 2 with one line naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

GOOD_CAMERA = '{id: cam1, url: "rtsp://10.0.0.5/stream1"}'


def _run(cmd: str, config: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    import os

    full_env = {k: v for k, v in os.environ.items() if k != "DOOR_PASS"}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "streamdet", cmd, str(config)], capture_output=True, text=True,
                          timeout=60, env=full_env)


CASES = {
    "unknown key": ("model: {weights: {w}, img_sise: 640}\ncameras:\n  - " + GOOD_CAMERA, "model.img_sise", 1),
    "bad URL": ("model: {weights: {w}}\ncameras:\n  - {id: cam1, url: 'ftp://x/y'}", "cameras[0].url", 3),
    "missing weights": ("model: {weights: nothere.pt}\ncameras:\n  - " + GOOD_CAMERA, "model.weights", 1),
    "duplicate ids": (
        "model: {weights: {w}}\ncameras:\n  - " + GOOD_CAMERA + "\n  - " + GOOD_CAMERA,
        "cameras[1].id",
        4,
    ),
    "unset env var": (
        "model: {weights: {w}}\ncameras:\n  - {id: door, url: 'rtsp://u:${DOOR_PASS}@10.0.0.5/s'}",
        "cameras[0].url",
        3,
    ),
}


@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_config_exits_2_naming_the_key(tmp_path: Path, fixtures_dir: Path, command: str, case: str) -> None:
    text, key, line = CASES[case]
    weights = fixtures_dir / "yolov5" / "yolov5n_random.pt"
    config = tmp_path / "cameras.yaml"
    config.write_text(text.replace("{w}", f'"{weights}"'))
    r = _run(command, config)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert key in r.stderr and f"line {line}" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_check_accepts_good_config_and_hides_secrets(tmp_path: Path, fixtures_dir: Path) -> None:
    weights = fixtures_dir / "yolov5" / "yolov5n_random.pt"
    config = tmp_path / "cameras.yaml"
    config.write_text(
        f'model: {{weights: "{weights}"}}\ncameras:\n  - {{id: door, url: "rtsp://admin:${{DOOR_PASS}}@10.0.0.5/s"}}\n'
    )
    r = _run("check", config, env={"DOOR_PASS": "hunter2-secret"})
    assert r.returncode == 0, r.stderr
    assert "door" in r.stdout and "80 classes" in r.stdout
    assert "hunter2-secret" not in r.stdout + r.stderr


def test_check_refuses_a_non_checkpoint_weights_file(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"garbage")
    config = tmp_path / "cameras.yaml"
    config.write_text("model: {weights: model.pt}\ncameras:\n  - " + GOOD_CAMERA + "\n")
    r = _run("check", config)
    assert r.returncode == 2 and "model.weights" in r.stderr


@pytest.mark.parametrize("command", ["check", "run"])
def test_rings_that_do_not_fit_exit_2_with_both_figures(tmp_path: Path, fixtures_dir: Path, command: str) -> None:
    """40 cameras of 64 slots at 8192x8192 need 240 GiB of /dev/shm: refused before anything starts."""
    weights = fixtures_dir / "yolov5" / "yolov5n_random.pt"
    cams = "\n".join(f"  - {{id: c{i}, url: 'rtsp://10.0.0.5/s{i}'}}" for i in range(40))
    config = tmp_path / "cameras.yaml"
    config.write_text(f'model: {{weights: "{weights}", backend: torch}}\n'
                      f"ring: {{slots: 64, max_width: 8192, max_height: 8192}}\ncameras:\n{cams}\n")
    runtime = tmp_path / "runtime"
    r = _run(command, config, env={"RUNTIME_DIRECTORY": str(runtime)})
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    (line,) = [x for x in r.stderr.splitlines() if "frame rings need" in x]
    assert "GiB of shared memory (40 camera(s) x" in line and "/dev/shm has" in line and "GiB free" in line
    if command == "run":
        assert [x for x in r.stderr.splitlines() if "ERROR" in x] == [line]
        assert not (runtime / "streamdet.pid").exists()
        assert not any(runtime.glob("run-*"))  # no run directory, so no child ever started
