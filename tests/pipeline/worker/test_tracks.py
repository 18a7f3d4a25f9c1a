"""Tracking in the worker: detect_every, track ids on the wire, frame order with two lanes, reload and reset."""

from __future__ import annotations

import logging
import multiprocessing as mp
import threading
import time
from typing import Any

import numpy as np
import torch

from streamdet.pipeline.worker.loop import WorkerLoop
from streamdet.pipeline.worker.runner import PipelinedRunner
from streamdet.pipeline.worker.tracks import CameraTracks
from streamdet.stopflag import StopFlag
from streamdet.wire import validate
from tests.pipeline.worker.test_loop import FakeBackend, FakePublisher, FakeRing, _spec, fake_stages

SETTINGS = {"high_thresh": 0.5, "low_thresh": 0.1, "match_iou": 0.3, "lost_frames": 30, "min_hits": 1}


def tracking(**cameras: int) -> dict[str, Any]:
    return {"settings": dict(SETTINGS), "cameras": cameras}


def detections(pub: FakePublisher, camera: str | None = None) -> list[dict[str, Any]]:
    return [m for m in pub.sent if m["type"] == "detections" and (camera is None or m["camera"] == camera)]


def run_frames(loop: WorkerLoop, ring: FakeRing, n: int, **push: Any) -> None:
    for _ in range(n):
        ring.push(**push)
        loop.process(loop.gatherer.gather())


def test_detect_every_publishes_every_frame_with_tracker_boxes_in_between() -> None:
    rings = {"a": FakeRing("a"), "b": FakeRing("b")}
    pub = FakePublisher()
    stages = fake_stages()
    loop = WorkerLoop(_spec(), rings, stages, pub)
    loop.tracks.configure(tracking(a=3))  # b is not tracked
    for _ in range(7):
        rings["a"].push()
        rings["b"].push()
        loop.process(loop.gatherer.gather())
    a, b = detections(pub, "a"), detections(pub, "b")
    assert [m["frame"] for m in a] == list(range(7))
    assert [m["inferred"] for m in a] == [True, False, False, True, False, False, True]
    ids = {d["track_id"] for m in a for d in m["detections"]}
    assert ids == {1} and all(len(m["detections"]) == 1 for m in a)  # the tracked box is kept in between
    assert a[1]["detections"][0]["score"] == a[0]["detections"][0]["score"]  # the track's last score
    for m in a + b:
        validate(m)
    assert all("inferred" not in m and all("track_id" not in d for d in m["detections"]) for m in b)
    assert len(stages.backend.batches) == 7  # b every frame; a on frames 0, 3 and 6 (in the same batches)
    assert sum(batch.shape[0] for batch in stages.backend.batches) == 7 + 3
    # the frames the detector skipped were taken from the ring without copying their pixels
    assert rings["a"].reads == [True, False, False, True, False, False, True]
    assert rings["b"].reads == [True] * 7
    loop.publish_stats()
    stats = pub.sent[-1]["cameras"]
    assert (stats["a"]["inferred"], stats["a"]["tracked_only"], stats["a"]["published"]) == (3, 4, 7)
    assert (stats["b"]["inferred"], stats["b"]["tracked_only"]) == (7, 0)


def test_ids_follow_objects_and_new_objects_get_new_ids() -> None:
    class TwoThenOne(FakeBackend):
        """Two boxes for the first three batches, then only the second one moves on."""

        def infer(self, batch: np.ndarray) -> torch.Tensor:
            self.batches.append(batch)
            k = len(self.batches)
            rows = [[60.0 + 4 * k, 70.0, 100.0, 100.0, 0.9, 0.0, 1.0], [300.0, 200.0, 60.0, 80.0, 0.8, 1.0, 0.0]]
            return torch.tensor(rows if k <= 3 else rows[:1] if k <= 5 else rows[1:]).repeat(batch.shape[0], 1, 1)

    stages = fake_stages()
    stages.backend = TwoThenOne()
    ring, pub = FakeRing("a"), FakePublisher()
    loop = WorkerLoop(_spec(), {"a": ring}, stages, pub)
    loop.tracks.configure(tracking(a=1))
    run_frames(loop, ring, 8)
    per_frame = [sorted(d["track_id"] for d in m["detections"]) for m in detections(pub)]
    assert per_frame[:3] == [[1, 2]] * 3
    assert per_frame[3:5] == [[1]] * 2
    assert per_frame[5] == [2]  # the second object came back within lost_frames: the same id


def test_reload_keeps_tracks_and_a_new_resolution_or_ring_resets_them(caplog) -> None:
    ring, pub = FakeRing("a"), FakePublisher()
    loop = WorkerLoop(_spec(), {"a": ring}, fake_stages(), pub)
    loop.tracks.configure(tracking(a=1))
    run_frames(loop, ring, 3)
    loop.tracks.configure({"settings": {**SETTINGS, "match_iou": 0.2}, "cameras": {"a": 1}})  # a reload
    run_frames(loop, ring, 2)
    with caplog.at_level(logging.INFO, "streamdet.worker"):
        run_frames(loop, ring, 2, w=96, h=64)  # the camera changed resolution
    ids = [m["detections"][0]["track_id"] for m in detections(pub)]
    assert ids[:5] == [1] * 5 and ids[5:] == [2, 2]
    assert [r.getMessage() for r in caplog.records if "tracks reset" in r.getMessage()] == [
        "a: tracks reset (resolution changed from 64x48 to 96x64)"]


