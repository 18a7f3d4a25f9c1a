"""tools/gpu_verify_kernel.py on the CPU: real decoded frames as the daemon's decoder packs them, and
the exactness check that compares a preprocessor with the CPU path bit for bit (the CUDA
preprocessor replaced by the CPU path itself, faithful or with one value changed)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

TOOLS = Path(__file__).resolve().parents[2] / "tools"
sys.path.insert(0, str(TOOLS))

import gpu_verify_kernel  # noqa: E402
import gpu_verify_media  # noqa: E402

pytest.importorskip("av")


class CpuAsDevice:
    """The CudaPreprocessor call seam, answered by the CPU path; ``spoil`` changes one output value."""

    def __init__(self, spoil: str | None = None) -> None:
        self.spoil = spoil

    def __call__(self, images: list[Any], hw: tuple[int, int], out: Any = None, *, dtype: str | None = None) -> Any:
        from streamdet.pipeline.backends.model_input import to_model_input
        from streamdet.pipeline.preprocess.letterbox import CpuPreprocessor

        u8 = CpuPreprocessor()(images, hw)
        if isinstance(out, np.ndarray):
            out[: len(images)] = u8
            if self.spoil == "uint8":
                out[0, 0, 0, 0] ^= 1
            return out[: len(images)]
        t = to_model_input(u8, "cpu", half=dtype == "float16")
        if self.spoil == dtype:
            t[0, 1, 2, 3] = torch.nextafter(t[0, 1, 2, 3], torch.tensor(2.0, dtype=t.dtype))
        return t


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    clip = gpu_verify_media.ensure_clip(tmp_path_factory.mktemp("clip"), gpu_verify_media.CPU_SMOKE)
    return gpu_verify_kernel.decoded_images(clip, 3, nvdec=False)


def test_decoded_images_are_the_rings_frames(images: list[Any]) -> None:
    p = gpu_verify_media.CPU_SMOKE
    assert len(images) == 3
    assert {(im.pix_fmt, im.width, im.height) for im in images} == {("yuv420p", p.width, p.height)}
    assert not np.array_equal(images[0].data, images[2].data)  # the clip moves


@pytest.mark.parametrize("spoil", [None, "uint8", "float16", "float32"])
def test_exactness_counts_every_changed_value(monkeypatch: pytest.MonkeyPatch, images: list[Any],
                                              spoil: str | None) -> None:
    monkeypatch.setattr(gpu_verify_kernel, "DEV", "cpu")
    row = gpu_verify_kernel.exactness(torch, CpuAsDevice(spoil), images)
    expected = {"uint8_mismatches": 0, "fp16_mismatches": 0, "fp32_mismatches": 0}
    if spoil is not None:
        expected[{"uint8": "uint8", "float16": "fp16", "float32": "fp32"}[spoil] + "_mismatches"] = 1
    assert {k: row[k] for k in expected} == expected
    assert row["identical"] is (spoil is None)


def test_mismatches_compare_bits() -> None:
    a = torch.tensor([0.0, float("nan"), 1.0], dtype=torch.float16)
    b = torch.tensor([-0.0, float("nan"), 1.0], dtype=torch.float16)
    assert gpu_verify_kernel.mismatches(torch, a, b) == 1  # -0.0 == 0.0 as numbers, not as bits; NaN bits equal
    with pytest.raises(ValueError, match="differ"):
        gpu_verify_kernel.mismatches(torch, a, a.float())
