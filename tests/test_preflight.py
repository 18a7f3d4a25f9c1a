"""What `streamdet check` verifies beyond the schema: devices (without CUDA), shared memory,
file cameras; and the command's output and exit status for each."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamdet import preflight
from streamdet.cli import main
from streamdet.config import parse_config
from tests.helpers.media import make_test_clip

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo" / "shapes_yolov5n.pt"


def _fake_driver(tmp_path: Path, gpus: int) -> Path:
    proc = tmp_path / "nvidia" / "gpus"
    proc.mkdir(parents=True)
    for i in range(gpus):
        (proc / f"0000:{i:02x}:00.0").mkdir()
    return proc


@pytest.mark.parametrize(("gpus", "visible", "expected"), [
    (0, None, 0), (2, None, 2), (4, "1,3", 2), (2, "0,7,1", 1), (2, "", 0), (1, "GPU-abc", 1),
])
def test_visible_gpus_from_the_driver_and_cuda_visible_devices(tmp_path: Path, gpus: int, visible: str | None,
                                                               expected: int) -> None:
    env = {} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}
    assert preflight.visible_gpus(_fake_driver(tmp_path, gpus), env) == expected


def test_missing_driver_means_no_gpu(tmp_path: Path) -> None:
    assert preflight.visible_gpus(tmp_path / "absent", {}) == 0


def test_device_problems_name_the_device() -> None:
    assert preflight.device_problems(("cpu",), 0) == []
    assert preflight.device_problems(("cuda:0", "cuda:1"), 2) == []
    (none,) = preflight.device_problems(("cuda:0",), 0)
    assert "cuda:0" in none and "no usable NVIDIA GPU" in none
    (few,) = preflight.device_problems(("cuda:0", "cuda:2"), 2)
    assert "cuda:2" in few and "only 2 GPU(s)" in few


def _config(tmp_path: Path, body: str):
    (tmp_path / "clip.mp4").write_bytes(b"\0")
    return parse_config(f'model: {{weights: "{DEMO}"}}\n{body}', tmp_path)


def test_shared_memory_warning_gives_the_figures(tmp_path: Path) -> None:
    cams = "\n".join(f"  - {{id: c{i}, url: clip.mp4}}" for i in range(40))
    big = _config(tmp_path, f"ring: {{slots: 64, max_width: 8192, max_height: 8192}}\ncameras:\n{cams}\n")
    need = preflight.ring_bytes(big)
    assert need > 40 * 64 * 8192 * 8192 * 3 // 2  # every camera, every slot, plus headers
    warning = preflight.shm_warning(big, tmp_path)
    assert warning is not None and f"{need / 1024**3:.1f} GiB" in warning and "GiB free" in warning
    small = _config(tmp_path, "cameras: [{id: a, url: clip.mp4}]\n")
    assert preflight.shm_warning(small, tmp_path) is None


def test_probe_reads_the_first_frame_or_says_why_not(tmp_path: Path) -> None:
    good = tmp_path / "good.mp4"
    make_test_clip(good, width=160, height=120, frames=5)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "text.mp4"
    text.write_text("not a video\n" * 100)
    ok = preflight.probe_file("good", str(good))
    assert ok.ok and ok.detail.startswith("160x120")
    for cam, path in (("empty", empty), ("text", text), ("absent", tmp_path / "absent.mp4")):
        result = preflight.probe_file(cam, str(path))
        assert not result.ok and result.detail


def test_check_fails_for_a_gpu_that_is_not_there(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(preflight, "NVIDIA_PROC", _fake_driver(tmp_path, 0))
    (tmp_path / "clip.mp4").write_bytes(b"\0")
    cfg = tmp_path / "cameras.yaml"
    cfg.write_text(f'model: {{weights: "{DEMO}"}}\ndevices: ["cuda:0"]\ncameras: [{{id: a, url: clip.mp4}}]\n')
    assert main(["check", "--no-probe", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "cuda:0" in err and "no usable NVIDIA GPU" in err


def test_check_reports_shared_memory_and_probes_file_cameras(tmp_path: Path, capsys) -> None:
    make_test_clip(tmp_path / "good.mp4", width=160, height=120, frames=5)
    (tmp_path / "bad.mp4").write_text("not a video\n")
    cfg = tmp_path / "cameras.yaml"
    cfg.write_text(f'model: {{weights: "{DEMO}", backend: torch}}\n'
                   "cameras: [{id: good, url: good.mp4}, {id: bad, url: bad.mp4}]\n")
    assert main(["check", str(cfg)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert any(line.startswith("shared memory: ") and "MiB of frame rings" in line for line in out)
    assert any(line.startswith("camera good: file OK (160x120") for line in out)
    assert any(line.startswith("camera bad: warning: cannot read the file") for line in out)
    assert main(["check", "--no-probe", str(cfg)]) == 0
    assert not any(line.startswith("camera ") for line in capsys.readouterr().out.splitlines())


def test_check_resolves_devices_auto_without_cuda(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(preflight, "NVIDIA_PROC", _fake_driver(tmp_path, 0))
    (tmp_path / "clip.mp4").write_bytes(b"\0")
    cfg = tmp_path / "cameras.yaml"
    cfg.write_text(f'model: {{weights: "{DEMO}", backend: torch}}\ndevices: auto\n'
                   "cameras: [{id: a, url: clip.mp4}]\n")
    assert main(["check", "--no-probe", str(cfg)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "devices: auto -> cpu (0 GPU(s) visible)" in out and "inference: cpu -> torch" in out
