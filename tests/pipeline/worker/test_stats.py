"""The worker's stats message: per-camera inferred count and latency histogram, batch sizes, queue
depth, and GPU memory only on a CUDA device whose context torch already created."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from streamdet.pipeline.worker.loop import PreparedBatch, WorkerLoop
from streamdet.pipeline.worker.runner import PipelinedRunner
from streamdet.pipeline.worker.stats import (
    LATENCY_BUCKETS_MS,
    CameraStats,
    StageTimer,
    gpu_memory,
    latency_histogram,
)
from streamdet.wire import decode, encode
from tests.pipeline.worker.test_loop import FakePublisher, FakeRing, _spec, fake_stages

NO_RING_CHANGE = {"decoded": 0, "skipped": 0, "behind": 0, "decode_ns": 0}


def test_latency_histogram_is_cumulative_over_fixed_edges() -> None:
    hist = latency_histogram(np.array([5.0, 10.0, 12.0, 120.0, 2500.0]))
    assert hist["le"] == [10, 25, 50, 100, 150, 200, 300, 500, 1000, 2000] == list(LATENCY_BUCKETS_MS)
    assert hist["counts"] == [2, 3, 3, 3, 4, 4, 4, 4, 4, 4]  # an edge is inclusive (le); 2500 only in +Inf
    assert hist["count"] == 5 and hist["sum"] == 2647.0


def test_camera_stats_carry_inferred_and_the_histogram() -> None:
    s = CameraStats(published=2, overwritten=1, latencies_ms=[30.0, 60.0, 700.0])
    out = s.summary(1.0, NO_RING_CHANGE)
    assert out["inferred"] == 3 and out["published"] == 2  # one inferred frame was not sent
    assert out["latency_hist_ms"]["counts"] == [0, 0, 1, 2, 2, 2, 2, 2, 3, 3]
    assert out["latency_hist_ms"]["sum"] == 790.0 and out["latency_hist_ms"]["count"] == 3
    assert out["latency_ms"]["max"] == 700.0  # the percentiles stay beside it
    idle = CameraStats().summary(1.0, NO_RING_CHANGE)
    assert idle["inferred"] == 0
    assert idle["latency_hist_ms"] == {"le": list(LATENCY_BUCKETS_MS), "counts": [0] * 10, "sum": 0.0, "count": 0}


def test_stage_timer_counts_batch_sizes() -> None:
    t = StageTimer()
    for frames in (3, 1, 3, 4):
        t.add("inference", 0.01, frames=frames)
    t.add("publish", 0.02)  # not a batch
    out = t.summary()
    assert out["batches"] == 4 and out["frames"] == 11 and out["batch_size_mean"] == 2.75
    assert out["batch_size_max"] == 4 and out["batch_sizes"] == {"1": 1, "3": 2, "4": 1}
    t.reset()
    assert t.summary()["batch_size_max"] is None and t.summary()["batch_sizes"] == {}


class FakeCuda:
    def __init__(self, initialised: bool) -> None:
        self.initialised = initialised
        self.asked: list[str] = []

    def is_initialized(self) -> bool:
        return self.initialised

    def memory_allocated(self, device: str) -> int:
        self.asked.append(device)
        return 1000

    def memory_reserved(self, device: str) -> int:
        self.asked.append(device)
        return 4096


def test_gpu_memory_only_on_an_initialised_cuda_device(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = FakeCuda(initialised=False)
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    assert gpu_memory("cpu") is None
    assert gpu_memory("cuda:1") is None and cuda.asked == []  # asking would create a CUDA context
    cuda.initialised = True
    assert gpu_memory("cuda:1") == {"allocated": 1000, "reserved": 4096} and cuda.asked == ["cuda:1", "cuda:1"]
    assert gpu_memory("cpu") is None


def test_stats_message_carries_the_new_figures_and_stays_v1() -> None:
    ring = FakeRing("a")
    pub = FakePublisher()
    loop = WorkerLoop(_spec(stats_interval_s=0.0), {"a": ring}, fake_stages(), pub)
    ring.push()
    loop.process(loop.gatherer.gather())
    loop.maybe_publish_stats(lambda: {"prepared": 2, "inferred": 0})
    msg = decode(encode(pub.sent[-1]))  # what a subscriber receives
    assert msg["v"] == 1
    cam, worker = msg["cameras"]["a"], msg["worker"]
    assert cam["inferred"] == 1 and cam["latency_hist_ms"]["count"] == 1
    assert worker["queue_depth"] == {"prepared": 2, "inferred": 0}
    assert worker["batch_sizes"] == {"1": 1} and worker["batch_size_max"] == 1
    assert "gpu_memory_bytes" not in worker  # a CPU worker
    loop.publish_stats()  # the sequential loop has no queues
    assert "queue_depth" not in pub.sent[-1]["worker"]


def test_stats_count_published_objects_and_carry_the_decoders_last_error() -> None:
    ring = FakeRing("a")
    pub = FakePublisher()
    loop = WorkerLoop(_spec(stats_interval_s=0.0), {"a": ring}, fake_stages(), pub)
    for _ in range(3):
        ring.push()
        loop.process(loop.gatherer.gather())
    objects = sum(len(m["detections"]) for m in pub.sent)
    loop.publish_stats()
    cam = decode(encode(pub.sent[-1]))["cameras"]["a"]
    assert cam["published"] == 3 and cam["objects"] == objects == 3  # the fake backend finds one box per frame
    assert "last_error" not in cam and "last_error_ts" not in cam  # no error recorded yet
    ring.counters.last_error, ring.counters.error_time = "connection refused", 1700000000.25
    loop.publish_stats()
    cam = pub.sent[-1]["cameras"]["a"]
    assert cam["objects"] == 0  # a new interval
    assert cam["last_error"] == "connection refused" and cam["last_error_ts"] == 1700000000.25


def test_runner_counts_frames_waiting_in_its_queues() -> None:
    runner = PipelinedRunner(types.SimpleNamespace(), lanes=2)
    assert runner.frames_waiting() == {"prepared": 0, "inferred": 0}
    runner.prepared.put((0, PreparedBatch(frames=[object()] * 3, batch=np.zeros(1), transforms=[])))
    runner.inferred.put((1, types.SimpleNamespace(frames=[object()] * 2)))
    runner.inferred.put(PipelinedRunner._END)
    assert runner.frames_waiting() == {"prepared": 3, "inferred": 2}
