"""The YOLOv5 training loop: data, loss, optimiser schedule, EMA, per-epoch mAP, checkpoints."""

from __future__ import annotations

import copy
import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from streamdet.training.augment import AugmentConfig
from streamdet.training.data import (
    ScaleBatchSampler,
    ShapesTrainDataset,
    cache_images,
    collate,
    load_val,
    multi_scale_sizes,
    train_input_shape,
)
from streamdet.training.ema import ModelEMA
from streamdet.training.loss import LossGains, YoloLoss
from streamdet.training.optim import build_optimizer, lr_lambda, set_lr
from streamdet.training.state import TrainState, load_state, save_state

if TYPE_CHECKING:
    from streamdet.model.yolov5 import YOLOv5

LOG = logging.getLogger(__name__)

SHAPES_NAMES = ["circle", "square", "triangle"]


@dataclass
class TrainConfig:
    """Everything a training run depends on (saved into the checkpoint as ``opt``)."""

    data: str
    val: str | None = None
    arch: str | dict = "yolov5n"
    width: float | None = None  # overrides width_multiple of the arch
    depth: float | None = None  # overrides depth_multiple of the arch
    names: list[str] = field(default_factory=lambda: list(SHAPES_NAMES))
    img_size: int = 416
    multi_scale: tuple[int, int] | None = None  # (low, high) input sizes, one drawn per batch in stride steps
    weights: str | None = None  # start from this checkpoint's weights instead of a random init
    resume: bool = False  # continue the run in ``out`` from its state.pt (same options)
    epochs: int = 30
    batch: int = 16
    nbs: int = 64  # nominal batch size: gradients are accumulated up to it
    workers: int = 0
    device: str = "cpu"
    out: str = "runs/shapes"
    optimizer: str = "SGD"
    lr0: float = 0.01
    lrf: float = 0.01
    momentum: float = 0.937
    weight_decay: float = 5e-4
    warmup_epochs: float = 3.0
    warmup_momentum: float = 0.8
    warmup_bias_lr: float = 0.1
    cos_lr: bool = True
    ema_decay: float = 0.9999
    ema_tau: float = 2000.0
    gains: LossGains = field(default_factory=LossGains)
    aug: AugmentConfig = field(default_factory=AugmentConfig)
    close_mosaic: int = 0  # last epochs trained without mosaic
    seed: int = 0
    amp: bool = True  # only takes effect on CUDA
    train_limit: int | None = None
    val_limit: int | None = None
    val_every: int = 1
    threads: int | None = None
    max_iters: int | None = None  # stop after this many iterations (smoke tests)


@dataclass
class TrainResult:
    """What a run produced: per-iteration losses, per-epoch records and the checkpoint paths."""

    losses: list[float]
    epochs: list[dict[str, Any]]
    last: Path
    best: Path | None
    model: nn.Module  # the EMA model (eval mode)
    seconds: float


def build_model(cfg: TrainConfig) -> YOLOv5:
    """A freshly initialised YOLOv5 for ``cfg.names`` from a named or given architecture dict."""
    from streamdet.model.yolov5 import ARCHITECTURES, YOLOv5

    arch = copy.deepcopy(ARCHITECTURES[cfg.arch] if isinstance(cfg.arch, str) else cfg.arch)
    if cfg.width is not None:
        arch["width_multiple"] = cfg.width
    if cfg.depth is not None:
        arch["depth_multiple"] = cfg.depth
    arch["nc"] = len(cfg.names)
    model = YOLOv5(arch, ch=3, nc=len(cfg.names))
    model.names = list(cfg.names)
    return model


def _pretrained(cfg: TrainConfig) -> YOLOv5:
    """The model of checkpoint ``cfg.weights`` (unfused, float32, trainable) for fine-tuning."""
    from streamdet.model.checkpoint import load_model

    assert cfg.weights is not None
    model = load_model(cfg.weights, device="cpu", half=False, fuse=False)
    if list(model.names) != list(cfg.names):
        raise ValueError(f"{cfg.weights}: classes {list(model.names)} differ from the run's {list(cfg.names)}")
    model.requires_grad_(True)
    return model


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch RNGs (model init and batch order)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _jsonable(cfg: TrainConfig) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(cfg), default=str))


