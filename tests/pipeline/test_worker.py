"""Worker batching and the serving loop, driven with in-memory rings, detector and publisher."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from streamdet.pipeline.ring import Frame
from streamdet.pipeline.worker import BatchGatherer, CameraStats, WorkerLoop, WorkerSpec


@dataclass
class FakeStatus:
    latest_seq: int = 0
    state: str = "streaming"
    reconnects: int = 0
    heartbeat: float = 0.0


@dataclass
class FakeRing:
    """Latest-wins ring in memory: read_latest returns only the newest frame."""

    camera: str
    frames: list = field(default_factory=list)
    msg_seq: int = 0

    def push(self, w: int = 64, h: int = 48, src: tuple[int, int] | None = None) -> None:
        seq = len(self.frames) + 1
        sw, sh = src or (w, h)
        self.frames.append(Frame(self.camera, seq, seq - 1, (seq - 1) / 25, 1000.0 + seq, w, h, sw, sh, "bgr24",
                                 np.zeros((h, w, 3), np.uint8), dropped=0))

    def status(self) -> FakeStatus:
        return FakeStatus(latest_seq=len(self.frames))

    def read_latest(self, after_seq: int):
        if len(self.frames) <= after_seq:
            return None
        f = self.frames[-1]
        f.dropped = f.seq - after_seq - 1
        return f

    def next_message_seq(self) -> int:
        self.msg_seq += 1
        return self.msg_seq


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


def test_camera_stats_summary() -> None:
    s = CameraStats(published=10, dropped=3, latencies_ms=[10.0, 20.0, 30.0, 40.0])
    out = s.summary(2.0)
    assert out["fps"] == 5.0 and out["dropped"] == 3
    assert out["latency_ms"]["max"] == 40.0 and out["latency_ms"]["p50"] == 25.0
    assert CameraStats().summary(1.0)["latency_ms"]["p50"] is None


class FakeDetector:
    names = ["circle", "square"]

    def __call__(self, frames):
        return [np.array([[1, 2, 11, 12, 0.9, 1]], np.float32) for _ in frames]


class FakePublisher:
    def __init__(self) -> None:
        self.sent: list[dict] = []

    def send(self, msg: dict) -> bool:
        self.sent.append(msg)
        return True


def _spec() -> WorkerSpec:
    return WorkerSpec(name="worker-cpu", device="cpu", ring_names={}, weights="x.pt", img_size=640,
                      conf_thres=0.25, iou_thres=0.45, max_det=300, classes=None, half=False, max_batch=4,
                      max_wait_ms=0, publish_endpoint="inproc://x", stats_interval_s=5.0)


def test_loop_publishes_contract_messages_in_source_pixels() -> None:
    rings = {"a": FakeRing("a"), "b": FakeRing("b")}
    pub = FakePublisher()
    loop = WorkerLoop(_spec(), rings, FakeDetector(), pub)
    rings["a"].push()
    rings["a"].push()
    rings["b"].push(w=64, h=48, src=(128, 96))  # decoder halved an oversize frame
    loop.process(loop.gatherer.gather())
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


def test_a_message_that_breaks_the_contract_is_skipped_not_fatal() -> None:
    class NaNDetector(FakeDetector):
        def __call__(self, frames):
            return [np.array([[1, 2, 11, 12, np.nan, 1]], np.float32) for _ in frames]

    class ValidatingPublisher(FakePublisher):
        def send(self, msg: dict) -> bool:
            from streamdet.wire import encode

            encode(msg)  # raises WireError on a non-finite score, as the real Publisher does
            return super().send(msg)

    rings = {"a": FakeRing("a")}
    pub = ValidatingPublisher()
    loop = WorkerLoop(_spec(), rings, NaNDetector(), pub)
    rings["a"].push()
    loop.process(loop.gatherer.gather())
    assert pub.sent == [] and loop.stats["a"].published == 0
