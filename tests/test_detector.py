"""Detector end to end against the official detect.py-style fixtures (letterbox, fused model,
NMS, scale_boxes), and batching semantics."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from streamdet.detector import Detector

E2E = ["img1_1280x720", "img3_500x377", "img4_377x500"]


@pytest.fixture(scope="module")
def weights(fixtures_dir: Path) -> Path:
    return fixtures_dir / "yolov5" / "yolov5n_random.pt"


def _image(fixtures_dir: Path, name: str) -> np.ndarray:
    img = cv2.imread(str(fixtures_dir / "letterbox" / f"{name}.png"), cv2.IMREAD_COLOR)
    assert img is not None
    return img


@pytest.mark.parametrize("name", E2E)
@pytest.mark.parametrize("conf", [0.25, 0.001])
def test_matches_official_pipeline(fixtures_dir: Path, weights: Path, name: str, conf: float) -> None:
    ref = np.load(fixtures_dir / "yolov5" / f"yolov5n_e2e_{name}.npz")
    img = _image(fixtures_dir, name)
    det = Detector(weights, conf_thres=conf, iou_thres=float(ref["iou_thres"]), max_det=int(ref["max_det"]))
    assert det.input_shape([img]) == tuple(int(v) for v in ref["model_input_shape"][2:])
    (out,) = det([img])
    expected = ref[f"det_scaled_c{conf}"]
    assert out.dtype == np.float32 and out.shape == expected.shape
    # The reference rounds the scaled boxes (detect.py); ours stay sub-pixel.
    np.testing.assert_allclose(np.round(out[:, :4]), expected[:, :4], atol=1.0)
    np.testing.assert_allclose(out[:, :4], expected[:, :4], atol=0.5 + 0.05)
    np.testing.assert_allclose(out[:, 4], expected[:, 4], atol=1e-5)
    np.testing.assert_array_equal(out[:, 5], expected[:, 5])


def test_img3_has_detections_at_low_conf(fixtures_dir: Path, weights: Path) -> None:
    """Guards the parametrised test above against comparing empty arrays only."""
    ref = np.load(fixtures_dir / "yolov5" / "yolov5n_e2e_img3_500x377.npz")
    assert len(ref["det_scaled_c0.001"]) == 9


def test_batch_equals_single_frames(fixtures_dir: Path, weights: Path) -> None:
    """Same-size frames in one batch give the detections each gives alone."""
    det = Detector(weights, conf_thres=0.001, max_det=1000)
    img = _image(fixtures_dir, "img3_500x377")
    frames = [img, np.ascontiguousarray(img[:, ::-1]), img]
    together = det(frames)
    for frame, batched in zip(frames, together, strict=True):
        (alone,) = det([frame])
        assert batched.shape == alone.shape
        np.testing.assert_allclose(batched, alone, atol=1e-3)


def test_mixed_sizes_share_one_input_and_map_back(fixtures_dir: Path, weights: Path) -> None:
    det = Detector(weights, conf_thres=0.001, max_det=1000)
    frames = [_image(fixtures_dir, n) for n in E2E]
    assert det.input_shape(frames) == (640, 640)
    outs = det(frames)
    assert sum(len(o) for o in outs) > 0
    for frame, out in zip(frames, outs, strict=True):
        h, w = frame.shape[:2]
        assert np.all(out[:, [0, 2]] >= 0) and np.all(out[:, [0, 2]] <= w)
        assert np.all(out[:, [1, 3]] >= 0) and np.all(out[:, [1, 3]] <= h)


def test_names_and_validation(weights: Path) -> None:
    det = Detector(weights)
    assert len(det.names) == 80 and det.names[0] == "person"
    assert det([]) == []
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        det([np.zeros((10, 10), np.uint8)])
    with pytest.raises(ValueError, match="multiple of the model stride"):
        Detector(weights, img_size=100)
    with pytest.raises(ValueError, match="CUDA"):
        Detector(weights, half=True)


def test_classes_filter(fixtures_dir: Path, weights: Path) -> None:
    img = _image(fixtures_dir, "img3_500x377")
    (out,) = Detector(weights, conf_thres=0.001, classes=[28], max_det=1000)([img])
    assert len(out) > 0 and set(out[:, 5].tolist()) == {28.0}


def test_keywords_and_options_make_the_same_detector(fixtures_dir: Path, weights: Path) -> None:
    """Detector's keywords are one InferenceOptions; from_options with that value detects the same."""
    from streamdet.pipeline.settings import InferenceOptions, NmsSettings

    by_keywords = Detector(weights, img_size=320, conf_thres=0.05, iou_thres=0.5, max_det=20, classes=[0, 2])
    want = InferenceOptions(weights, img_size=320, backend="torch", nms=NmsSettings(0.05, 0.5, (0, 2), 20))
    assert by_keywords.options == want
    by_options = Detector.from_options(want)
    assert by_options.stages.postprocessor.settings == want.nms
    frame = _image(fixtures_dir, E2E[0])
    for a, b in zip(by_keywords([frame]), by_options([frame]), strict=True):
        np.testing.assert_array_equal(a, b)
