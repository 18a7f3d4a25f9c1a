"""GraphRunner's policy (sizes, padding, copies, fall-backs) on CPU with fake graphs; the real capture on a GPU."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from streamdet.pipeline.backends import cuda_graphs as cg
from streamdet.pipeline.backends.model_input import to_model_input
from streamdet.pipeline.backends.torch_backend import TorchBackend
from tests.conftest import REPO

DEMO = REPO / "configs" / "demo" / "shapes_yolov5n.pt"
SHAPE = (3, 4, 5)


class FakeGraph:
    """Records forward on its static input at capture; replay reruns it and snapshots the input."""

    def __init__(self, forward: cg.Forward, static: torch.Tensor) -> None:
        self.forward, self.static = forward, static
        self.output = forward(static).clone()
        self.inputs: list[torch.Tensor] = []

    def replay(self) -> None:
        self.inputs.append(self.static.clone())
        self.output.copy_(self.forward(self.static))


class Recorder:
    """A capture function that keeps its graphs and can fail at one size."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.graphs: dict[int, FakeGraph] = {}
        self.fail_at = fail_at

    def __call__(self, forward: cg.Forward, static: torch.Tensor) -> FakeGraph:
        if static.shape[0] == self.fail_at:
            raise RuntimeError("operation not permitted when stream is capturing")
        self.graphs[static.shape[0]] = graph = FakeGraph(forward, static)
        return graph


def per_row(t: torch.Tensor) -> torch.Tensor:
    """A forward pass whose rows depend on their own input row only (like a detector's)."""
    return torch.stack((t.flatten(1).sum(1), t.flatten(1).amax(1) * 2), 1)


def runner(max_batch: int = 12, **kw) -> cg.GraphRunner:
    return cg.GraphRunner(per_row, sample_shape=SHAPE, dtype=torch.float32, device="cpu", max_batch=max_batch, **kw)


def test_capture_sizes() -> None:
    assert cg.capture_sizes(64) == (1, 2, 4, 8, 16, 32, 64)
    assert cg.capture_sizes(12) == (1, 2, 4, 8, 12)
    assert cg.capture_sizes(100) == (1, 2, 4, 8, 16, 32, 64, 100)
    assert cg.capture_sizes(1) == (1,)
    assert cg.capture_sizes(6, [4, 2, 2]) == (2, 4, 6)
    with pytest.raises(ValueError, match="max_batch"):
        cg.capture_sizes(0)
    with pytest.raises(ValueError, match="sizes"):
        cg.capture_sizes(8, [0, 4])


def test_one_graph_per_size_and_the_smallest_that_fits() -> None:
    rec = Recorder()
    r = runner(capture=rec)
    assert r.mode == "pending"
    assert r.warmup() == "graphs" and r.mode == "graphs"
    assert sorted(rec.graphs) == [1, 2, 4, 8, 12]
    assert [r.size_for(b) for b in (1, 2, 3, 4, 5, 8, 9, 12)] == [1, 2, 4, 4, 8, 8, 12, 12]
    for bad in (0, 13):
        with pytest.raises(ValueError, match="1..12"):
            r.size_for(bad)
    x = torch.rand(3, *SHAPE)
    out = r(x)
    assert len(rec.graphs[4].inputs) == 1 and not any(g.inputs for s, g in rec.graphs.items() if s != 4)
    torch.testing.assert_close(out, per_row(x), rtol=0, atol=0)


def test_padding_rows_are_zero_and_dropped() -> None:
    rec = Recorder()
    r = runner(capture=rec)
    r.warmup()
    r(torch.full((7, *SHAPE), 5.0))  # fills 7 of the 8 rows of size 8
    x = torch.rand(5, *SHAPE) + 1
    out = r(x)
    seen = rec.graphs[8].inputs[-1]
    assert torch.equal(seen[:5], x)
    assert torch.count_nonzero(seen[5:]) == 0  # the previous batch's rows were cleared
    assert out.shape == (5, 2)
    assert torch.equal(out, per_row(x))


