"""The device feed, run by the worker's own code on the emulated CUDA layer (no GPU needed).

The emulation (:mod:`streamdet.pipeline.cuda.emulation`) runs each stream's queued work on a thread
of its own after random delays, so the worker's waits, events and releases are what keeps the
output right: the tests compare the device feed's messages with the host feed's on the same
lossless file cameras, check torn-frame accounting, and show that removing one wait is caught.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamdet.config.schema import BatchingConfig, ModelConfig
from streamdet.datasets.shapes import write_clip
from streamdet.pipeline.cuda.emulation import EmulatedCuda
from streamdet.pipeline.decode.reader import CameraSource
from streamdet.pipeline.ring.buffer import FrameRing
from streamdet.pipeline.settings import InferenceOptions, NmsSettings
from streamdet.pipeline.stages import Stages, build_stages
from streamdet.pipeline.worker.contract import WorkerSpec
from streamdet.pipeline.worker.device_feed import DeviceFeed
from streamdet.pipeline.worker.feed import Feed, HostFeed
from streamdet.pipeline.worker.loop import WorkerLoop
from streamdet.pipeline.worker.runner import PipelinedRunner
from streamdet.stopflag import StopFlag
from tests.helpers.decoder import Running

DEMO = Path(__file__).resolve().parents[3] / "configs" / "demo" / "shapes_yolov5n.pt"
FRAMES = 12
# one aspect ratio: a batch's letterbox shape then does not depend on which cameras share it (with
# mixed aspect ratios the batches, which differ from run to run, would change the model input)
CLIPS = {"small": (320, 180), "mid": (640, 360), "large": (960, 540)}
IGNORED = ("ts_capture", "ts_publish")  # wall times differ between runs


class Collect:
    """A publisher that keeps every detection message."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def send(self, msg: dict[str, Any]) -> bool:
        if msg.get("type") == "detections":
            with self.lock:
                self.messages.append(msg)
        return True

    def count(self) -> int:
        with self.lock:
            return len(self.messages)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    return {cam: write_clip(d / f"{cam}.mp4", width=w, height=h, frames=FRAMES, seed=i + 1)
            for i, (cam, (w, h)) in enumerate(CLIPS.items())}


@pytest.fixture(scope="module")
def stages() -> Iterator[Stages]:
    st = build_stages(InferenceOptions(DEMO, device="cpu", backend="torch", img_size=320, lanes=2, threads=1,
                                       nms=NmsSettings(conf_thres=0.25)))
    yield st
    st.close()


def _spec() -> WorkerSpec:
    return WorkerSpec(name="worker-test", device="cpu", ring_names={},
                      model=ModelConfig.model_construct(weights=DEMO, img_size=320),
                      batching=BatchingConfig(max_batch=3, max_wait_ms=2), publish_endpoint="inproc://x",
                      stats_interval_s=60.0, lanes=2)


def serve(clips: dict[str, Path], make_ring: Callable[..., FrameRing], stages: Stages,
          feed: Callable[[], Feed], timeout_s: float = 120.0,
          tracking: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], WorkerLoop]:
    """Decode every clip losslessly into its ring (real CameraReaders) and serve them with ``feed``
    until every frame is published; the messages in publication order."""
    rings = {cam: make_ring(cam, 960, 540, slots=3) for cam in clips}
    readers = [Running(CameraSource.of(cam, str(path), realtime=False), rings[cam]) for cam, path in clips.items()]
    pub = Collect()
    loop = WorkerLoop(_spec(), rings, stages, pub, feed=feed())
    loop.tracks.configure(tracking)
    stop = StopFlag(mp.get_context("spawn"))
    runner = PipelinedRunner(loop, lanes=2)

    def stop_when_done() -> None:
        end = time.monotonic() + timeout_s
        while pub.count() < FRAMES * len(clips) and time.monotonic() < end:
            time.sleep(0.02)
        stop.set()

    watcher = threading.Thread(target=stop_when_done, daemon=True)
    watcher.start()
    try:
        runner.run(stop)
    finally:
        stop.set()
        watcher.join(5)
        for r in readers:
            r.halt(within=5.0)
        loop.feed.close()
    return pub.messages, loop


