"""``model.preprocess``: which feed a worker runs, and the start-up self-check that guards the device feed."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from streamdet.pipeline.cuda.emulation import EmulatedCuda
from streamdet.pipeline.settings import InferenceOptions
from streamdet.pipeline.stages import Stages, build_stages
from streamdet.pipeline.worker.device_feed import DeviceFeed
from streamdet.pipeline.worker.feed import HostFeed
from streamdet.pipeline.worker.feed_choice import FeedUnavailable, choose_feed, device_feed_obstacle
from streamdet.pipeline.worker.selfcheck import CHECK_FRAMES, self_check, synthetic_images

DEMO = Path(__file__).resolve().parents[3] / "configs" / "demo" / "shapes_yolov5n.pt"


@pytest.fixture(scope="module")
def stages() -> Iterator[Stages]:
    st = build_stages(InferenceOptions(DEMO, device="cpu", backend="torch", img_size=320, threads=1))
    yield st
    st.close()


class OffByOneKernel(EmulatedCuda):
    """An emulated device whose kernel is wrong in one byte of every batch (a broken driver or NVRTC)."""

    def launch_preprocess(self, frames: Any, input_hw: tuple[int, int], out: torch.Tensor, stream: Any) -> None:
        super().launch_preprocess(frames, input_hw, out, stream)
        self.submit(stream, lambda: out.view(-1)[:1].add_(1))


class BrokenStart(EmulatedCuda):
    def compile(self) -> None:
        raise RuntimeError("nvrtc: error: invalid value for --gpu-architecture")


def choose(mode: str, stages: Stages, factory: Any = EmulatedCuda, device: str = "cpu") -> Any:
    return choose_feed("worker-test", mode, device, stages, max_batch=2, warmup_hw=(480, 640),
                       runtime_factory=None if factory is None else (lambda _device: factory(seed=1)))


def test_self_check_frames_cover_every_format_and_colour() -> None:
    formats = {f[0] for f in CHECK_FRAMES}
    colours = {(f[3], f[4]) for f in CHECK_FRAMES}
    assert formats == {"yuv420p", "nv12", "bgr24"}
    assert colours == {(m, r) for m in ("bt601", "bt709") for r in ("limited", "full")}
    assert any(w % 2 or h % 2 for _, w, h, _, _ in CHECK_FRAMES)  # odd sizes (BGR)
    assert [im.hw for im in synthetic_images()] == [(h, w) for _, w, h, _, _ in CHECK_FRAMES]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_self_check_passes_on_a_faithful_device(stages: Stages, dtype: str) -> None:
    with EmulatedCuda(seed=1) as cuda:
        assert self_check(cuda, stages.input_shape, dtype) is None


def test_self_check_names_the_first_difference(stages: Stages) -> None:
    with OffByOneKernel(seed=1) as cuda:
        reason = self_check(cuda, stages.input_shape, "float32")
    assert reason is not None and "uint8 output differs" in reason and "yuv420p 1280x720 bt709/limited" in reason


def test_cpu_mode_is_the_host_feed(stages: Stages) -> None:
    feed = choose("cpu", stages)
    assert isinstance(feed, HostFeed) and feed.stats()["preprocess"] == "cpu"


def test_auto_uses_the_device_feed_when_the_self_check_passes(stages: Stages, caplog) -> None:
    with caplog.at_level(logging.INFO, "streamdet.worker"):
        feed = choose("auto", stages)
    try:
        assert isinstance(feed, DeviceFeed)
        assert feed.stats() == {"preprocess": "cuda", "pinned": True, "graphs": "eager", "torn": 0}
        assert any("preprocess: cuda (self-check passed" in r.getMessage() for r in caplog.records)
    finally:
        feed.close()


def test_auto_falls_back_to_cpu_with_one_line_naming_why(stages: Stages, caplog) -> None:
    with caplog.at_level(logging.INFO, "streamdet.worker"):
        feed = choose("auto", stages, OffByOneKernel)
    assert isinstance(feed, HostFeed)
    lines = [r.getMessage() for r in caplog.records if "preprocess: cpu" in r.getMessage()]
    assert len(lines) == 1 and "self-check failed" in lines[0] and "differs" in lines[0]
    assert feed.reason is not None and "self-check failed" in feed.reason


def test_cuda_that_fails_the_self_check_or_cannot_start_is_refused(stages: Stages) -> None:
    with pytest.raises(FeedUnavailable, match="model.preprocess: cuda: the start-up self-check failed"):
        choose("cuda", stages, OffByOneKernel)
    with pytest.raises(FeedUnavailable, match="cannot start: RuntimeError: nvrtc"):
        choose("cuda", stages, BrokenStart)


def test_without_an_emulation_a_cpu_worker_cannot_use_the_device_feed(stages: Stages, caplog) -> None:
    with caplog.at_level(logging.INFO, "streamdet.worker"):
        feed = choose("auto", stages, factory=None)
    assert isinstance(feed, HostFeed) and "needs a CUDA device" in (feed.reason or "")
    with pytest.raises(FeedUnavailable, match="CUDA device"):
        choose("cuda", stages, factory=None)


def test_obstacles() -> None:
    assert "CUDA device" in (device_feed_obstacle("cpu", "torch") or "")
    assert "torch backend" in (device_feed_obstacle("cuda:0", "onnxruntime", emulated=True) or "")
    assert device_feed_obstacle("cpu", "torch", emulated=True) is None
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        choose_feed("w", "gpu", "cpu", None, max_batch=1, warmup_hw=(1, 1))  # type: ignore[arg-type]
