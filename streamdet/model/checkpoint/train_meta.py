"""The training metadata an Ultralytics YOLOv5 ``train.py`` run leaves in its ``best.pt``.

The writer (:mod:`streamdet.model.checkpoint.writer`) uses this to fill what Ultralytics tooling
reads besides the weights:

* ``opt``: ``vars()`` of train.py's argparse options. Every option key exists (train.py
  ``--resume`` rebuilds its namespace from this dict), in train.py's order, with train.py's
  defaults where the caller says nothing. Our trainer's names are mapped (``img_size`` ->
  ``imgsz``, ``batch`` -> ``batch_size``, ``out`` -> ``save_dir``/``project``/``name``,
  ``gains.label_smoothing`` -> ``label_smoothing``; a ``multi_scale`` range -> True, ``weights``
  None -> ``''``); a caller dict with keys train.py does not
  know is also kept verbatim under ``opt["streamdet"]``, which Ultralytics ignores.
* ``opt["hyp"]``: the unscaled hyperparameters (train.py stores the hyp file as read). Taken
  from the caller's ``opt["hyp"]`` when it is a dict, else ``hyp.scratch-low.yaml`` overlaid
  with our trainer's values (``lr0`` ... ``warmup_bias_lr``, ``gains.box/obj/cls/anchor_t``,
  ``aug.*``).
* ``model.hyp``: as train.py attaches it, ``opt["hyp"]`` scaled to the model (``box *= 3/nl``,
  ``cls *= nc/80 * 3/nl``, ``obj *= (imgsz/640)^2 * 3/nl``) plus ``label_smoothing``. A ``hyp``
  the caller gives is written as ``model.hyp`` unchanged (``opt["hyp"]`` is still derived from opt).
* ``model.class_weights``: float32 (nc,); train.py's ``labels_to_class_weights(labels) * nc``.
  Without labels we write ones (the value for balanced classes: the weights sum to nc).
* ``model.yaml_file``: ``'<name>.yaml'`` when the architecture equals one of our named ones, as
  ``--cfg models/<name>.yaml`` leaves it; left out otherwise, as for a model built from a dict.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

from streamdet.errors import ModelError

# data/hyps/hyp.scratch-low.yaml of Ultralytics YOLOv5 (train.py's default --hyp), in file order.
HYP_SCRATCH_LOW: Mapping[str, float] = MappingProxyType({
    "lr0": 0.01, "lrf": 0.01, "momentum": 0.937, "weight_decay": 0.0005, "warmup_epochs": 3.0,
    "warmup_momentum": 0.8, "warmup_bias_lr": 0.1, "box": 0.05, "cls": 0.5, "cls_pw": 1.0, "obj": 1.0,
    "obj_pw": 1.0, "iou_t": 0.2, "anchor_t": 4.0, "fl_gamma": 0.0, "hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4,
    "degrees": 0.0, "translate": 0.1, "scale": 0.5, "shear": 0.0, "perspective": 0.0, "flipud": 0.0,
    "fliplr": 0.5, "mosaic": 1.0, "mixup": 0.0, "copy_paste": 0.0,
})

# Where our trainer's opt (TrainConfig as a dict) keeps hyp values: top level, 'gains', 'aug'.
_OUR_HYP_SECTIONS = (None, "gains", "aug")
# Our trainer's option names -> train.py's, for options that mean the same.
_OUR_OPT_NAMES = MappingProxyType({"img_size": "imgsz", "batch": "batch_size"})  # "out": save_dir etc.
# Options our trainer shares with train.py under another type: our multi_scale is a (low, high)
# range or None (train.py: a bool), our weights may be None (train.py: '' for none).
_TRAIN_PY_TYPES: Mapping[str, Callable[[Any], Any]] = MappingProxyType({
    "multi_scale": bool, "weights": lambda v: "" if v is None else v,
})
STREAMDET_OPT_KEY = "streamdet"  # where a caller's own opt dict is kept verbatim


def train_py_opt_defaults() -> dict[str, Any]:
    """A fresh dict of every train.py option, in ``parse_opt`` order, as ``vars(opt)`` saves them.

    Paths are the ROOT-relative strings train.py ends up with; ``hyp`` is filled by the caller.
    Departures from train.py's argparse defaults: ``weights`` is ``''`` (trained from scratch,
    unless the caller's opt names the starting checkpoint), ``data`` is ``''`` (unknown), and
    ``evolve_population`` is the string ``'data/hyps'`` rather than a ``PosixPath``, which cannot
    be unpickled on Windows.
    """
    return {
        "weights": "", "cfg": "", "data": "", "hyp": None, "epochs": 100, "batch_size": 16, "imgsz": 640,
        "rect": False, "resume": False, "nosave": False, "noval": False, "noautoanchor": False,
        "noplots": False, "evolve": None, "evolve_population": "data/hyps", "resume_evolve": None, "bucket": "",
        "cache": None, "image_weights": False, "device": "", "multi_scale": False, "single_cls": False,
        "optimizer": "SGD", "sync_bn": False, "workers": 8, "project": "runs/train", "name": "exp",
        "exist_ok": False, "quad": False, "cos_lr": False, "label_smoothing": 0.0, "patience": 100,
        "freeze": [0], "save_period": -1, "seed": 0, "local_rank": -1, "entity": None,
        "upload_dataset": False, "bbox_interval": -1, "save_dir": "runs/train/exp",
    }


@dataclass(frozen=True)
class ModelTrainAttrs:
    """The attributes train.py attaches to its DetectionModel, as this checkpoint will store them."""

    yaml_file: str | None  # None: left out (a model built from a dict has none)
    hyp: dict[str, Any]
    class_weights: Tensor  # float32 (nc,)
    grid_size: int | None  # square input size whose Detect grids are cached (None: not cacheable)


def train_metadata(model_yaml: Mapping[str, Any], nc: int, strides: Sequence[float], opt: Any,
                   hyp: Mapping[str, Any] | None, class_weights: Any,
                   architectures: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, Any], ModelTrainAttrs]:
    """The checkpoint's ``opt`` dict and the model attributes for a model trained with ``opt``.

    ``opt`` is the caller's dict (train.py's, our trainer's, or None); ``hyp`` and
    ``class_weights`` override what ``model.hyp`` / ``model.class_weights`` would be derived as.
    """
    if opt is None:
        opt = {}
    if not isinstance(opt, Mapping):
        raise ModelError(f"checkpoint 'opt' must be a dict of training options, got {type(opt).__name__}")
    arch_name = _architecture_name(model_yaml, architectures)
    out = _train_py_opt(opt, arch_name)
    imgsz = out["imgsz"][0] if isinstance(out["imgsz"], (list, tuple)) and out["imgsz"] else out["imgsz"]
    if not (isinstance(imgsz, int) and not isinstance(imgsz, bool) and imgsz > 0):
        raise ModelError(f"checkpoint opt: imgsz must be a positive integer, got {out['imgsz']!r}")
    if hyp is None:
        base = out["hyp"] if isinstance(out["hyp"], Mapping) else _unscaled_hyp(opt)
        hyp = scaled_hyp(base, len(strides), nc, imgsz, out["label_smoothing"])
    elif not isinstance(hyp, Mapping):
        raise ModelError(f"hyp must be a dict of hyperparameters, got {type(hyp).__name__}")
    attrs = ModelTrainAttrs(
        yaml_file=f"{arch_name}.yaml" if arch_name else None,
        hyp=copy.deepcopy(dict(hyp)),
        class_weights=_class_weights(class_weights, nc),
        grid_size=imgsz if all(s > 0 and imgsz % int(s) == 0 for s in strides) else None,
    )
    return out, attrs


def scaled_hyp(hyp: Mapping[str, Any], nl: int, nc: int, imgsz: int, label_smoothing: Any) -> dict[str, Any]:
    """``hyp`` scaled to the model as train.py does before attaching it (same arithmetic order)."""
    h = copy.deepcopy(dict(hyp))
    if "box" in h:
        h["box"] *= 3 / nl
    if "cls" in h:
        h["cls"] *= nc / 80 * 3 / nl
    if "obj" in h:
        h["obj"] *= (imgsz / 640) ** 2 * 3 / nl
    h["label_smoothing"] = label_smoothing
    return h


def _architecture_name(model_yaml: Mapping[str, Any], architectures: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The named architecture ``model_yaml`` is (class count and input channels aside), if any."""
    own = {k: v for k, v in model_yaml.items() if k not in ("nc", "ch")}
    for name, arch in architectures.items():
        if own == {k: v for k, v in arch.items() if k not in ("nc", "ch")}:
            return name
    return None


