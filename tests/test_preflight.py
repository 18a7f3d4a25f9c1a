"""What `streamdet check` verifies beyond the schema: devices (without CUDA), shared memory,
file cameras; and the command's output and exit status for each."""

from __future__ import annotations

import os
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


def _huge_rings(tmp_path: Path, cameras: int = 40):
    """A configuration whose rings (64 slots of 8192x8192 per camera: 6 GiB each) fit in no /dev/shm."""
    cams = "\n".join(f"  - {{id: c{i}, url: clip.mp4}}" for i in range(cameras))
    return _config(tmp_path, f"ring: {{slots: 64, max_width: 8192, max_height: 8192}}\ncameras:\n{cams}\n")


def test_shared_memory_problem_gives_both_figures(tmp_path: Path) -> None:
    big = _huge_rings(tmp_path)
    need = preflight.ring_bytes(big)
    assert need > 40 * 64 * 8192 * 8192 * 3 // 2  # every camera, every slot, plus headers
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    problem = preflight.shm_problem(big, tmp_path)
    assert problem is not None and "\n" not in problem
    assert f"need {need / 2**30:.1f} GiB" in problem and f"{tmp_path} has {free / 2**30:.1f} GiB free" in problem
    assert "40 camera(s) x" in problem and "ring.slots" in problem
    assert preflight.shm_problem(big, tmp_path, held_bytes=need) is None  # a reload gets its own rings back
    small = _config(tmp_path, "cameras: [{id: a, url: clip.mp4}]\n")
    assert preflight.shm_problem(small, tmp_path) is None
    missing = preflight.shm_problem(small, tmp_path / "no-shm")
    assert missing is not None and "cannot inspect" in missing and "frame rings" in missing


def test_figures_that_round_alike_get_more_decimals() -> None:
    assert preflight._gib_pair(87 * 2**30 + 2**29, 23 * 2**30) == ("87.5 GiB", "23.0 GiB")
    assert preflight._gib_pair(72 * 2**20, 64 * 2**20) == ("0.07 GiB", "0.06 GiB")  # docker's 64 MiB /dev/shm
    assert preflight._gib_pair(2**30 + 2**20, 2**30) == ("1.001 GiB", "1.000 GiB")


def _audio_file(path: Path, cover: bool = False) -> Path:
    """An MP4 (M4A) holding one AAC audio stream and no video, optionally with a PNG cover picture."""
    import av
    import numpy as np

    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        stream.layout = "mono"
        if cover:
            pic = container.add_stream("png")
            pic.width, pic.height, pic.pix_fmt = 64, 48, "rgb24"
            pic.disposition = av.stream.Disposition.attached_pic
            image = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 200, np.uint8), format="rgb24")
            image.pts = 0
            container.mux(pic.encode(image))
            container.mux(pic.encode())
        for i in range(8):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def test_probe_reads_the_first_frame(tmp_path: Path) -> None:
    good = tmp_path / "good.mp4"
    make_test_clip(good, width=160, height=120, frames=5)
    ok = preflight.probe_file("good", str(good))
    assert ok.ok and ok.detail == "160x120 h264" and ok.line() == "camera good: file OK (160x120 h264)"
    import cv2
    import numpy as np

    assert cv2.imwrite(str(tmp_path / "still.png"), np.zeros((48, 64, 3), np.uint8))
    still = preflight.probe_file("still", str(tmp_path / "still.png"))  # plays as one frame: allowed, but said
    assert still.ok and still.detail == "64x48 png, a still image"


def test_probe_says_in_one_clause_why_a_file_is_no_video(tmp_path: Path) -> None:
    """Each unusable file gets its own reason, never FFmpeg's errno text."""
    good = tmp_path / "good.mp4"
    make_test_clip(good, width=160, height=120, frames=5)
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("not a video\n" * 100)
    (tmp_path / "notes.txt").write_text("not a video either\n" * 100)  # FFmpeg's tty demuxer would play it
    (tmp_path / "half.mp4").write_bytes(good.read_bytes()[:300])  # a recording cut off early
    (tmp_path / "folder.mp4").mkdir()
    os.mkfifo(tmp_path / "pipe.mp4")  # never opened: that would block until someone writes to it
    expected = {
        "empty.mp4": "file is empty",
        "text.mp4": "not a video file, or a damaged one (FFmpeg recognises no media format in it)",
        "notes.txt": "not a video file (a text file)",
        "half.mp4": "not a video file, or a damaged one (FFmpeg recognises no media format in it)",
        "audio.mp4": "not a video file (no video stream; only audio)",
        "music.m4a": "not a video file (no video stream; only audio and a cover picture)",
        "folder.mp4": "is a directory, not a video file",
        "pipe.mp4": "not a regular file (a FIFO)",
        "absent.mp4": "file not found",
    }
    _audio_file(tmp_path / "audio.mp4")
    _audio_file(tmp_path / "music.m4a", cover=True)  # FFmpeg lists the cover as a one-frame video stream
    for i, (name, reason) in enumerate(expected.items()):
        result = preflight.probe_file(f"cam{i}", str(tmp_path / name), index=i)
        assert not result.ok and result.detail == reason, (name, result)
        assert result.line() == f"warning: cameras[{i}] (cam{i}): {tmp_path / name}: {reason}"
        assert "Errno" not in result.line() and "Error" not in result.line()


