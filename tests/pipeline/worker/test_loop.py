"""Worker batching, stats and the serving loops, driven with in-memory rings, a fake backend and publisher
(the real preprocessor, postprocessor and Transform)."""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from streamdet.pipeline.backends import InputContract
from streamdet.pipeline.postprocess.postprocessor import Postprocessor
from streamdet.pipeline.preprocess.letterbox import CpuPreprocessor
from streamdet.pipeline.stages import Stages
from streamdet.pipeline.types import Frame
from streamdet.pipeline.worker.contract import WorkerSpec
from streamdet.pipeline.worker.gather import BatchGatherer
from streamdet.pipeline.worker.loop import WorkerLoop
from streamdet.pipeline.worker.runner import PipelinedRunner
from streamdet.pipeline.worker.stats import CameraStats
from streamdet.stopflag import StopFlag


@dataclass
class FakeStatus:
    latest_seq: int = 0
    state: str = "streaming"
    reconnects: int = 0
    heartbeat: float = 0.0
    frames_decoded: int = 0
    frames_skipped: int = 0
    frames_behind: int = 0
    decode_ns: int = 0
    last_error: str = ""
    error_time: float = 0.0


@dataclass
class FakeRing:
    """An in-memory ring: latest wins, or every frame in order when ``lossless``."""

    camera: str
    frames: list = field(default_factory=list)
    msg_seq: int = 0
    lossless: bool = False
    counters: FakeStatus = field(default_factory=FakeStatus)
    reads: list = field(default_factory=list)  # per read_next that returned a frame: whether pixels were copied

    def push(self, w: int = 64, h: int = 48, src: tuple[int, int] | None = None) -> None:
        seq = len(self.frames) + 1
        sw, sh = src or (w, h)
        self.frames.append(Frame(self.camera, seq, seq - 1, (seq - 1) / 25, 1000.0 + seq, w, h, sw, sh, "yuv420p",
                                 np.full((h * 3 // 2, w), 128, np.uint8), dropped=0,
                                 not_written=self.not_written()))
        self.counters.frames_decoded += 1
        self.counters.decode_ns += 2_000_000

    def status(self) -> FakeStatus:
        self.counters.latest_seq = len(self.frames)
        return self.counters

    def not_written(self) -> int:
        return self.counters.frames_skipped + self.counters.frames_behind

    def resume_seq(self) -> int:
        return 0 if self.lossless else len(self.frames)

    def read_next(self, after_seq: int, *, pixels: bool = True):
        if len(self.frames) <= after_seq:
            return None
        f = self.frames[after_seq] if self.lossless else self.frames[-1]
        f.dropped = f.seq - after_seq - 1
        self.reads.append(pixels)
        return f if pixels else dataclasses.replace(f, image=np.empty(0, np.uint8))

    def next_message_seq(self) -> int:
        self.msg_seq += 1
        return self.msg_seq

    @property
    def name(self) -> str:
        return f"ring-{self.camera}"


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, dt: float) -> None:
        self.t += max(dt, 1e-4)


def _gatherer(rings, max_batch=8, max_wait_s=0.0, clock=None):
    clock = clock or FakeClock()
    return BatchGatherer(rings, max_batch, max_wait_s, clock=clock, sleep=clock.sleep)


def test_takes_newest_frame_per_camera_and_counts_drops() -> None:
    rings = {c: FakeRing(c) for c in ("a", "b")}
    g = _gatherer(rings)
    assert g.gather() == []
    for _ in range(3):
        rings["a"].push()
    rings["b"].push()
    batch = g.gather()
    assert sorted(f.camera for f in batch) == ["a", "b"]
    fa = next(f for f in batch if f.camera == "a")
    assert fa.seq == 3 and fa.dropped == 2
    assert g.gather() == []  # nothing new


def test_frames_written_before_start_are_not_dropped() -> None:
    ring = FakeRing("a")
    ring.push()
    ring.push()
    g = _gatherer({"a": ring})
    assert g.gather() == []
    ring.push()
    (f,) = g.gather()
    assert f.seq == 3 and f.dropped == 0


def test_max_batch_rotates_so_every_camera_is_served() -> None:
    rings = {f"c{i}": FakeRing(f"c{i}") for i in range(5)}
    g = _gatherer(rings, max_batch=2)
    served: set[str] = set()
    for _ in range(3):
        for r in rings.values():
            r.push()
        batch = g.gather()
        assert len(batch) == 2
        served |= {f.camera for f in batch}
    assert served == set(rings)


def test_waits_up_to_max_wait_for_other_cameras() -> None:
    clock = FakeClock()
    rings = {c: FakeRing(c) for c in ("a", "b")}
    g = _gatherer(rings, max_wait_s=0.01, clock=clock)
    rings["a"].push()
    batch = g.gather()
    assert [f.camera for f in batch] == ["a"]
    assert clock.t >= 0.01  # it waited for b, which never came


def test_lossless_rings_give_every_frame_in_order_even_the_backlog() -> None:
    ring = FakeRing("a", lossless=True)
    for _ in range(3):
        ring.push()
    g = _gatherer({"a": ring})
    seqs = []
    while batch := g.gather():
        seqs += [f.seq for f in batch]
        assert all(f.dropped == 0 for f in batch)
    assert seqs == [1, 2, 3]


def test_camera_stats_summary() -> None:
    s = CameraStats(published=10, overwritten=3, latencies_ms=[10.0, 20.0, 30.0, 40.0])
    out = s.summary(2.0, {"decoded": 20, "skipped": 5, "behind": 1, "decode_ns": 40_000_000})
    assert out["fps"] == 5.0 and out["dropped"] == 9
    assert out["drops"] == {"overwritten": 3, "max_fps": 5, "behind": 1, "unsent": 0, "torn": 0}
    assert out["decoded"] == 20 and out["decode_ms"] == 2.0
    assert out["latency_ms"]["max"] == 40.0 and out["latency_ms"]["p50"] == 25.0
    assert out["latency_ms"]["p99"] == pytest.approx(39.7)
    idle = CameraStats().summary(1.0, {"decoded": 0, "skipped": 0, "behind": 0, "decode_ns": 0})
    assert idle["latency_ms"]["p50"] is None and idle["decode_ms"] is None


class FakeBackend:
    """Returns one box per frame at model-input pixels [10, 20, 110, 120], class 1 ('square')."""

    name = "fake"
    contract = InputContract()
    names = ["circle", "square"]
    stride = 32

    def __init__(self, score: float = 0.9) -> None:
        self.score = score
        self.batches: list[np.ndarray] = []

    def infer(self, batch: np.ndarray) -> torch.Tensor:
        self.batches.append(batch.copy())
        row = torch.tensor([60.0, 70.0, 100.0, 100.0, self.score, 0.0, 1.0])
        return row.repeat(batch.shape[0], 1, 1)

    def close(self) -> None:
        pass


def fake_stages(score: float = 0.9) -> Stages:
    return Stages(preprocessor=CpuPreprocessor(), backend=FakeBackend(score), postprocessor=Postprocessor(),
                  img_size=640)


class FakePublisher:
    def __init__(self) -> None:
        self.sent: list[dict] = []

    def send(self, msg: dict) -> bool:
        self.sent.append(msg)
        return True


def _spec(**kw) -> WorkerSpec:
    from streamdet.config.schema import BatchingConfig, ModelConfig

    args = dict(name="worker-cpu", device="cpu", ring_names={},
                model=ModelConfig.model_construct(weights=Path("x.pt"), img_size=640),  # no file needed
                batching=BatchingConfig(max_batch=kw.pop("max_batch", 4), max_wait_ms=0),
                publish_endpoint="inproc://x", stats_interval_s=5.0)
    args.update(kw)
    return WorkerSpec(**args)


def test_loop_publishes_contract_messages_in_source_pixels() -> None:
    rings = {"a": FakeRing("a"), "b": FakeRing("b")}
    pub = FakePublisher()
    stages = fake_stages()
    loop = WorkerLoop(_spec(), rings, stages, pub)
    rings["a"].push()
    rings["a"].push()
    rings["b"].push(w=64, h=48, src=(128, 96))  # decoder halved an oversize frame
    loop.process(loop.gatherer.gather())
    (batch,) = stages.backend.batches
    assert batch.shape == (2, 3, 480, 640) and batch.dtype == np.uint8  # 64x48 frames letterboxed x10
    assert (batch == 130).all()  # Y=U=V=128, limited range: (128 - 16) * 255/219 = 130.4 -> grey 130
    by_cam = {m["camera"]: m for m in pub.sent}
    a, b = by_cam["a"], by_cam["b"]
    assert a["seq"] == 1 and a["frame"] == 1 and a["dropped"] == 1 and a["v"] == 1
    assert a["detections"][0]["box"] == [1, 2, 11, 12] and a["detections"][0]["label"] == "square"
    assert (b["width"], b["height"]) == (128, 96)
    assert b["detections"][0]["box"] == [2, 4, 22, 24]
    rings["a"].push()
    loop.process(loop.gatherer.gather())
    assert pub.sent[-1]["seq"] == 2  # per-camera counter
    loop.publish_stats()
    stats = pub.sent[-1]
    assert stats["type"] == "stats" and stats["cameras"]["a"]["published"] == 2
    assert stats["cameras"]["a"]["dropped"] == 1 and stats["cameras"]["b"]["published"] == 1
    assert stats["cameras"]["a"]["drops"]["overwritten"] == 1
    assert stats["cameras"]["a"]["decoded"] == 3 and stats["cameras"]["a"]["decode_ms"] == 2.0
    worker = stats["worker"]
    assert worker["backend"] == "fake" and worker["batches"] == 2 and worker["frames"] == 3
    assert set(worker["stage_ms"]) == {"gather", "preprocess", "inference", "postprocess", "publish", "track"}
    assert worker["stage_ms"]["track"] == 0.0 and worker["tracked_frames"] == 0  # no camera tracks
    assert all(v is not None and v >= 0 for v in worker["stage_ms"].values())


def test_drops_by_reason_come_from_the_ring_counters() -> None:
    ring = FakeRing("a")
    pub = FakePublisher()
    loop = WorkerLoop(_spec(), {"a": ring}, fake_stages(), pub)
    ring.push()
    ring.counters.frames_skipped += 4  # max_fps
    ring.counters.frames_behind += 2  # paced file behind schedule
    loop.process(loop.gatherer.gather())
    loop.publish_stats()
    cam = pub.sent[-1]["cameras"]["a"]
    assert cam["drops"] == {"overwritten": 0, "max_fps": 4, "behind": 2, "unsent": 0, "torn": 0} and cam["dropped"] == 6
    loop.publish_stats()  # the next interval counts only what happened since
    drops = pub.sent[-1]["cameras"]["a"]["drops"]
    assert drops == {"overwritten": 0, "max_fps": 0, "behind": 0, "unsent": 0, "torn": 0}


def test_detection_dropped_counts_every_frame_not_published_whatever_the_reason() -> None:
    class Flaky(FakePublisher):
        refuse = False

        def send(self, msg: dict) -> bool:
            return False if self.refuse else super().send(msg)

    ring = FakeRing("a")
    pub = Flaky()
    loop = WorkerLoop(_spec(), {"a": ring}, fake_stages(), pub)
    ring.push()
    loop.process(loop.gatherer.gather())
    assert pub.sent[-1]["dropped"] == 0
    ring.counters.frames_skipped += 3  # max_fps skipped three frames (never written)
    ring.push()
    ring.counters.frames_behind += 1  # a paced frame written too late to count
    ring.push()
    ring.push()  # the worker takes only this newest one: two overwritten
    loop.process(loop.gatherer.gather())
    assert pub.sent[-1]["dropped"] == 3 + 1 + 2
    pub.refuse = True  # the next frame is inferred but cannot be sent
    ring.push()
    loop.process(loop.gatherer.gather())
    pub.refuse = False
    ring.push()
    loop.process(loop.gatherer.gather())
    assert pub.sent[-1]["dropped"] == 1
    loop.publish_stats()
    drops = pub.sent[-1]["cameras"]["a"]["drops"]
    assert drops == {"overwritten": 2, "max_fps": 3, "behind": 1, "unsent": 1, "torn": 0}


def test_a_message_that_breaks_the_contract_is_skipped_not_fatal() -> None:
    class ValidatingPublisher(FakePublisher):
        def send(self, msg: dict) -> bool:
            from streamdet.wire import encode

            encode(msg)  # raises WireError on a non-finite score, as the real Publisher does
            return super().send(msg)

    class NaNPost(Postprocessor):
        def __call__(self, pred, transforms):
            return [np.array([[1, 2, 11, 12, np.nan, 1]], np.float32) for _ in transforms]

    rings = {"a": FakeRing("a")}
    pub = ValidatingPublisher()
    stages = Stages(preprocessor=CpuPreprocessor(), backend=FakeBackend(), postprocessor=NaNPost(), img_size=640)
    loop = WorkerLoop(_spec(), rings, stages, pub)
    rings["a"].push()
    loop.process(loop.gatherer.gather())
    assert pub.sent == [] and loop.stats["a"].published == 0


def test_pipelined_runner_publishes_every_lossless_frame_once_in_order() -> None:
    rings = {c: FakeRing(c, lossless=True) for c in ("a", "b")}
    for ring in rings.values():
        for _ in range(7):
            ring.push()
    pub = FakePublisher()
    loop = WorkerLoop(_spec(max_batch=2), rings, fake_stages(), pub)
    stop = StopFlag(mp.get_context("spawn"))

    def stop_when_done() -> None:
        deadline = time.monotonic() + 20
        while sum(m["type"] == "detections" for m in pub.sent) < 14 and time.monotonic() < deadline:
            time.sleep(0.01)
        stop.set()

    threading.Thread(target=stop_when_done, daemon=True).start()
    PipelinedRunner(loop).run(stop)
    dets = [m for m in pub.sent if m["type"] == "detections"]
    for cam in rings:
        assert [m["frame"] for m in dets if m["camera"] == cam] == list(range(7))


def test_pipelined_runner_reraises_a_stage_error() -> None:
    class Broken(FakeBackend):
        def infer(self, batch):
            raise RuntimeError("backend exploded")

    ring = FakeRing("a", lossless=True)
    ring.push()
    stages = Stages(preprocessor=CpuPreprocessor(), backend=Broken(), postprocessor=Postprocessor(), img_size=640)
    loop = WorkerLoop(_spec(), {"a": ring}, stages, FakePublisher())
    with pytest.raises(RuntimeError, match="exploded"):
        PipelinedRunner(loop).run(StopFlag(mp.get_context("spawn")))


def test_two_lanes_run_concurrently_and_publish_in_order() -> None:
    class SlowOddBatches(FakeBackend):
        """Odd calls take longer, so a second lane overtakes the first unless order is restored."""

        def __init__(self, calls: list[int]) -> None:
            super().__init__()
            self.calls = calls

        def infer(self, batch):
            self.calls.append(threading.get_ident())
            time.sleep(0.03 if len(self.calls) % 2 else 0.001)
            return super().infer(batch)

    calls: list[int] = []
    ring = FakeRing("a", lossless=True)
    for _ in range(12):
        ring.push()
    stages = Stages(CpuPreprocessor(), SlowOddBatches(calls), Postprocessor(), img_size=640,
                    extra_backends=[SlowOddBatches(calls)])
    pub = FakePublisher()
    loop = WorkerLoop(_spec(max_batch=1), {"a": ring}, stages, pub)
    stop = StopFlag(mp.get_context("spawn"))

    def stop_when_done() -> None:
        deadline = time.monotonic() + 20
        while sum(m["type"] == "detections" for m in pub.sent) < 12 and time.monotonic() < deadline:
            time.sleep(0.01)
        stop.set()

    threading.Thread(target=stop_when_done, daemon=True).start()
    PipelinedRunner(loop, lanes=2).run(stop)
    assert [m["frame"] for m in pub.sent if m["type"] == "detections"] == list(range(12))
    assert len(set(calls)) == 2  # both lanes' threads inferred


def test_runner_heartbeats_only_while_no_lane_is_stuck() -> None:
    runner = PipelinedRunner(WorkerLoop(_spec(), {}, fake_stages(), FakePublisher()), lanes=2)
    assert not runner.stuck(now=100.0)
    runner._lane_started[1] = 100.0
    assert not runner.stuck(now=101.0) and runner.stuck(now=100.0 + 31.0)


def test_lanes_split_the_cameras_into_smaller_batches() -> None:
    from streamdet.pipeline.worker.gather import lane_batch

    assert lane_batch(8, 7, 2) == 4 and lane_batch(8, 4, 2) == 2
    assert lane_batch(8, 30, 2) == 8  # never above max_batch
    assert lane_batch(8, 1, 4) == 1 and lane_batch(4, 3, 1) == 3
