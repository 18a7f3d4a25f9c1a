"""The composed stages (preprocessor -> backend -> postprocessor) behind the worker and Detector."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from streamdet.datasets.shapes import random_frame
from streamdet.detector import Detector
from streamdet.pipeline.backends import InputContract
from streamdet.pipeline.postprocess.postprocessor import Postprocessor
from streamdet.pipeline.preprocess.letterbox import CpuPreprocessor
from streamdet.pipeline.registry import ImplementationUnavailable, Registry, UnknownImplementation
from streamdet.pipeline.settings import InferenceOptions, NmsSettings
from streamdet.pipeline.stages import PREPROCESSORS, Stages, build_stages
from streamdet.pipeline.types import Image

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "configs" / "demo" / "shapes_yolov5n.pt"


def bgr_to_i420(bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)


@pytest.fixture(scope="module")
def demo_frame() -> np.ndarray:
    return random_frame(1280, 720, np.random.default_rng(11)).image


@pytest.fixture(scope="module")
def torch_stages() -> Stages:
    return build_stages(InferenceOptions(DEMO, backend="torch", img_size=416, nms=NmsSettings(conf_thres=0.25)))


def test_yuv_frame_gives_the_detections_of_its_bgr_conversion(torch_stages: Stages, demo_frame: np.ndarray) -> None:
    yuv = bgr_to_i420(demo_frame)
    bgr = cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR_I420)  # the reference: OpenCV's conversion, then letterbox
    (from_yuv,) = torch_stages([Image(yuv, "yuv420p")])
    (from_bgr,) = torch_stages([Image.bgr(bgr)])
    assert len(from_yuv) >= 2  # the demo model sees the shapes
    np.testing.assert_array_equal(from_yuv, from_bgr)  # identical model input -> identical detections


def test_downscaled_frames_report_source_pixels(torch_stages: Stages, demo_frame: np.ndarray) -> None:
    small = cv2.resize(demo_frame, (640, 360), interpolation=cv2.INTER_AREA)
    batch, transforms = torch_stages.preprocess([Image.bgr(small)], src_hws=[(720, 1280)])
    (dets,) = torch_stages.postprocess(torch_stages.infer(batch), transforms)
    (dets_small,) = torch_stages([Image.bgr(small)])
    assert len(dets) == len(dets_small) > 0
    np.testing.assert_allclose(dets[:, :4], np.minimum(dets_small[:, :4] * 2, [1280, 720, 1280, 720]), atol=1e-3)


def test_detector_is_a_facade_over_the_stages(torch_stages: Stages, demo_frame: np.ndarray) -> None:
    det = Detector(DEMO, img_size=416, conf_thres=0.25)
    assert det.backend == "torch" and det.names == torch_stages.names and det.stride == 32
    np.testing.assert_array_equal(det([demo_frame])[0], torch_stages([Image.bgr(demo_frame)])[0])
    with pytest.raises(ValueError, match="HxWx3 uint8 BGR"):
        det([np.zeros((4, 4), np.uint8)])


def test_fixed_shape_backends_get_their_shape() -> None:
    class Fixed:
        name = "fixed"
        contract = InputContract(dynamic_shape=False, fixed_hw=(320, 320))
        names = ["a"]
        stride = 32

        def infer(self, batch: np.ndarray) -> torch.Tensor:
            self.shape = batch.shape
            return torch.zeros((batch.shape[0], 10, 6))

        def close(self) -> None:
            pass

    backend = Fixed()
    stages = Stages(CpuPreprocessor(), backend, Postprocessor(), img_size=640)  # type: ignore[arg-type]
    out = stages([Image.bgr(np.zeros((720, 1280, 3), np.uint8))])
    assert backend.shape == (1, 3, 320, 320) and out[0].shape == (0, 6)


def test_img_size_must_fit_the_stride() -> None:
    with pytest.raises(ValueError, match="multiple of the model stride"):
        build_stages(InferenceOptions(DEMO, backend="torch", img_size=400))


def test_half_on_cpu_is_refused() -> None:
    with pytest.raises(ValueError, match="CUDA"):
        build_stages(InferenceOptions(DEMO, backend="torch", half=True))


def test_registries_name_what_is_missing() -> None:
    assert PREPROCESSORS.names() == ["cpu", "cuda"]
    with pytest.raises(UnknownImplementation, match="cpu"):
        PREPROCESSORS.resolve("tpu")
    fake = Registry("backend", {"tensorrt": ("tensorrt_not_installed_here:Engine", "tensorrt")})
    with pytest.raises(ImplementationUnavailable, match=r"pip install 'streamdet\[tensorrt\]'"):
        fake.resolve("tensorrt")