def _train_py_opt(opt: Mapping[str, Any], arch_name: str | None) -> dict[str, Any]:
    """train.py's full option dict with the caller's values (train.py names win over mapped ones)."""
    out = train_py_opt_defaults()
    if arch_name:
        out["cfg"] = f"models/{arch_name}.yaml"
    for ours, theirs in _OUR_OPT_NAMES.items():
        if ours in opt:
            out[theirs] = copy.deepcopy(opt[ours])
    if "out" in opt and isinstance(opt["out"], (str, PurePath)):
        run = PurePath(opt["out"])
        out.update(save_dir=str(run), project=str(run.parent), name=run.name)
    gains = opt.get("gains")
    if isinstance(gains, Mapping) and "label_smoothing" in gains:
        out["label_smoothing"] = gains["label_smoothing"]
    for key in out.keys() & opt.keys():
        out[key] = copy.deepcopy(opt[key])
        if key in _TRAIN_PY_TYPES:
            out[key] = _TRAIN_PY_TYPES[key](out[key])
    if not isinstance(out["hyp"], Mapping) and not (isinstance(out["hyp"], str) and out["hyp"]):
        out["hyp"] = _unscaled_hyp(opt)
    extra = [k for k in opt if k not in out]
    if any(k != STREAMDET_OPT_KEY for k in extra):
        out[STREAMDET_OPT_KEY] = copy.deepcopy({k: v for k, v in opt.items() if k != STREAMDET_OPT_KEY})
    elif STREAMDET_OPT_KEY in opt:
        out[STREAMDET_OPT_KEY] = copy.deepcopy(opt[STREAMDET_OPT_KEY])
    return out