def test_output_is_a_copy() -> None:
    r = runner(capture=Recorder())
    r.warmup()
    first = r(torch.ones(2, *SHAPE))
    kept = first.clone()
    r(torch.full((2, *SHAPE), 3.0))  # replays the same graph, overwriting its static output
    assert torch.equal(first, kept)


def test_capture_failure_falls_back_to_eager(caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder(fail_at=4)
    r = runner(capture=rec)
    with caplog.at_level(logging.INFO, logger=cg.__name__):
        assert r.warmup() == "eager"
    assert [entry.levelname for entry in caplog.records] == ["WARNING"]
    assert "capture failed" in caplog.text and "RuntimeError" in caplog.text
    x = torch.rand(3, *SHAPE)
    assert torch.equal(r(x), per_row(x))
    assert not any(g.inputs for g in rec.graphs.values())  # nothing replays after the fall-back


@pytest.mark.parametrize(("graph_s", "eager_s", "mode"), [(0.001, 0.004, "graphs"), (0.004, 0.004, "eager"),
                                                         (0.005, 0.004, "eager")])
def test_graphs_kept_only_when_faster(graph_s: float, eager_s: float, mode: str) -> None:
    rec = Recorder()
    calls: list[str] = []

    def timer(thunk) -> float:
        calls.append("graph" if getattr(thunk, "__self__", None) is rec.graphs[12] else "eager")
        return graph_s if calls[-1] == "graph" else eager_s

    r = runner(capture=rec, timer=timer)
    assert r.warmup() == mode
    assert sorted(calls) == ["eager", "graph"]  # both measured at the largest size
    x = torch.rand(2, *SHAPE)
    assert torch.equal(r(x), per_row(x))
    assert bool(rec.graphs[2].inputs) == (mode == "graphs")


def test_bad_calls() -> None:
    r = runner(capture=Recorder())
    with pytest.raises(RuntimeError, match="warmup"):
        r(torch.rand(1, *SHAPE))
    r.warmup()
    for bad in (torch.rand(1, 3, 4, 6), torch.rand(1, *SHAPE).double(), torch.rand(2, 4, 5)):
        with pytest.raises(ValueError, match="expected"):
            r(bad)
    with pytest.raises(ValueError, match="1..12"):
        r(torch.rand(13, *SHAPE))


def shapes_input(b: int) -> torch.Tensor:
    rng = np.random.default_rng(b)
    return to_model_input(rng.integers(0, 256, (b, 3, 64, 96), dtype=np.uint8), "cpu")


@pytest.mark.parametrize("channels_last", [False, True])
def test_for_backend_runs_the_backends_model(channels_last: bool) -> None:
    be = TorchBackend(DEMO, channels_last=channels_last)
    rec = Recorder()
    r = cg.for_backend(be, (64, 96), max_batch=4, capture=rec)
    assert r.warmup() == "graphs" and sorted(rec.graphs) == [1, 2, 4]
    assert rec.graphs[4].static.is_contiguous(memory_format=torch.channels_last) == channels_last
    x = shapes_input(3)
    # padded to 4 rows: the same predictions up to float32 rounding of a different batch size
    torch.testing.assert_close(r(x), be.infer(x), rtol=1e-4, atol=1e-3)
    be.close()
    with pytest.raises(RuntimeError, match="closed"):
        cg.for_backend(be, (64, 96), max_batch=4)


@pytest.mark.gpu
def test_real_cuda_graphs_match_eager() -> None:
    be = TorchBackend(DEMO, device="cuda:0", half=True)
    r = cg.for_backend(be, (64, 96), max_batch=8)
    assert r.warmup() == "graphs"
    for b in (1, 3, 8):
        x = shapes_input(b).cuda().half()
        torch.testing.assert_close(r(x), be.infer(x), rtol=1e-2, atol=1e-2)
    timed = cg.for_backend(be, (64, 96), max_batch=8, timer=cg.cuda_timer)
    assert timed.warmup() in ("graphs", "eager")
