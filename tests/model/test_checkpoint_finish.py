"""Finished checkpoints (finish_checkpoint, as train.py's strip_optimizer leaves best.pt), and the shipped demo."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import torch

from streamdet.errors import CheckpointError
from streamdet.model.checkpoint import finish_checkpoint, load_model, read_checkpoint, save_checkpoint
from streamdet.model.checkpoint.finish import FINISHED_KEY, finished_meta, is_finished
from tests.model.test_yolov5 import small_model

DEMO_CHECKPOINT = Path(__file__).resolve().parents[2] / "configs" / "demo" / "shapes_yolov5n.pt"
# sha256 of the demo's weights (state_dict_digest) as trained: the EMA after epoch 5 of stage 2
# (docs/demo-model.md). Finishing the file must not change a bit of them.
DEMO_WEIGHTS_SHA256 = "13fadd0ce40393b2708ec829e3d0debaf60be18431ec02bec8390898ae44038c"
TOP_LEVEL = ["epoch", "best_fitness", "model", "ema", "updates", "optimizer", "opt", "git", "date"]


def state_dict_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in state_dict order."""
    h = hashlib.sha256()
    for name, t in state_dict.items():
        h.update(f"{name} {t.dtype} {tuple(t.shape)}\n".encode())
        h.update(t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def test_finished_meta_records_what_it_erases() -> None:
    meta = {"epoch": 4, "best_fitness": 0.75, "updates": 120, "opt": {"imgsz": 416, "streamdet": {"lr0": 0.01}},
            "git": {"commit": None}, "date": "2026-01-01T00:00:00"}
    out = finished_meta(meta)
    assert (out["epoch"], out["best_fitness"], out["updates"], out["ema"], out["optimizer"]) == (-1, None, None, None,
                                                                                                 None)
    assert out["opt"]["streamdet"] == {"lr0": 0.01, FINISHED_KEY: {"epoch": 4, "best_fitness": 0.75}}
    assert out["opt"]["imgsz"] == 416 and out["git"] == meta["git"] and out["date"] == meta["date"]
    assert meta["epoch"] == 4 and FINISHED_KEY not in meta["opt"]["streamdet"]  # the caller's dict is untouched
    assert not is_finished(meta) and is_finished(out)
    assert finished_meta(out) == out  # finishing twice keeps the first record
    bare = finished_meta({"epoch": 0, "best_fitness": 0.1})  # no opt at all
    assert bare["opt"] == {"streamdet": {FINISHED_KEY: {"epoch": 0, "best_fitness": 0.1}}}
    official = {"epoch": -1, "best_fitness": None, "updates": None, "opt": {"imgsz": 640}}  # finished by train.py
    assert finished_meta(official)["opt"] == {"imgsz": 640}
    with pytest.raises(CheckpointError, match=r"opt\['streamdet'\] must be a dict"):
        finished_meta({"epoch": 1, "opt": {"streamdet": "x"}})
    with pytest.raises(CheckpointError, match="'opt' must be a dict"):
        finished_meta({"epoch": 1, "opt": ["imgsz"]})


def test_finish_checkpoint_as_strip_optimizer_leaves_it(tmp_path: Path, fake_ultralytics: Any) -> None:
    """A mid-run file (epoch, best_fitness, EMA, updates) becomes a finished best.pt with the EMA weights."""
    model, ema = small_model(nc=3, seed=1), small_model(nc=3, seed=2)
    src = save_checkpoint(model, tmp_path / "last.pt", epoch=6, best_fitness=0.5, ema=ema, updates=70,
                          opt={"img_size": 320, "epochs": 10})
    before = read_checkpoint(src)  # the reader takes the EMA, as strip_optimizer does
    out = finish_checkpoint(src, tmp_path / "best.pt")
    assert out == tmp_path / "best.pt" and read_checkpoint(src).meta == before.meta  # src left as it was
    after = read_checkpoint(out)
    assert (after.meta["epoch"], after.meta["best_fitness"], after.meta["updates"]) == (-1, None, None)
    assert after.meta["opt"]["streamdet"][FINISHED_KEY] == {"epoch": 6, "best_fitness": 0.5}
    assert after.meta["opt"]["streamdet"]["epochs"] == 10 and after.trained_img_size == 320
    assert after.meta["date"] == before.meta["date"] and after.meta["git"] == before.meta["git"]
    assert list(after.state_dict) == list(before.state_dict)
    for k, v in before.state_dict.items():
        assert after.state_dict[k].dtype == v.dtype and torch.equal(after.state_dict[k], v), k
    raw = torch.load(out, weights_only=False)  # what Ultralytics' torch.load sees
    assert list(raw) == TOP_LEVEL and raw["ema"] is None and raw["optimizer"] is None
    with torch.no_grad():
        x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
        assert torch.equal(load_model(out)(x), load_model(src)(x))
        assert not torch.equal(load_model(out)(x), load_model(save_checkpoint(model, tmp_path / "m.pt"))(x))
    assert finish_checkpoint(out) == out  # in place, and idempotent
    again = read_checkpoint(out)
    assert again.meta == after.meta and all(torch.equal(again.state_dict[k], v) for k, v in after.state_dict.items())


def test_shipped_demo_is_a_finished_best_pt(fake_ultralytics: Any) -> None:
    """train.py --resume refuses the demo (start epoch -1 + 1 = 0: 'nothing to resume'), as a finished best.pt."""
    ck = read_checkpoint(DEMO_CHECKPOINT)
    assert ck.meta["epoch"] == -1 and ck.meta["best_fitness"] is None and ck.meta["updates"] is None
    assert is_finished(ck.meta)
    raw = torch.load(DEMO_CHECKPOINT, weights_only=False)
    assert list(raw) == TOP_LEVEL and raw["ema"] is None and raw["optimizer"] is None
    ours = ck.meta["opt"]["streamdet"]
    record = ours[FINISHED_KEY]  # the selection the run made, kept: its best epoch was the last one (0-based)
    assert record["epoch"] == ours["epochs"] - 1 == ck.meta["opt"]["epochs"] - 1
    assert 0.0 < record["best_fitness"] <= 1.0
    assert state_dict_digest(ck.state_dict) == DEMO_WEIGHTS_SHA256  # the trained weights, bit for bit


def test_shipped_demo_still_loads_and_detects() -> None:
    from streamdet.datasets.shapes import render_image
    from streamdet.detector import Detector
    from streamdet.evaluation import evaluate

    model = load_model(DEMO_CHECKPOINT)
    assert model.names == ["circle", "square", "triangle"]
    frames = [render_image(7, i, sizes=((640, 480),)) for i in range(6)]
    detector = Detector(DEMO_CHECKPOINT, img_size=416, conf_thres=0.001, iou_thres=0.6)
    result = evaluate(detector([f.image for f in frames]), [f.boxes for f in frames], nc=3)
    assert sum(len(f.boxes) for f in frames) >= 12 and result.map50 >= 0.8, result.map50