def _unscaled_hyp(opt: Mapping[str, Any]) -> dict[str, Any]:
    """hyp.scratch-low overlaid with the hyp values of our trainer's opt (top level, gains, aug)."""
    hyp: dict[str, Any] = dict(HYP_SCRATCH_LOW)
    for section in _OUR_HYP_SECTIONS:
        values = opt if section is None else opt.get(section)
        if not isinstance(values, Mapping):
            continue
        for key in HYP_SCRATCH_LOW.keys() & values.keys():
            v = values[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                where = key if section is None else f"{section}.{key}"
                raise ModelError(f"checkpoint opt: hyperparameter {where} must be a finite number, got {v!r}")
            hyp[key] = float(v)
    return hyp


def _class_weights(value: Any, nc: int) -> Tensor:
    """The caller's class weights as float32 (nc,), or ones."""
    if value is None:
        return torch.ones(nc, dtype=torch.float32)
    try:
        t = torch.as_tensor(value).detach().to("cpu", torch.float32).clone()
    except (TypeError, ValueError, RuntimeError) as e:
        raise ModelError(f"class_weights must be {nc} numbers: {e}") from e
    if tuple(t.shape) != (nc,):
        raise ModelError(f"class_weights must have shape ({nc},) for nc={nc}, got {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ModelError("class_weights must be finite")
    return t
