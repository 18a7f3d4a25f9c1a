"""The command line: help/version, exit codes, and `streamdet detect` on a generated video."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from streamdet import __version__
from streamdet.cli import main


def _streamdet(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamdet", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_version_and_help() -> None:
    r = _streamdet("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"streamdet {__version__}"
    r = _streamdet("--help")
    assert r.returncode == 0
    for cmd in ("run", "check", "subscribe", "detect", "val"):
        assert cmd in r.stdout


def test_no_command_is_usage_error(capsys: pytest.CaptureFixture) -> None:
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out


def test_detect_missing_source_is_runtime_error(fixtures_dir: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["detect", "--weights", str(fixtures_dir / "yolov5" / "yolov5n_random.pt"), "/nonexistent.mp4"])
    assert code == 1
    assert "/nonexistent.mp4: no such file" in capsys.readouterr().err


def test_detect_refuses_non_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    img = tmp_path / "x.png"
    import cv2

    cv2.imwrite(str(img), np.zeros((32, 32, 3), np.uint8))
    assert main(["detect", "--weights", str(bad), str(img)]) == 1
    assert "bad.pt" in capsys.readouterr().err


def _write_video(path: Path, frames: int, w: int = 320, h: int = 240) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        rng = np.random.default_rng(0)
        for i in range(frames):
            img = np.full((h, w, 3), 40 + 10 * i, np.uint8)
            img[60:180, 100:220] = rng.integers(0, 255, 3, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_detect_video_and_image_pure_cpu(fixtures_dir: Path, tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    _write_video(video, frames=5)
    image = fixtures_dir / "letterbox" / "img3_500x377.png"
    weights = fixtures_dir / "yolov5" / "yolov5n_random.pt"
    r = _streamdet("detect", "--weights", str(weights), "--conf", "0.001", "--batch", "2", str(video), str(image))
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(Path(x["source"]).name, x["frame"]) for x in lines] == [("clip.mp4", i) for i in range(5)] + [
        ("img3_500x377.png", 0)
    ]
    img_dets = lines[-1]["detections"]
    assert len(img_dets) == 9  # the official pipeline finds 9 boxes at conf 0.001 (fixture)
    for d in img_dets:
        assert set(d) == {"box", "score", "class_id", "label"}
        x1, y1, x2, y2 = d["box"]
        assert 0 <= x1 <= x2 <= 500 and 0 <= y1 <= y2 <= 377
        assert isinstance(d["label"], str) and d["score"] > 0.001


@pytest.mark.parametrize(("img_size", "expected", "warned"), [
    (None, "model input: img_size 416 (the size the checkpoint was trained at)", False),
    (384, "model input: img_size 384 (configured; the checkpoint was trained at 416)", False),
    (640, "model input: img_size 640 (configured; the checkpoint was trained at 416)", True),
])
def test_check_says_which_img_size_and_why(tmp_path: Path, capsys: pytest.CaptureFixture, img_size: int | None,
                                           expected: str, warned: bool) -> None:
    demo = Path(__file__).resolve().parents[1] / "configs" / "demo" / "shapes_yolov5n.pt"
    (tmp_path / "clip.mp4").write_bytes(b"\0")  # check validates that the file exists
    size = "" if img_size is None else f", img_size: {img_size}"
    cfg = tmp_path / "cameras.yaml"
    cfg.write_text(f'model: {{weights: "{demo}"{size}, backend: torch}}\ncameras: [{{id: a, url: clip.mp4}}]\n')
    assert main(["check", str(cfg)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert expected in lines
    assert any(line.startswith("warning: model.img_size 640 is more than 1.5x") for line in lines) == warned
    assert "inference: cpu -> torch" in lines


def _curve_config_with_a_secret_in_authorized_keys(tmp_path: Path, fixtures_dir: Path) -> tuple[Path, Path]:
    """A configuration whose authorized_keys folder holds a client's secret key file (the old README flow)."""
    from streamdet.transport.keys import keygen

    weights = fixtures_dir / "yolov5" / "yolov5n_random.pt"

    keygen(tmp_path / "keys", "server")
    _, secret = keygen(tmp_path / "keys" / "clients", "alice")  # both halves land in authorized_keys
    (tmp_path / "clip.mp4").write_bytes(b"\0")
    cfg = tmp_path / "cameras.yaml"
    cfg.write_text(f'model: {{weights: "{weights}", backend: torch}}\ndevices: [cpu]\n'
                   f"publish:\n  endpoint: ipc://{tmp_path}/det.sock\n"
                   "  curve: {server_secret_key: keys/server.key_secret, "
                   "authorized_keys: keys/clients}\ncameras: [{id: a, url: clip.mp4}]\n")
    return cfg, secret


def test_check_refuses_a_secret_key_in_authorized_keys(tmp_path: Path, fixtures_dir: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    cfg, secret = _curve_config_with_a_secret_in_authorized_keys(tmp_path, fixtures_dir)
    assert main(["check", "--no-probe", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{secret} holds a secret key" in err and "publish.curve.authorized_keys" in err
    secret.rename(tmp_path / "alice.key_secret")  # moved out where it belongs: fine
    assert main(["check", "--no-probe", str(cfg)]) == 0


def test_run_refuses_a_secret_key_in_authorized_keys(tmp_path: Path, fixtures_dir: Path) -> None:
    from tests.helpers.daemon import streamdet_cli, streamdet_env

    cfg, secret = _curve_config_with_a_secret_in_authorized_keys(tmp_path, fixtures_dir)
    runtime = tmp_path / "run"
    runtime.mkdir()
    r = streamdet_cli("run", str(cfg), env=streamdet_env(runtime), timeout=120)
    assert r.returncode == 2, (r.stdout, r.stderr)
    errors = [line for line in r.stderr.splitlines() if "ERROR" in line or "error" in line.lower()]
    assert len(errors) == 1 and f"{secret} holds a secret key" in errors[0], r.stderr
    assert "Traceback" not in r.stderr