def test_predicted_boxes_are_clipped_to_the_frame_and_dropped_once_outside_it() -> None:
    """An object leaving a 64x48 frame to the right at 6 px a frame: the tracker's predicted boxes
    stay inside the frame (the wire contract), and a track predicted wholly outside it has no box."""
    tracks = CameraTracks()
    tracks.configure(tracking(a=1))
    ring = FakeRing("a")
    for _ in range(14):
        ring.push()
    frames = ring.frames
    for i in range(4):  # detections while it is inside: x1 = 20, 26, 32, 38
        x = 20 + 6 * i
        out = tracks.step(frames[i], "r1", np.array([[x, 10, x + 20, 30, 0.9, 0]], np.float32))
        assert out.track_ids.tolist() == [1]
    boxes = []
    for f in frames[4:]:
        out = tracks.step(f, "r1", None)  # frames the detector skips: predicted boxes
        assert not out.inferred
        assert (out.det[:, [0, 2]] >= 0).all() and (out.det[:, [0, 2]] <= 64).all()
        assert (out.det[:, [1, 3]] >= 0).all() and (out.det[:, [1, 3]] <= 48).all()
        assert (out.det[:, 2] > out.det[:, 0]).all()
        boxes.append(out.det[:, :4].tolist())
    assert any(b and b[0][2] == 64.0 and b[0][0] < 64 for b in boxes)  # clipped at the right edge
    assert boxes[-1] == []  # predicted past x = 64: no box any more


def test_camera_tracks_resets_on_a_new_ring_and_a_restarted_stream() -> None:
    tracks = CameraTracks()
    tracks.configure(tracking(a=1))
    ring = FakeRing("a")
    det = np.array([[10, 10, 50, 50, 0.9, 0]], np.float32)
    for _ in range(2):
        ring.push()
    first, second = ring.frames
    ids = [tracks.step(first, "r1", det).track_ids.tolist(), tracks.step(second, "r1", det).track_ids.tolist(),
           tracks.step(second, "r2", det).track_ids.tolist(),  # the camera was restarted: a new ring
           tracks.step(first, "r2", det).track_ids.tolist()]  # its frame numbers went back
    assert ids == [[1], [1], [2], [3]]
    tracks.configure(None)
    assert tracks.step(second, "r2", det) is None and not tracks.tracked("a")


def test_frame_order_and_ids_with_two_lanes() -> None:
    rings = {c: FakeRing(c, lossless=True) for c in ("a", "b", "c")}
    for ring in rings.values():
        for _ in range(12):
            ring.push()
    pub = FakePublisher()
    stages = fake_stages()
    stages.extra_backends = [FakeBackend()]
    loop = WorkerLoop(_spec(max_batch=2, lanes=2), rings, stages, pub)
    loop.tracks.configure(tracking(a=2, b=1, c=3))
    stop = StopFlag(mp.get_context("spawn"))

    def stop_when_done() -> None:
        deadline = time.monotonic() + 20
        while len(detections(pub)) < 36 and time.monotonic() < deadline:
            time.sleep(0.01)
        stop.set()

    threading.Thread(target=stop_when_done, daemon=True).start()
    PipelinedRunner(loop, lanes=2).run(stop)
    for cam, every in (("a", 2), ("b", 1), ("c", 3)):
        msgs = detections(pub, cam)
        assert [m["frame"] for m in msgs] == list(range(12))
        assert [m["inferred"] for m in msgs] == [i % every == 0 for i in range(12)]
        assert {d["track_id"] for m in msgs for d in m["detections"]} == {1}


def test_cameras_with_the_same_detect_every_take_turns_at_the_detector() -> None:
    """Three cameras at detect_every 3 that start together: after the first frame (always detected)
    each round of frames sends exactly one of them to the detector, each every third frame."""
    tracks = CameraTracks()
    tracks.configure(tracking(a=3, b=3, c=3, d=2))
    rounds = [{cam: tracks.detect(cam) for cam in "abcde"} for _ in range(10)]
    assert rounds[0] == dict.fromkeys("abcde", True)
    for r in rounds[1:]:
        assert sum(r[c] for c in "abc") == 1 and r["e"]  # e is not tracked: always detected
    for cam in "abc":
        hits = [i for i, r in enumerate(rounds) if r[cam]]
        assert all(b - a == 3 for a, b in zip(hits[1:], hits[2:], strict=False)), (cam, hits)
    assert [i for i, r in enumerate(rounds) if r["d"]] == [0, 2, 4, 6, 8]  # alone at 2: the usual phase
    # a reload that keeps them keeps their turns; a camera whose detect_every changes gets a new one
    tracks.configure(tracking(a=3, b=3, c=3, d=3))
    later = [{cam: tracks.detect(cam) for cam in "abcd"} for _ in range(6)]
    assert all(sum(r[c] for c in "abc") == 1 for r in later)
    assert sum(r["d"] for r in later) == 2
