"""img_size: configured, or the checkpoint's training size, else 640; far-off sizes warned about."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamdet.model.checkpoint import read_checkpoint
from streamdet.model.input_size import DEFAULT_IMG_SIZE, choose_img_size, trained_img_size

REPO = Path(__file__).resolve().parents[2]


def test_checkpoints_record_their_training_size(fixtures_dir: Path) -> None:
    assert read_checkpoint(REPO / "configs" / "demo" / "shapes_yolov5n.pt").trained_img_size == 416  # our trainer
    assert read_checkpoint(fixtures_dir / "yolov5" / "yolov5n_random.pt").trained_img_size == 640  # Ultralytics


@pytest.mark.parametrize(("meta", "size"), [
    ({"opt": {"imgsz": 1280}}, 1280),
    ({"opt": {"imgsz": [512, 512]}}, 512),
    ({"opt": {"img_size": 416}}, 416),
    ({"opt": {"imgsz": "640"}}, None),  # not an int: not trusted
    ({"opt": {"imgsz": True}}, None),
    ({"opt": None}, None),
    ({}, None),
])
def test_trained_img_size_from_metadata(meta: dict, size: int | None) -> None:
    assert trained_img_size(meta) == size


def test_unset_size_follows_the_checkpoint_else_640() -> None:
    chosen = choose_img_size(None, 416)
    assert chosen.size == 416 and "trained" in chosen.reason and chosen.warning is None
    chosen = choose_img_size(None, None)
    assert chosen.size == DEFAULT_IMG_SIZE == 640 and "default" in chosen.reason


def test_configured_size_wins_and_far_sizes_are_warned_about() -> None:
    assert choose_img_size(512, 416).warning is None  # 1.23x
    assert choose_img_size(320, 416).warning is None  # 1.3x
    far = choose_img_size(640, 416)  # 1.54x
    assert far.size == 640 and far.warning is not None and "416" in far.warning
    assert choose_img_size(256, 416).warning is not None  # 1.63x the other way
    assert choose_img_size(1280, None).warning is None and choose_img_size(1280, None).reason == "configured"
    assert choose_img_size(640, 416).describe().startswith("img_size 640 (configured")
