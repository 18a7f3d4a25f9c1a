"""train.py metadata for written checkpoints: opt completion, name mapping, hyp scaling, class weights."""

from __future__ import annotations

import pytest
import torch

from streamdet.errors import ModelError
from streamdet.model.checkpoint.train_meta import (
    HYP_SCRATCH_LOW,
    scaled_hyp,
    train_metadata,
    train_py_opt_defaults,
)
from streamdet.model.yolov5 import ARCHITECTURES

YAML = {**ARCHITECTURES["yolov5n"], "nc": 3, "ch": 3}
STRIDES = [8.0, 16.0, 32.0]


def meta(opt: object, hyp: dict | None = None, class_weights: object = None) -> tuple[dict, object]:
    return train_metadata(YAML, 3, STRIDES, opt, hyp, class_weights, ARCHITECTURES)


def test_scaled_hyp_matches_train_py() -> None:
    # the values official train.py attached when fine-tuning on 3 classes at 416 (1 run, recorded)
    h = scaled_hyp(HYP_SCRATCH_LOW, nl=3, nc=3, imgsz=416, label_smoothing=0.1)
    assert h["box"] == 0.05 and h["cls"] == 0.01875 and h["obj"] == 0.42250000000000004
    assert list(h) == [*HYP_SCRATCH_LOW, "label_smoothing"] and h["label_smoothing"] == 0.1
    assert scaled_hyp(HYP_SCRATCH_LOW, nl=4, nc=80, imgsz=640, label_smoothing=0.0)["box"] == 0.05 * 3 / 4


def test_our_trainer_names_are_mapped() -> None:
    ours = {"img_size": 320, "batch": 8, "epochs": 5, "out": "runs/x/y", "lr0": 0.002, "optimizer": "AdamW",
            "gains": {"box": 0.1, "label_smoothing": 0.05}, "aug": {"mosaic": 0.25, "unknown": 3}}
    opt, attrs = meta(ours)
    assert list(opt) == [*train_py_opt_defaults(), "streamdet"] and opt["streamdet"] == ours
    assert (opt["imgsz"], opt["batch_size"], opt["epochs"], opt["optimizer"]) == (320, 8, 5, "AdamW")
    assert (opt["save_dir"], opt["project"], opt["name"], opt["label_smoothing"]) == ("runs/x/y", "runs/x", "y", 0.05)
    assert opt["hyp"] == {**HYP_SCRATCH_LOW, "lr0": 0.002, "box": 0.1, "mosaic": 0.25}
    assert attrs.hyp["box"] == 0.1 and attrs.hyp["label_smoothing"] == 0.05 and attrs.grid_size == 320
    assert attrs.yaml_file == "yolov5n.yaml" and opt["cfg"] == "models/yolov5n.yaml"
    assert torch.equal(attrs.class_weights, torch.ones(3))
    opt, _ = meta({"multi_scale": [320, 512], "weights": None, "resume": False})  # our types -> train.py's
    assert (opt["multi_scale"], opt["weights"], opt["resume"]) == (True, "", False)
    assert meta({"weights": "a.pt", "multi_scale": None})[0]["weights"] == "a.pt"


def test_train_py_opt_is_kept_and_rewriting_is_idempotent() -> None:
    theirs = {**train_py_opt_defaults(), "hyp": {"lr0": 0.5}, "imgsz": 1280, "cfg": "models/custom.yaml"}
    opt, attrs = meta(theirs)
    assert opt == theirs and "streamdet" not in opt  # nothing of ours to keep
    assert attrs.hyp == {"lr0": 0.5, "label_smoothing": 0.0}  # scaled from the given (partial) hyp
    again, _ = meta(meta({"img_size": 416, "threads": 2})[0])
    assert again["streamdet"] == {"img_size": 416, "threads": 2}  # not nested on a second pass


def test_bad_metadata_is_refused_with_the_key_named() -> None:
    with pytest.raises(ModelError, match="hyperparameter gains.box must be a finite number"):
        meta({"gains": {"box": "big"}})
    with pytest.raises(ModelError, match="imgsz must be a positive integer"):
        meta({"img_size": "640"})
    with pytest.raises(ModelError, match=r"shape \(3,\)"):
        meta({}, class_weights=torch.ones(2, 3))
    with pytest.raises(ModelError, match="finite"):
        meta({}, class_weights=[1.0, float("nan"), 1.0])
    with pytest.raises(ModelError, match="hyp must be a dict"):
        meta({}, hyp=[1, 2])  # type: ignore[arg-type]
    _, attrs = meta({"img_size": 100})  # not a multiple of the strides: no grid cache
    assert attrs.grid_size is None
