"""The live view's sampler: copies only for viewers, the frame the worker took, at most max_fps."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from streamdet.config.web import WebConfig
from streamdet.pipeline.ring.buffer import FrameRing
from streamdet.web.live import FORGET_S, WATCH_S, LiveView
from tests.helpers.daemon import wait_for
from tests.helpers.web import make_ring, write_frame


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def ring() -> Iterator[FrameRing]:
    r = make_ring("a")
    try:
        yield r
    finally:
        r.close()
        r.unlink()


def view(ring: FrameRing, clock: Clock | None = None, max_fps: float = 5.0) -> LiveView:
    return LiveView(WebConfig(max_fps=max_fps), cameras=lambda: ["a", "b"], ring_names=lambda: {"a": ring.name},
                    **({"clock": clock} if clock is not None else {}))


def test_unknown_camera_has_no_feed(ring: FrameRing) -> None:
    live = view(ring)
    assert live.feed("a") is not None and live.feed("zz") is None


def test_nothing_is_copied_without_a_viewer(ring: FrameRing) -> None:
    live = view(ring)
    live.start()
    try:
        for i in range(20):
            write_frame(ring, (i, i, i), i)
            time.sleep(0.02)
        assert live.copies == 0 and live.encodes() == 0 and live.watched() == set()
    finally:
        live.stop()


def test_the_sampler_copies_the_frame_the_worker_took_and_changes_nothing(ring: FrameRing) -> None:
    clock = Clock()
    live = view(ring, clock)
    feed = live.feed("a")
    live.watch(feed)
    for i in range(1, 4):
        write_frame(ring, (10 * i, 0, 0), i)
    worker = FrameRing.attach(ring.name)
    try:
        taken = worker.read_latest(0)  # the worker takes seq 3 ...
        assert taken is not None and taken.frame_index == 3
        write_frame(ring, (99, 0, 0), 4)  # ... and the decoder writes on
        status_before = ring.status()
        assert live.sample_once() == 1
        pic = feed.picture(False, clock())
        assert pic is not None and pic.frame.frame_index == 3  # the one being inferred, not the newest
        after = ring.status()
        before = (status_before.consumed_seq, status_before.latest_seq)
        assert (after.consumed_seq, after.latest_seq) == before == (3, 4)
    finally:
        worker.close()


def test_at_most_max_fps_copies_per_camera(ring: FrameRing) -> None:
    clock = Clock()
    live = view(ring, clock, max_fps=5.0)
    feed = live.feed("a")
    worker = FrameRing.attach(ring.name)
    try:
        seq = 0
        for i in range(50):  # one second at 50 frames per second, the worker takes every one
            write_frame(ring, (i, 0, 0), i)
            frame = worker.read_latest(seq)
            assert frame is not None
            seq = frame.seq
            live.watch(feed)
            live.sample_once()
            clock.t += 0.02
        assert 5 <= live.copies <= 6
    finally:
        worker.close()


def test_newest_frame_when_the_worker_takes_none(ring: FrameRing) -> None:
    clock = Clock()
    live = view(ring, clock)
    feed = live.feed("a")
    live.watch(feed)
    write_frame(ring, (1, 1, 1), 1)
    write_frame(ring, (2, 2, 2), 2)
    assert live.sample_once() == 1
    assert feed.picture(True, clock()).frame.frame_index == 2
    assert ring.consumed_seq == 0


def test_watching_expires(ring: FrameRing) -> None:
    clock = Clock()
    live = view(ring, clock)
    live.watch(live.feed("a"))
    assert live.watched() == {"a"}
    clock.t += WATCH_S + 0.1
    assert live.watched() == set()


def test_a_removed_camera_ends_its_feed(ring: FrameRing) -> None:
    cams = ["a"]
    live = LiveView(WebConfig(), cameras=lambda: list(cams), ring_names=lambda: {"a": ring.name} if cams else {})
    feed = live.feed("a")
    live.watch(feed)
    write_frame(ring, (1, 1, 1), 1)
    live.sample_once()
    cams.clear()
    live.sample_once()
    assert feed.closed and live.feed("a") is None


def test_the_sampler_thread_serves_a_viewer(ring: FrameRing) -> None:
    live = view(ring)
    live.start()
    try:
        feed = live.feed("a")
        write_frame(ring, (7, 7, 7), 1)
        live.watch(feed)
        assert wait_for(lambda: feed.picture(False, live.clock()) is not None, 5)
    finally:
        live.stop()


def test_rows_combine_stats_status_and_size(ring: FrameRing) -> None:
    live = LiveView(WebConfig(), cameras=lambda: ["a", "b"], ring_names=lambda: {"a": ring.name},
                    statuses=lambda: {"a": ring.status()})
    ring.set_state("backoff", "connection refused")
    live.on_stats({"ts": 5.0, "cameras": {"a": {"fps": 12.5, "latency_ms": {"p50": 30.0, "p95": 40.0, "p99": 45.0},
                                                "dropped": 3, "drops": {"overwritten": 3}, "state": "streaming"}}})
    feed = live.feed("a")
    live.watch(feed)
    write_frame(ring, (1, 1, 1), 1, src_size=(128, 96))
    live.sample_once()
    rows = {r["id"]: r for r in live.camera_rows()}
    a = rows["a"]
    assert (a["fps"], a["latency_ms"], a["dropped"], a["drops"]) == (12.5, {"p50": 30.0, "p99": 45.0}, 3,
                                                                     {"overwritten": 3})
    assert (a["width"], a["height"], a["state"], a["last_error"]) == (128, 96, "backoff", "connection refused")
    assert rows["b"]["fps"] is None and rows["b"]["width"] is None


def test_an_unwatched_camera_unmaps_its_ring_and_later_gives_its_frames_back(ring: FrameRing) -> None:
    clock = Clock()
    live = view(ring, clock)
    feed = live.feed("a")
    live.watch(feed)
    write_frame(ring, (1, 1, 1), 1)
    live.sample_once()
    assert feed.size is not None and live._has_frames()
    clock.t += WATCH_S + 0.1
    live.sample_once()  # nobody watches: the ring mapping goes, the last picture stays a while
    assert feed.size is not None and not live._rings
    clock.t += FORGET_S
    live.sample_once()
    assert feed.size is None and feed.picture(False, clock()) is None and not live._has_frames()
    live.watch(feed)  # a new viewer gets pictures again
    live.sample_once()
    assert feed.picture(False, clock()) is not None
