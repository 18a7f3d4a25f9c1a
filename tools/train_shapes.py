#!/usr/bin/env python3
"""Train a YOLOv5 on YOLO-layout shapes data (thin CLI over ``streamdet.training``).

Example:
    python tools/train_shapes.py --data data/shapes/train --val data/shapes/val \
        --arch yolov5n --img-size 416 --epochs 20 --batch 16 --device cpu --out runs/shapes
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from streamdet.training.augment import AugmentConfig
from streamdet.training.loss import LossGains
from streamdet.training.trainer import TrainConfig, resume_config, train


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; defaults are the ones the demo model was trained with."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="YOLO-layout training directory (images/, labels/)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the interrupted run in RUN_DIR (its options)")
    p.add_argument("--weights", default=None, help="start from this checkpoint's weights (fine-tuning)")
    p.add_argument("--val", default=None, help="YOLO-layout validation directory (mAP each epoch)")
    p.add_argument("--arch", default="yolov5n", help="architecture name, or a .json/.yaml architecture dict")
    p.add_argument("--width", type=float, default=None, help="override width_multiple")
    p.add_argument("--depth", type=float, default=None, help="override depth_multiple")
    p.add_argument("--img-size", type=int, default=416, help="the input size validated and recorded")
    p.add_argument(
        "--multi-scale",
        type=int,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="train each batch at an input size drawn from LOW..HIGH in stride steps",
    )
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--nbs", type=int, default=64, help="nominal batch size (gradient accumulation)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (0: main process)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/shapes")
    p.add_argument("--optimizer", choices=["SGD", "AdamW"], default="SGD")
    p.add_argument("--lr0", type=float, default=0.01)
    p.add_argument("--lrf", type=float, default=0.01)
    p.add_argument("--momentum", type=float, default=0.937)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--linear-lr", action="store_true", help="linear instead of cosine LR decay")
    p.add_argument("--ema-decay", type=float, default=0.9999)
    p.add_argument("--ema-tau", type=float, default=2000.0, help="EMA decay ramp (updates)")
    p.add_argument(
        "--warmup-bias-lr", type=float, default=None, help="bias LR at warm-up start (default: 0.1 SGD, lr0 AdamW)"
    )
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--mosaic", type=float, default=0.5, help="probability of a mosaic sample")
    p.add_argument("--scale", type=float, default=0.25, help="random scale gain +/-")
    p.add_argument("--translate", type=float, default=0.1)
    p.add_argument("--close-mosaic", type=int, default=0, help="last epochs without mosaic")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-limit", type=int, default=None)
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    return p.parse_args(argv)


def _load_arch(spec: str) -> str | dict:
    path = Path(spec)
    if not path.suffix:
        return spec
    text = path.read_text()
    if path.suffix == ".json":
        return json.loads(text)
    import yaml

    return yaml.safe_load(text)


def main(argv: list[str] | None = None) -> int:
    """Run one training; prints progress and the checkpoint paths."""
    a = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    if a.resume:
        overrides = {"threads": a.threads, "workers": a.workers, "device": a.device}
        train(resume_config(a.resume, **overrides))
        return 0
    if not a.data:
        print("train_shapes: error: --data is required (or --resume RUN_DIR)", file=sys.stderr)
        return 2
    cfg = TrainConfig(
        data=a.data,
        val=a.val,
        arch=_load_arch(a.arch),
        width=a.width,
        depth=a.depth,
        img_size=a.img_size,
        multi_scale=tuple(a.multi_scale) if a.multi_scale else None,
        weights=a.weights,
        epochs=a.epochs,
        batch=a.batch,
        nbs=a.nbs,
        workers=a.workers,
        device=a.device,
        out=a.out,
        optimizer=a.optimizer,
        lr0=a.lr0,
        lrf=a.lrf,
        momentum=a.momentum,
        weight_decay=a.weight_decay,
        warmup_epochs=a.warmup_epochs,
        cos_lr=not a.linear_lr,
        ema_decay=a.ema_decay,
        ema_tau=a.ema_tau,
        warmup_bias_lr=a.warmup_bias_lr if a.warmup_bias_lr is not None else (0.1 if a.optimizer == "SGD" else a.lr0),
        gains=LossGains(label_smoothing=a.label_smoothing),
        aug=AugmentConfig(mosaic=a.mosaic, scale=a.scale, translate=a.translate),
        close_mosaic=a.close_mosaic,
        seed=a.seed,
        amp=not a.no_amp,
        train_limit=a.train_limit,
        val_limit=a.val_limit,
        threads=a.threads,
    )
    train(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
