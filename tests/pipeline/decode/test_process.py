"""The decoder process: cameras isolated from each other, crashed threads restarted, a camera
that finished for good letting its thread go (its flag set for the supervisor), a process left
without a camera exiting with EXIT_FINISHED, and the process started as the supervisor starts it."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import threading
import time
import uuid
from pathlib import Path

import pytest

from streamdet.pipeline.decode.process import EXIT_FINISHED, DecoderSpec, decoder_main
from streamdet.pipeline.decode.reader import CameraSource
from streamdet.pipeline.ring.buffer import FrameRing
from streamdet.pipeline.ring.layout import slot_bytes_for
from streamdet.stopflag import StopFlag
from streamdet.supervisor import ChildTargets, child_entry
from tests.helpers.decoder import wait_for
from tests.helpers.media import make_test_clip

SECRET = "s3cret-pw"


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    empty = d / "empty.mp4"
    empty.write_bytes(b"")
    return {
        "small": make_test_clip(d / "small.mp4", 160, 120, frames=50, fps=25),  # 2 s
        "short": make_test_clip(d / "short.mp4", 160, 120, frames=10, fps=25),
        "empty": empty,
    }

DECODER_MAIN = ChildTargets().decoder  # what the supervisor's children run


def decoder_threads() -> set[str]:
    """Names of this process's camera reader threads (``decode-CAMERA``)."""
    return {t.name for t in threading.enumerate() if t.name.startswith("decode-")}


def test_a_camera_that_fails_for_good_lets_its_thread_go_and_the_others_stream_on(clips, make_ring,
                                                                                  caplog) -> None:
    caplog.set_level(logging.INFO, logger="streamdet.decode")
    good, bad = make_ring("good"), make_ring("bad")
    ctx = mp.get_context("spawn")
    flags = {"good": ctx.RawValue("b", 0), "bad": ctx.RawValue("b", 0)}
    spec = DecoderSpec(sources=[CameraSource.of("good", str(clips["small"]), loop=True),
                                CameraSource.of("bad", str(clips["empty"]), loop=True)],
                       ring_names={"good": good.name, "bad": bad.name}, finished=flags)
    stop = threading.Event()
    result: list[BaseException] = []

    def body() -> None:
        try:
            decoder_main(spec, stop)
        except BaseException as exc:  # recorded for the assertion below
            result.append(exc)

    t = threading.Thread(target=body, daemon=True)
    t.start()
    try:
        wait_for(lambda: flags["bad"].value == 1, 15, "the empty file's flag")
        st = bad.status()
        assert st.state == "failed" and st.last_error.startswith("not a decodable video file (the file is empty)")
        wait_for(lambda: "decode-bad" not in decoder_threads(), 5, "the failed camera's thread to end")
        seq = good.latest_seq
        wait_for(lambda: good.latest_seq >= seq + 5, 10, "the good camera streaming on")
        assert flags["good"].value == 0 and "decode-good" in decoder_threads() and t.is_alive()
    finally:
        stop.set()
        t.join(10)
    assert not t.is_alive() and result == []  # a stop is a plain return
    assert bad.status().state == "failed"  # its verdict stays
    assert "camera=bad: failed for good" in caplog.text


def test_a_decoder_whose_every_camera_finished_exits_with_exit_finished(clips, make_ring, caplog) -> None:
    caplog.set_level(logging.INFO, logger="streamdet.decode")
    ended, failed = make_ring("ended"), make_ring("failed")
    flags = {"ended": mp.get_context("spawn").RawValue("b", 0), "failed": mp.get_context("spawn").RawValue("b", 0)}
    spec = DecoderSpec(sources=[CameraSource.of("ended", str(clips["short"]), realtime=True),
                                CameraSource.of("failed", str(clips["empty"]))],
                       ring_names={"ended": ended.name, "failed": failed.name}, finished=flags)
    stop = threading.Event()
    guard = threading.Timer(30, stop.set)  # a decoder that never exits by itself returns at stop instead
    guard.start()
    try:
        with pytest.raises(SystemExit) as exited:
            decoder_main(spec, stop)
    finally:
        guard.cancel()
    assert exited.value.code == EXIT_FINISHED
    assert (flags["ended"].value, flags["failed"].value) == (1, 1)
    assert (ended.status().state, failed.status().state) == ("ended", "failed")
    assert ended.latest_seq == 10
    assert decoder_threads() == set()
    assert "every camera ended or failed for good" in caplog.text