def test_probe_names_an_unreadable_file(tmp_path: Path) -> None:
    """chmod 000: as a normal user directly; as root (whom file modes do not stop) with the effective
    user switched to 'nobody' around the probe, as the service user would meet it. In-process, so the
    test does not depend on 'nobody' being able to run this interpreter (a pyenv under /root)."""
    import pwd
    import tempfile

    with tempfile.TemporaryDirectory(dir="/tmp") as folder:  # /tmp: 'nobody' may enter it, not pytest's tmp_path
        os.chmod(folder, 0o711)
        clip = Path(folder) / "x.mp4"
        make_test_clip(clip, width=64, height=48, frames=2)
        clip.chmod(0)
        want = f"warning: cameras[2] (lobby): {clip}: permission denied"
        if os.geteuid() != 0:
            assert preflight.probe_file("lobby", str(clip), index=2).line() == want
            return
        try:
            nobody = pwd.getpwnam("nobody")
        except KeyError:
            pytest.skip("running as root and there is no user 'nobody' to drop to: root reads any file")
        os.seteuid(nobody.pw_uid)
        try:
            line = preflight.probe_file("lobby", str(clip), index=2).line()
        finally:
            os.seteuid(0)
        assert line == want


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
    bad = tmp_path / "bad.mp4"
    assert f"warning: cameras[1] (bad): {bad}: not a video file, or a damaged one (FFmpeg recognises no media " \
           "format in it)" in out
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


def test_check_fails_when_the_rings_do_not_fit(tmp_path: Path, capsys) -> None:
    _huge_rings(tmp_path)  # writes clip.mp4
    cams = ", ".join(f"{{id: c{i}, url: clip.mp4}}" for i in range(40))
    cfg = tmp_path / "cameras.yaml"
    cfg.write_text(f'model: {{weights: "{DEMO}", backend: torch}}\n'
                   f"ring: {{slots: 64, max_width: 8192, max_height: 8192}}\ncameras: [{cams}]\n")
    assert main(["check", "--no-probe", str(cfg)]) == 2
    out, err = capsys.readouterr()
    (line,) = err.splitlines()
    assert "frame rings need" in line and "GiB of shared memory" in line and "GiB free" in line
    assert "configuration OK" not in out


def _ring_config(tmp_path: Path, fixtures_dir: Path, ring: str = "", cameras: int = 40) -> Path:
    from tests.supervisor.helpers import write_config

    cams = "\n".join(f"  - {{id: c{i}, url: a.mp4}}" for i in range(cameras))
    return write_config(tmp_path, fixtures_dir, cameras=cams, extra=f"ring: {ring}" if ring else "")


HUGE_RING = "{slots: 64, max_width: 8192, max_height: 8192}"


def test_run_refuses_rings_that_do_not_fit(tmp_path: Path, fixtures_dir: Path, monkeypatch, caplog) -> None:
    """Exit status 2 and the one error line, before any ring or child exists (they would die of SIGBUS)."""
    import logging

    from streamdet.supervisor.runtime import PID_FILE, runtime_dir, segments_of
    from tests.supervisor.helpers import fake_supervisor

    caplog.set_level(logging.INFO)
    sup = fake_supervisor(_ring_config(tmp_path, fixtures_dir, HUGE_RING), monkeypatch)
    assert sup.run() == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "GiB of shared memory" in errors[0] and "GiB free" in errors[0]
    assert sup.children == {} and segments_of(os.getpid()) == []
    assert not (runtime_dir() / PID_FILE).exists()


def test_reload_refuses_rings_that_do_not_fit(tmp_path: Path, fixtures_dir: Path, monkeypatch, caplog) -> None:
    import logging

    from tests.supervisor.helpers import Running, fake_supervisor

    caplog.set_level(logging.INFO)
    path = _ring_config(tmp_path, fixtures_dir, cameras=2)
    sup = fake_supervisor(path, monkeypatch)
    with Running(sup) as run:
        run.wait(lambda: sup._ready, 60, "ready")
        before = {name: run.pid(name) for name in sup.children}
        _ring_config(tmp_path, fixtures_dir, HUGE_RING)
        sup.request_reload()
        run.wait(lambda: "reload rejected" in caplog.text, 20, "rejection")
        assert "GiB of shared memory" in caplog.text
        assert {cam: r.slots for cam, r in sup.rings.items()} == {"c0": 3, "c1": 3}
        assert {name: run.pid(name) for name in sup.children} == before  # nothing restarted
    assert run.result == [0]
