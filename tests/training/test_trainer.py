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


def test_finished_run_writes_finished_checkpoints(tiny_run: tuple[TrainResult, Path]) -> None:
    """After the last epoch both files are finished as train.py's strip_optimizer leaves them; the
    epoch and fitness they carried while training are kept under opt['streamdet']['finished']."""
    from streamdet.model.checkpoint import read_checkpoint

    result, _ = tiny_run
    last = result.epochs[-1]
    fitness = 0.1 * last["map50"] + 0.9 * last["map50_95"]  # the only validation: after the last epoch
    for path in (result.best, result.last):
        assert path is not None
        meta = read_checkpoint(path).meta
        assert (meta["epoch"], meta["best_fitness"], meta["updates"]) == (-1, None, None), path.name
        record = meta["opt"]["streamdet"]["finished"]
        assert record["epoch"] == 39 and record["best_fitness"] == pytest.approx(max(fitness, 0.0)), path.name
        assert meta["opt"]["streamdet"]["epochs"] == 40 and meta["opt"]["imgsz"] == 128


def _resume_config(root: Path, out: str, **kw: object) -> TrainConfig:
    base = dict(
        data=str(root / "train"),
        img_size=128,
        multi_scale=(96, 160),
        epochs=3,
        batch=2,
        nbs=2,
        optimizer="AdamW",
        lr0=0.005,
        warmup_epochs=0.0,
        warmup_bias_lr=0.005,
        ema_decay=0.9,
        ema_tau=5.0,
        aug=AugmentConfig(mosaic=0.5, scale=0.5),
        out=str(root / out),
        seed=1,
    )
    return TrainConfig(**{**base, **kw})  # type: ignore[arg-type]


def test_an_interrupted_run_resumes_to_the_same_weights(tiny_run: tuple[TrainResult, Path]) -> None:
    from streamdet.model.checkpoint import read_checkpoint
    from streamdet.training.state import load_state, state_path
    from streamdet.training.trainer import resume_config

    _, root = tiny_run
    straight = train(_resume_config(root, "straight"), log=lambda _msg: None)
    # The same run stopped after its second epoch (2 batches per epoch), then resumed from state.pt.
    cut = train(_resume_config(root, "cut", max_iters=4), log=lambda _msg: None)
    assert [r["epoch"] for r in cut.epochs] == [1, 2]
    assert state_path(root / "cut").is_file()
    cut_meta = read_checkpoint(cut.last).meta  # cut short: not finished, it still says where it stopped
    assert cut_meta["epoch"] == 1 and "finished" not in cut_meta["opt"]["streamdet"]
    resumed = train(resume_config(root / "cut", max_iters=None), log=lambda _msg: None)
    assert [r["epoch"] for r in resumed.epochs] == [1, 2, 3]
    resumed_meta = read_checkpoint(resumed.last).meta
    assert resumed_meta["epoch"] == -1 and resumed_meta["opt"]["streamdet"]["finished"]["epoch"] == 2
    assert resumed.losses == straight.losses
    want, got = straight.model.state_dict(), resumed.model.state_dict()
    assert want.keys() == got.keys()
    for k in want:
        assert torch.equal(want[k], got[k]), k
    # Changed options cannot resume the run, and the message names them.
    saved = torch.load(state_path(root / "cut"), weights_only=True)["config"]
    assert load_state(root / "cut", saved).epoch == 2
    with pytest.raises(ValueError, match="lr0"):
        load_state(root / "cut", {**saved, "lr0": 0.5})
    with pytest.raises(ValueError, match="epochs"):
        resume_config(root / "cut", epochs=9)
    with pytest.raises(FileNotFoundError, match="state.pt"):
        resume_config(root / "nothing-here")


def test_fine_tuning_starts_from_the_checkpoint(tiny_run: tuple[TrainResult, Path]) -> None:
    from streamdet import load_model
    from streamdet.training.trainer import _pretrained

    result, root = tiny_run
    cfg = _resume_config(root, "ft", weights=str(result.last))
    model = _pretrained(cfg)
    ref = load_model(result.last, device="cpu", half=False, fuse=False)
    assert all(p.requires_grad for p in model.parameters())
    for (k, a), (k2, b) in zip(model.state_dict().items(), ref.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)
    with pytest.raises(ValueError, match="classes"):
        _pretrained(_resume_config(root, "ft", weights=str(result.last), names=["a", "b", "c"]))