def resume_config(out: str | Path, **overrides: Any) -> TrainConfig:
    """The options of the interrupted run in ``out`` (from its state.pt), set to resume it.

    ``overrides`` may only change options that do not affect the result (threads, workers, device).
    """
    from streamdet.training.state import RESUME_FREE, saved_config

    bad = sorted(set(overrides) - RESUME_FREE)
    if bad:
        raise ValueError(f"cannot change {', '.join(bad)} when resuming")
    raw = saved_config(out)
    raw = {**raw, **overrides, "resume": True}
    raw["gains"] = LossGains(**raw["gains"])
    raw["aug"] = AugmentConfig(**raw["aug"])
    if raw.get("multi_scale") is not None:
        raw["multi_scale"] = tuple(raw["multi_scale"])
    return TrainConfig(**raw)


def train(cfg: TrainConfig, log: Callable[[str], None] | None = None) -> TrainResult:
    """Train a YOLOv5 on a YOLO-layout directory; write ``last.pt``/``best.pt`` under ``cfg.out``.

    While the run trains, both files carry ``epoch`` and ``best_fitness`` as train.py's do; when
    every epoch has run they are finished as train.py finishes them (``epoch`` -1, ``best_fitness``
    None; the two values kept under ``opt["streamdet"]["finished"]``; see :func:`finish_checkpoint`).
    """
    from streamdet.model.checkpoint import finish_checkpoint, save_checkpoint

    log = log or LOG.info
    t_start = time.time()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    device = torch.device(cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)

    model = build_model(cfg) if cfg.weights is None else _pretrained(cfg)
    model.to(device).train()
    stride = int(max(float(s) for s in model.stride))
    if cfg.img_size % stride:
        raise ValueError(f"img_size {cfg.img_size} is not a multiple of the model stride {stride}")
    sizes = multi_scale_sizes(*cfg.multi_scale, stride) if cfg.multi_scale else [cfg.img_size]

    t0 = time.time()
    cache_size = max(cfg.img_size, *sizes)  # cache at the largest input size: every size resamples once
    cache = cache_images(cfg.data, cache_size, max(cfg.workers, 2), cfg.train_limit, len(cfg.names))
    out_hw = train_input_shape(cache, stride)
    val = load_val(cfg.val, cfg.val_limit, len(cfg.names)) if cfg.val else None
    log(
        f"data: {len(cache.images)} train images cached in {time.time() - t0:.1f}s, canvas {out_hw[1]}x{out_hw[0]}"
        f", input sizes {sizes[0]}-{sizes[-1]}" + (f", {len(val.frames)} val images" if val else "")
    )
    dataset = ShapesTrainDataset(cache, out_hw, cfg.aug, seed=cfg.seed, stride=stride)
    sampler = ScaleBatchSampler(len(dataset), cfg.batch, sizes, seed=cfg.seed)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.workers, collate_fn=collate)

    accumulate = max(round(cfg.nbs / cfg.batch), 1)
    weight_decay = cfg.weight_decay * cfg.batch * accumulate / cfg.nbs
    opt = build_optimizer(model, cfg.optimizer, cfg.lr0, cfg.momentum, weight_decay)
    lf = lr_lambda(cfg.epochs, cfg.lrf, cfg.cos_lr)
    ema = ModelEMA(model, cfg.ema_decay, cfg.ema_tau)
    criterion = YoloLoss.for_model(model, cfg.img_size, cfg.gains)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)

    nb = len(loader)
    warmup_iters = round(cfg.warmup_epochs * nb) if cfg.warmup_epochs > 0 else 0
    losses: list[float] = []
    records: list[dict[str, Any]] = []
    best_fitness = -1.0
    best_path: Path | None = None
    last_path = out / "last.pt"
    ni = 0
    last_step = -1
    opt.zero_grad()
    meta_opt = _jsonable(cfg)
    start_epoch = 0
    if cfg.resume:
        state = load_state(out, meta_opt)
        model.load_state_dict(state.model)
        ema.ema.load_state_dict(state.ema)
        ema.updates = state.ema_updates
        opt.load_state_dict(state.optimizer)
        scaler.load_state_dict(state.scaler)
        last_step, best_fitness = state.last_step, state.best_fitness
        records, losses = list(state.records), list(state.losses)
        start_epoch = state.epoch + 1
        if best_fitness >= 0 and (out / "best.pt").is_file():
            best_path = out / "best.pt"
        log(f"resumed {out} after epoch {start_epoch} of {cfg.epochs}")
    stop = False
    for epoch in range(start_epoch, cfg.epochs):
        mosaic = 0.0 if epoch >= cfg.epochs - cfg.close_mosaic else cfg.aug.mosaic
        dataset.set_epoch(epoch, mosaic)
        sampler.set_epoch(epoch)
        model.train()
        t_epoch = time.time()
        mloss = torch.zeros(3)
        n_seen = 0
        for i, (imgs, targets) in enumerate(loader):
            ni = i + nb * epoch
            set_lr(
                opt,
                ni,
                warmup_iters,
                cfg.lr0,
                lf(epoch + i / nb),
                cfg.momentum,
                cfg.warmup_momentum,
                cfg.warmup_bias_lr,
            )
            # Accumulation ramps from 1 to nbs/batch during warm-up, as in YOLOv5.
            acc = (
                max(1, round(float(np.interp(ni, [0, warmup_iters], [1, cfg.nbs / cfg.batch]))))
                if ni < warmup_iters
                else accumulate
            )
            x = imgs.to(device, non_blocking=True).float() / 255
            with torch.autocast(device.type, enabled=use_amp):
                preds = model(x)
                loss, parts = criterion(preds, targets.to(device))
            scaler.scale(loss).backward()
            if ni - last_step >= acc:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)
                scaler.step(opt)
                scaler.update()
                opt.zero_grad()
                ema.update(model)
                last_step = ni
            losses.append(float(loss.item()) / imgs.shape[0])
            mloss = (mloss * i + parts.cpu()) / (i + 1)
            n_seen += imgs.shape[0]
            if i % 20 == 0 or i == nb - 1:
                log(
                    f"epoch {epoch + 1}/{cfg.epochs} iter {i + 1}/{nb} box {mloss[0]:.4f} obj {mloss[1]:.4f} "
                    f"cls {mloss[2]:.4f} lr {opt.param_groups[1]['lr']:.5f} "
                    f"{n_seen / (time.time() - t_epoch):.1f} img/s"
                )
            if cfg.max_iters is not None and ni + 1 >= cfg.max_iters:
                stop = True
                break
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "box": float(mloss[0]),
            "obj": float(mloss[1]),
            "cls": float(mloss[2]),
            "seconds": round(time.time() - t_epoch, 1),
        }
        final = stop or epoch == cfg.epochs - 1
        fitness = None
        if val is not None and ((epoch + 1) % cfg.val_every == 0 or final):
            from streamdet.training.validate import validate

            t_val = time.time()
            res = validate(ema.ema, val, cfg.img_size, device, len(cfg.names))
            record.update(
                map50=float(res.map50), map50_95=float(res.map50_95), val_seconds=round(time.time() - t_val, 1)
            )
            fitness = 0.1 * record["map50"] + 0.9 * record["map50_95"]
        records.append(record)
        log(json.dumps(record))
        if fitness is not None and fitness > best_fitness:
            best_fitness = fitness
            best_path = out / "best.pt"
            save_checkpoint(ema.ema, best_path, epoch=epoch, best_fitness=fitness, opt=meta_opt)
        save_checkpoint(ema.ema, last_path, epoch=epoch, best_fitness=max(best_fitness, 0.0), opt=meta_opt)
        save_state(
            out,
            TrainState(
                config=meta_opt,
                epoch=epoch,
                model=model.state_dict(),
                ema=ema.ema.state_dict(),
                ema_updates=ema.updates,
                optimizer=opt.state_dict(),
                scaler=scaler.state_dict(),
                last_step=last_step,
                best_fitness=best_fitness,
                records=records,
                losses=losses,
            ),
        )
        if stop:
            break
    if not stop:  # every epoch ran: finish both files as train.py does (a max_iters cut stays resumable)
        for path in (best_path, last_path):
            if path is not None and path.is_file():
                finish_checkpoint(path)
    (out / "results.json").write_text(json.dumps({"config": meta_opt, "epochs": records}, indent=1))
    seconds = time.time() - t_start
    log(f"done in {seconds / 60:.1f} min; last {last_path}" + (f", best {best_path}" if best_path else ""))
    if losses and not math.isfinite(losses[-1]):
        raise FloatingPointError("training diverged (non-finite loss)")
    return TrainResult(losses=losses, epochs=records, last=last_path, best=best_path, model=ema.ema, seconds=seconds)