def comparable(messages: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each camera's messages in order, without the wall times."""
    out: dict[str, list[dict[str, Any]]] = {}
    for m in messages:
        out.setdefault(m["camera"], []).append({k: v for k, v in m.items() if k not in IGNORED})
    return out


def test_device_feed_publishes_exactly_what_the_host_feed_publishes(clips, make_ring, stages) -> None:
    host, _ = serve(clips, make_ring, stages, lambda: HostFeed(stages))
    cuda = EmulatedCuda(seed=3)
    device, loop = serve(clips, make_ring, stages, lambda: DeviceFeed(cuda, stages, dtype="float32", max_batch=3))
    want, got = comparable(host), comparable(device)
    assert sorted(want) == sorted(CLIPS)
    for cam in CLIPS:
        assert [m["frame"] for m in want[cam]] == list(range(FRAMES))  # lossless, in order
        assert got[cam] == want[cam], cam  # same frames, order, seq, dropped and bit-identical boxes
    assert sum(len(m["detections"]) for m in host) > FRAMES  # the comparison compares boxes, not empties
    stats = loop.feed.stats()
    assert stats["preprocess"] == "cuda" and stats["pinned"] is True and stats["torn"] == 0
    assert cuda.stats()["kernels"] >= FRAMES * len(CLIPS) / 3  # batches did go through the kernel


def test_a_frame_rewritten_during_its_copy_is_torn_and_nothing_else_is_lost(clips, make_ring, stages) -> None:
    cuda = EmulatedCuda(seed=5)
    hits: list[int] = []
    feeds: list[DeviceFeed] = []

    def rewrite_once(dst: int, src: int, nbytes: int) -> None:
        """The decoder overtaking the DMA: bump the lock of the slot being copied (first copy of the 4th batch)."""
        hits.append(src)
        if len(hits) != 4:
            return
        for _, reader in feeds[0]._readers.values():
            for slot in range(reader.slots):
                if reader.data_address(slot) == src:
                    reader._lock[slot] += 2  # a complete rewrite: even again, but a different lock

    cuda.during_copy = rewrite_once

    def make() -> DeviceFeed:
        feeds.append(DeviceFeed(cuda, stages, dtype="float32", max_batch=3))
        return feeds[0]

    messages, loop = serve(clips, make_ring, stages, make, timeout_s=30.0)
    by_cam = comparable(messages)
    assert feeds[0].stats()["torn"] == 1
    frames = {cam: [m["frame"] for m in ms] for cam, ms in by_cam.items()}
    missing = {cam: sorted(set(range(FRAMES)) - set(f)) for cam, f in frames.items()}
    lost = [(cam, i) for cam, ms in missing.items() for i in ms]
    assert len(lost) == 1, missing  # exactly the torn frame, every other frame published in order
    cam, frame = lost[0]
    assert frames[cam] == sorted(frames[cam])
    after = [m for m in by_cam[cam] if m["frame"] > frame]
    assert after and after[0]["dropped"] == 1  # the next message of that camera counts it
    assert loop.stats[cam].torn == 1


class DropLaneWaits:
    """The emulated runtime with one wait removed: inference lanes no longer wait for the kernel."""

    def __init__(self, inner: EmulatedCuda) -> None:
        self.inner = inner
        self.lanes: set[int] = set()
        self.dropped = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def wait(self, stream: Any, event: Any) -> None:
        if id(stream) in self.lanes:
            self.dropped += 1
            return
        self.inner.wait(stream, event)


def test_the_emulation_catches_a_removed_wait(clips, make_ring, stages) -> None:
    """Without the lane's wait for the kernel, inference reads a batch before (or while) the kernel
    writes it: the messages differ from the host feed's. This test expects that failure."""
    host, _ = serve(clips, make_ring, stages, lambda: HostFeed(stages))
    inner = EmulatedCuda(seed=9, delay_s=(0.0, 0.001))
    slow_prep = inner.new_stream(delay_s=(0.02, 0.04), name="slow-prep")  # the kernel finishes late
    broken = DropLaneWaits(inner)

    def make() -> DeviceFeed:
        feed = DeviceFeed(broken, stages, dtype="float32", max_batch=3)  # type: ignore[arg-type]
        feed.prep_stream = slow_prep
        broken.lanes = {id(s) for s in feed.lane_streams}
        return feed

    device, _ = serve(clips, make_ring, stages, make, timeout_s=60.0)
    assert broken.dropped > 0
    want, got = comparable(host), comparable(device)
    differing = sum(1 for cam in CLIPS for a, b in zip(want.get(cam, []), got.get(cam, []), strict=False) if a != b)
    assert differing > 0, "removing the lane's wait for the kernel went unnoticed"


def test_detect_every_on_the_device_feed_frees_skipped_slots_and_tracks(clips, make_ring, stages) -> None:
    """Frames the detector skips are consumed without a copy: lossless cameras still deliver every frame."""
    settings = {"high_thresh": 0.5, "low_thresh": 0.1, "match_iou": 0.3, "lost_frames": 30, "min_hits": 1}
    cuda = EmulatedCuda(seed=11)
    messages, _ = serve(clips, make_ring, stages, lambda: DeviceFeed(cuda, stages, dtype="float32", max_batch=3),
                        tracking={"settings": settings, "cameras": {cam: 3 for cam in CLIPS}})
    by_cam = comparable(messages)
    detected = 0
    for k, cam in enumerate(CLIPS):  # the k-th camera at 3 takes the k-th phase (and its first frame)
        want = [i == 0 or (i + k) % 3 == 0 for i in range(FRAMES)]
        assert [m["frame"] for m in by_cam[cam]] == list(range(FRAMES))
        assert [m["inferred"] for m in by_cam[cam]] == want
        assert all("track_id" in d for m in by_cam[cam] for d in m["detections"])
        detected += sum(want)
    assert cuda.stats()["copies"] == detected < FRAMES * len(CLIPS)  # only the detector's frames were copied


def test_prepare_refuses_frames_it_did_not_pick(stages) -> None:
    from tests.pipeline.worker.test_loop import FakeRing

    cuda = EmulatedCuda()
    feed = DeviceFeed(cuda, stages, dtype="float32", max_batch=2)
    ring = FakeRing("a")
    ring.push()
    frame = ring.read_next(0)
    with pytest.raises(TypeError, match="SlotFrame"):
        feed.prepare([frame])
    feed.close()


def test_all_torn_batch_is_published_as_nothing_and_counted(make_ring, stages) -> None:
    ring = make_ring("a", 64, 48, slots=3)
    ring.write(np.zeros((72, 64), np.uint8), frame_index=0, pts=0.0, ts_capture=time.time(), pix_fmt="yuv420p")
    cuda = EmulatedCuda()
    feed = DeviceFeed(cuda, stages, dtype="float32", max_batch=2)
    frame = feed.take("a", ring, 0)
    assert frame is not None
    reader = feed._readers[ring.name][1]
    cuda.during_copy = lambda dst, src, n: reader._lock.__setitem__(frame.ref.slot, reader._lock[frame.ref.slot] + 2)
    prepared = feed.prepare([frame])
    assert prepared.frames == [] and [f.seq for f in prepared.torn] == [1]
    inferred = feed.infer(prepared, 0)
    assert feed.detections(inferred) == []
    assert feed.stats()["torn"] == 1 and ring.consumed_seq == 0  # a torn frame is not consumed
    feed.close()
