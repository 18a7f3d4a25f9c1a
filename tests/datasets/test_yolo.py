"""YOLO-layout reading: both layouts, pixel conversion, missing labels, clear errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from streamdet.datasets.yolo import (
    DatasetError,
    image_size,
    label_path,
    read_label_file,
    read_yolo_dir,
    write_label_file,
)


def _image(path: Path, width: int, height: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((height, width, 3), 90, np.uint8))
    return path


def test_round_trip_images_and_labels_folders(tmp_path: Path) -> None:
    boxes = np.array([[10, 20, 50, 60, 2], [0, 0, 200, 100, 0]], np.float64)
    _image(tmp_path / "images" / "b.png", 200, 100)
    (tmp_path / "labels").mkdir()
    write_label_file(tmp_path / "labels" / "b.txt", boxes, 200, 100)
    _image(tmp_path / "images" / "a.jpg", 64, 48)  # no label file: no objects
    samples = read_yolo_dir(tmp_path)
    assert [s.image.name for s in samples] == ["a.jpg", "b.png"]
    a, b = samples
    assert (a.width, a.height, a.boxes.shape, a.classes.shape) == (64, 48, (0, 4), (0,))
    assert (b.width, b.height) == (200, 100)
    np.testing.assert_allclose(b.boxes, boxes[:, :4], atol=1e-3)
    assert b.classes.tolist() == [2, 0] and b.classes.dtype == np.int64
    np.testing.assert_allclose(b.ground_truth(), boxes, atol=1e-3)
    assert (tmp_path / "labels" / "b.txt").read_text().splitlines()[0] == "2 0.150000 0.400000 0.200000 0.400000"


def test_side_by_side_and_split_folders(tmp_path: Path) -> None:
    _image(tmp_path / "flat" / "x.png", 100, 50)
    (tmp_path / "flat" / "x.txt").write_text("1 0.5 0.5 0.2 0.4\n")
    (s,) = read_yolo_dir(tmp_path / "flat")
    np.testing.assert_allclose(s.boxes, [[40, 15, 60, 35]])
    _image(tmp_path / "ds" / "images" / "val" / "y.png", 100, 50)
    (tmp_path / "ds" / "labels" / "val").mkdir(parents=True)
    (tmp_path / "ds" / "labels" / "val" / "y.txt").write_text("0 0.5 0.5 1 1\n\n")
    (s,) = read_yolo_dir(tmp_path / "ds" / "images" / "val")
    np.testing.assert_allclose(s.boxes, [[0, 0, 100, 50]])
    assert label_path(Path("/d/images/train/images/a.png")) == Path("/d/images/train/labels/a.txt")
    assert label_path(Path("/d/a.jpeg")) == Path("/d/a.txt")


def test_image_size_from_png_header_and_other_formats(tmp_path: Path) -> None:
    assert image_size(_image(tmp_path / "a.png", 321, 123)) == (321, 123)
    assert image_size(_image(tmp_path / "b.jpg", 33, 44)) == (33, 44)
    (tmp_path / "c.png").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="cannot decode"):
        image_size(tmp_path / "c.png")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("0 0.5 0.5 0.2", "expected 5 fields"),
        ("0 0.5 0.5 0.2 0.2 0.1", "expected 5 fields"),
        ("a 0.5 0.5 0.2 0.2", "not numbers"),
        ("0 0.5 x 0.2 0.2", "not numbers"),
        ("-1 0.5 0.5 0.2 0.2", "non-negative integer"),
        ("1.5 0.5 0.5 0.2 0.2", "non-negative integer"),
        ("0 1.5 0.5 0.2 0.2", "normalised"),
        ("0 nan 0.5 0.2 0.2", "normalised"),
        ("0 0.5 0.5 0 0.2", "must be > 0"),
        ("0 0.95 0.5 0.2 0.2", "outside the image"),
        ("7 0.5 0.5 0.2 0.2", "out of range"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "l.txt"
    path.write_text(f"0 0.5 0.5 0.1 0.1\n\n{line}\n")
    with pytest.raises(DatasetError, match=message) as info:
        read_label_file(path, nc=3)
    assert f"{path}:3:" in str(info.value)


def test_integral_float_class_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "l.txt"
    path.write_text("2.0 0.5 0.5 0.1 0.1\n")
    boxes, classes = read_label_file(path)
    assert classes.tolist() == [2] and boxes.shape == (1, 4)
    boxes, classes = read_label_file(tmp_path / "missing.txt")
    assert boxes.shape == (0, 4) and classes.shape == (0,)


def test_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        read_yolo_dir(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        read_yolo_dir(tmp_path / "empty")
    _image(tmp_path / "bad" / "images" / "a.png", 20, 20)
    (tmp_path / "bad" / "labels").mkdir()
    (tmp_path / "bad" / "labels" / "a.txt").write_text("0 0.5 0.5 0.1\n")
    with pytest.raises(DatasetError, match=r"a\.txt:1:"):
        read_yolo_dir(tmp_path / "bad")
    assert issubclass(DatasetError, ValueError)
