"""Training smoke test: a few iterations on a tiny generated data set, and a checkpoint round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from streamdet.training.augment import AugmentConfig
from streamdet.training.trainer import SHAPES_NAMES, TrainConfig, TrainResult, train


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainResult, Path]:
    from streamdet.datasets.shapes import write_images

    root = tmp_path_factory.mktemp("shapes")
    write_images(root / "train", 4, seed=12345, sizes=(256, 144))
    write_images(root / "val", 2, seed=54321, sizes=(256, 144))
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    cfg = TrainConfig(
        data=str(root / "train"),
        val=str(root / "val"),
        img_size=128,
        epochs=40,  # one batch per epoch: 40 iterations
        batch=4,
        nbs=4,
        optimizer="AdamW",
        lr0=0.01,
        lrf=0.5,
        warmup_epochs=0.0,
        warmup_bias_lr=0.01,
        ema_decay=0.9,
        ema_tau=5.0,
        # No augmentation: the smoke test checks that the loop can fit four images.
        aug=AugmentConfig(
            hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, fliplr=0.0, flipud=0.0, mosaic=0.0, scale=0.0, translate=0.0
        ),
        val_every=100,  # only after the last epoch
        out=str(root / "run"),
        seed=0,
    )
    return train(cfg, log=lambda _msg: None), root


def test_loss_falls(tiny_run: tuple[TrainResult, Path]) -> None:
    result, _ = tiny_run
    losses = np.asarray(result.losses)
    assert len(losses) == 40 and np.isfinite(losses).all()
    first, last = losses[:3].mean(), losses[-3:].mean()
    assert last < 0.7 * first, f"loss did not fall enough: {first:.4f} -> {last:.4f}"
    assert result.epochs[-1]["epoch"] == 40 and "map50" in result.epochs[-1]


def test_checkpoint_round_trip(tiny_run: tuple[TrainResult, Path]) -> None:
    from streamdet import load_model

    result, root = tiny_run
    assert result.last.is_file() and result.best is not None and result.best.is_file()
    loaded = load_model(result.last, device="cpu", half=False, fuse=False)
    assert list(loaded.names) == SHAPES_NAMES and loaded.nc == 3
    assert torch.equal(loaded.stride.float(), result.model.stride.float())
    # The checkpoint stores fp16 weights: compare with the EMA model rounded the same way.
    ema = result.model.eval().half().float()
    x = torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = ema(x), loaded(x)
    if isinstance(want, (tuple, list)):
        want = want[0]
    if isinstance(got, (tuple, list)):
        got = got[0]
    assert got.shape == want.shape == (1, 3 * (12 * 16 + 6 * 8 + 3 * 4), 8)
    torch.testing.assert_close(got[..., 4:], want[..., 4:], atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(got[..., :4], want[..., :4], atol=1e-2, rtol=1e-3)
    fused = load_model(result.last, device="cpu", fuse=True)
    with torch.no_grad():
        got_fused = fused(x)
    if isinstance(got_fused, (tuple, list)):
        got_fused = got_fused[0]
    torch.testing.assert_close(got_fused[..., 4:], want[..., 4:], atol=2e-3, rtol=1e-2)
