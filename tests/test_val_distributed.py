"""streamdet val --devices: ranks over torch.distributed (gloo on CPU) give exactly one device's result.

The demo checkpoint on small shapes data, so the scores are real (neither 0 nor NaN) and a shard
that went missing, was scored twice or was batched differently would change them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamdet.cli import main
from streamdet.datasets import shapes
from streamdet.datasets.groundtruth import DatasetError
from streamdet.pipeline.settings import InferenceOptions
from streamdet.val import VAL_NMS, ValJob, predict_shard, run_val, score
from streamdet.val_distributed import DevicesError, check_devices, torchrun_env

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo" / "shapes_yolov5n.pt"
N = 7  # odd: with batches of 2 the shards are uneven (4 batches over 2 or 3 ranks)
SIZES = [(320, 240), (256, 192), (200, 300)]  # mixed sizes: each batch letterboxes to its own shape


@pytest.fixture(scope="module")
def yolo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("yolo")
    shapes.write_images(root, N, seed=5, sizes=SIZES)
    return root


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shapes.write_clip(tmp_path_factory.mktemp("clip") / "c.mp4", width=320, height=240, frames=N, seed=6)


def _val(capsys: pytest.CaptureFixture[str], data: Path, *extra: str) -> dict[str, Any]:
    code = main(["val", "--weights", str(DEMO), "--data", str(data), "--img-size", "320", "--batch", "2",
                 "--json", *extra])
    out = capsys.readouterr().out
    assert code == 0
    doc: dict[str, Any] = json.loads(out)
    return doc


def _scores(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in ("seconds", "devices")}


@pytest.mark.slow
@pytest.mark.parametrize(("source", "devices"), [("yolo", "cpu,cpu"), ("clip", "cpu,cpu,cpu")])
def test_ranks_give_the_one_device_result(
    source: str, devices: str, yolo_dir: Path, clip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = yolo_dir if source == "yolo" else clip
    one = _val(capsys, data)
    many = _val(capsys, data, "--devices", devices)
    assert one["devices"] == ["cpu"] and many["devices"] == devices.split(",")
    assert one["images"] == N and 0.2 < one["map50"] <= 1.0 and one["per_class"]
    assert _scores(many) == _scores(one)  # mAPs, per-class APs and n_gt, image count: every digit


def test_shards_are_whole_batches_with_the_one_device_predictions(yolo_dir: Path) -> None:
    job = ValJob(InferenceOptions(DEMO, img_size=320, nms=VAL_NMS), yolo_dir, batch_size=2, progress=False)
    total, names, whole = predict_shard(job, "cpu")
    shards = [predict_shard(job, "cpu", rank, 2)[2] for rank in range(2)]
    assert total == N and [i for i, _, _ in whole] == list(range(N))
    assert [[i for i, _, _ in s] for s in shards] == [[0, 1, 4, 5], [2, 3, 6]]
    by_index = {i: (p, g) for s in shards for i, p, g in s}
    for i, p, g in whole:
        assert np.array_equal(by_index[i][0], p) and np.array_equal(by_index[i][1], g)
    assert sum(len(p) for _, p, _ in whole) > 0
    a = score(names, total, [whole], 0.0, ["cpu"])
    b = score(names, total, shards[::-1], 0.0, ["cpu", "cpu"])
    assert a.to_dict() | {"devices": None} == b.to_dict() | {"devices": None}
    with pytest.raises(RuntimeError, match="not each of the 7 once"):
        score(names, total, [shards[0]], 0.0, ["cpu"])


@pytest.mark.slow
def test_a_failing_rank_fails_the_run_with_its_error(yolo_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    (bad / "images").mkdir(parents=True)
    (bad / "labels").symlink_to(yolo_dir / "labels")
    for image in (yolo_dir / "images").iterdir():
        (bad / "images" / image.name).symlink_to(image)
    victim = bad / "images" / sorted(p.name for p in (yolo_dir / "images").iterdir())[2]  # batch 1: rank 1's
    victim.unlink()
    victim.write_bytes((yolo_dir / "images" / victim.name).read_bytes()[:200])  # header intact, pixels cut
    start = time.monotonic()
    with pytest.raises(DatasetError, match=f"cannot decode image .*{victim.name}") as info:
        run_val(InferenceOptions(DEMO, img_size=320, nms=VAL_NMS), bad, devices=["cpu", "cpu"], batch_size=2,
                progress=False)
    assert time.monotonic() - start < 60
    assert "val rank 1 of 2, on cpu" in "".join(getattr(info.value, "__notes__", []))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--devices", "gpu0"], "unknown device 'gpu0'"),
        (["--devices", "cpu,,cpu"], "comma-separated"),
        (["--devices", ""], "comma-separated"),
        (["--device", "cpu", "--devices", "cpu,cpu"], "--device and --devices together"),
    ],
)
def test_bad_devices_are_usage_errors(
    args: list[str], message: str, yolo_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["val", "--weights", str(DEMO), "--data", str(yolo_dir), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("streamdet val: ") and message in err


def test_a_gpu_this_machine_lacks_is_a_usage_error(yolo_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    gpu = f"cuda:{torch.cuda.device_count()}"  # one past the last visible GPU (cuda:0 without any)
    assert main(["val", "--weights", str(DEMO), "--data", str(yolo_dir), "--devices", f"cpu,{gpu}"]) == 2
    assert gpu in capsys.readouterr().err


def test_check_devices_canonical_names() -> None:
    assert check_devices([" CPU", "cpu"]) == ["cpu", "cpu"]
    with pytest.raises(DevicesError, match="no device"):
        check_devices([])


def test_torchrun_env() -> None:
    assert torchrun_env({}) is None
    assert torchrun_env({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}) is None  # no MASTER_ADDR
    env = torchrun_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "h"})
    assert env is not None and (env.rank, env.world, env.local_rank) == (3, 4, 1)
    with pytest.raises(DevicesError, match="expected integers"):
        torchrun_env({"RANK": "x", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "h"})
    with pytest.raises(DevicesError, match="RANK=4, WORLD_SIZE=4"):
        torchrun_env({"RANK": "4", "WORLD_SIZE": "4", "LOCAL_RANK": "0", "MASTER_ADDR": "h"})


@pytest.mark.slow
def test_under_torchrun(yolo_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two ranks started by torchrun join its group; only rank 0 prints, the one-device result."""
    one = _val(capsys, yolo_dir)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "streamdet.cli", "val", "--weights", str(DEMO), "--data", str(yolo_dir), "--img-size", "320",
           "--batch", "2", "--json", "--devices", "cpu,cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert doc["devices"] == ["cpu", "cpu"] and _scores(doc) == _scores(one)