def test_a_spawned_decoder_with_only_a_failed_camera_exits_with_exit_finished(clips, make_ring, capfd) -> None:
    """As the supervisor starts it: the process goes away (status EXIT_FINISHED), no traceback."""
    ring = make_ring("bad")
    ctx = mp.get_context("spawn")
    flag = ctx.RawValue("b", 0)
    spec = DecoderSpec(sources=[CameraSource.of("bad", str(clips["empty"]))], ring_names={"bad": ring.name},
                       finished={"bad": flag})
    stop = StopFlag(ctx)
    proc = ctx.Process(target=child_entry, args=("decoder-bad", "info", DECODER_MAIN, (spec, stop)))
    proc.start()
    proc.join(60)
    if proc.is_alive():
        proc.kill()
    assert proc.exitcode == EXIT_FINISHED
    assert flag.value == 1 and ring.status().state == "failed"
    err = capfd.readouterr().err
    assert "camera=bad" in err and "Traceback" not in err


def test_decoder_main_isolates_cameras_restarts_crashed_thread_and_stops(clips, make_ring, caplog) -> None:
    caplog.set_level(logging.INFO, logger="streamdet.decode")
    good = make_ring("good")
    down = make_ring("down")
    late_name = f"sdtest_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    gate = threading.Event()
    spec = DecoderSpec(
        sources=[
            CameraSource.of("good", str(clips["small"]), loop=True),
            CameraSource.of("down", f"rtsp://u:{SECRET}@127.0.0.1:9/none", backoff_initial_s=5, backoff_max_s=30),
            CameraSource.of("late", str(clips["small"]), realtime=False, loop=True),
        ],
        ring_names={"good": good.name, "down": down.name, "late": late_name},
        start_gate=gate,
    )
    stop = threading.Event()
    t = threading.Thread(target=decoder_main, args=(spec, stop), daemon=True)
    t.start()
    late = None
    try:
        # the gate holds the file cameras, not the live one
        wait_for(lambda: down.status().state == "backoff", 10, "the down camera in backoff")
        assert good.status().state == "starting" and good.latest_seq == 0
        gate.set()
        wait_for(lambda: good.latest_seq >= 5, 10, "the good camera despite the others")
        wait_for(lambda: "reader crashed" in caplog.text, 10, "the crash of the camera without a ring")
        late = FrameRing.create(late_name, "late", 3, slot_bytes_for(320, 240, "yuv420p"))  # restarted after ~1 s
        wait_for(lambda: late.latest_seq >= 3, 15, "the restarted camera thread (lossless: fills 3 slots)")
        assert late.status().lossless
    finally:
        t0 = time.monotonic()
        stop.set()
        t.join(10)
        took = time.monotonic() - t0
        if late is not None:
            late.close()
            late.unlink()
    assert not t.is_alive() and took < 3.0, f"decoder_main took {took:.2f} s to stop"
    assert good.status().state == "stopped" and down.status().state == "stopped"
    assert SECRET not in caplog.text


def test_decoder_main_in_spawned_process(clips, make_ring, capfd) -> None:
    ring = make_ring("cam1")
    spec = DecoderSpec(sources=[CameraSource.of("cam1", str(clips["small"]), loop=True)],
                       ring_names={"cam1": ring.name})
    ctx = mp.get_context("spawn")
    stop = StopFlag(ctx)
    # Started exactly as the supervisor starts it (bootstrap sets up logging, signals).
    proc = ctx.Process(target=child_entry, args=("decoder-cam1", "info", DECODER_MAIN, (spec, stop)))
    proc.start()
    try:
        wait_for(lambda: ring.latest_seq >= 5, 30, "frames from the decoder process")
        assert ring.status().decoder_pid == proc.pid
    finally:
        stop.set()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    assert proc.exitcode == 0
    err = capfd.readouterr().err
    assert "camera=cam1" in err and "decoder stopped" in err
    assert "leaked" not in err and "Traceback" not in err
