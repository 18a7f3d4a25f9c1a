"""NVDEC in the decoder, without a GPU: a camera that asks for NVDEC and cannot have it falls back to
the CPU (reason logged once, counted in the ring) and its frames still flow; ``decode: cpu`` never
tries the GPU; ``decode: auto`` without a GPU is the CPU, silently; a session that opened with
NVDEC and decoded nothing moves to the CPU at once."""

from __future__ import annotations

import logging
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from streamdet.pipeline.decode import nvdec as hwdecode
from streamdet.pipeline.decode import reader as decode_mod
from streamdet.pipeline.decode.nvdec import NvdecState, is_no_hw_stream, nvdec_problem
from streamdet.pipeline.decode.reader import CameraReader, CameraSource
from streamdet.pipeline.ring.buffer import FrameRing
from tests.helpers.decoder import number, wait_for
from tests.helpers.faulty_media import write_clip
from tests.helpers.ring_reader import RingCollector

NO_SUCH_GPU = "99"  # a CUDA device index no machine has: NVDEC fails here and on a GPU machine alike


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("nvdec") / "clip.mp4", frames=30)


@pytest.fixture(scope="module")
def undecodable(tmp_path_factory: pytest.TempPathFactory, clip: Path) -> Path:
    """The clip's packets with their payload replaced by noise: it opens as H.264 and decodes nothing,
    as a session whose GPU decoder cannot start would."""
    path = tmp_path_factory.mktemp("nvdec") / "noise.mp4"
    rng = np.random.default_rng(1)
    with av.open(str(clip)) as src, av.open(str(path), mode="w") as out:
        stream = out.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.size == 0:
                continue
            noise = av.Packet(rng.integers(0, 256, packet.size, dtype=np.uint8).tobytes())
            noise.pts, noise.dts, noise.time_base = packet.pts, packet.dts, packet.time_base or Fraction(1, 25)
            noise.stream = stream
            out.mux(noise)
    return path


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "streamdet.decode" and r.levelno == logging.WARNING]


def _read_frames(ring: FrameRing, run_reader: Any, source: CameraSource, n: int, **kwargs: Any) -> list:
    with RingCollector(ring) as reader:
        run_reader(source, ring, **kwargs)
        wait_for(lambda: len(reader.frames) >= n, 20, f"{n} frames")
        return list(reader.frames)


class NoHwAccel:
    """Stands in for av.open and the NVDEC probe: fails the test if either is asked for the GPU."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.opens: list[dict] = []
        real_open = av.open

        def spy_open(*args: Any, **kwargs: Any) -> Any:
            self.opens.append(kwargs)
            assert kwargs.get("hwaccel") is None, "a CPU camera opened with a hwaccel"
            return real_open(*args, **kwargs)

        def no_probe(device: str | None) -> str | None:
            raise AssertionError("a CPU camera probed the GPU")

        monkeypatch.setattr(decode_mod.av, "open", spy_open)
        monkeypatch.setattr(hwdecode, "nvdec_problem", no_probe)
        monkeypatch.setattr(hwdecode.NvdecState.__init__, "__defaults__", (no_probe,))


# -- the rules, one camera ---------------------------------------------------------------------------


def test_nvdec_problem_names_the_device() -> None:
    reason = nvdec_problem(NO_SUCH_GPU)
    assert reason is not None and f"CUDA device {NO_SUCH_GPU}" in reason


def test_state_probes_once_and_falls_back_once(make_ring, caplog) -> None:
    caplog.set_level(logging.INFO, logger="streamdet.decode")
    ring = make_ring()
    probes: list[str | None] = []

    def probe(device: str | None) -> str | None:
        probes.append(device)
        return None

    state = NvdecState(CameraSource.of("cam", "a.mp4", decode="nvdec", nvdec_device="1"), ring, "camera=cam", probe)
    assert state.active and state.mode == "nvdec"
    assert state.hwaccel() is not None and state.hwaccel() is not None
    assert probes == ["1"]  # the device is checked once, before the first NVDEC open
    state.fall_back("first reason")
    state.fall_back("second reason")
    assert not state.active and state.mode == "cpu" and state.hwaccel() is None
    assert state.failure == "first reason"
    st = ring.status()
    assert (st.hw_fallbacks, st.decode_mode) == (1, "cpu")
    assert _warnings(caplog) == ["camera=cam: NVDEC unavailable, decoding on the CPU from now on: first reason"]


def test_state_wanted_only_for_nvdec_or_auto_with_a_gpu(make_ring) -> None:
    ring = make_ring()
    assert NvdecState(CameraSource.of("c", "a.mp4", decode="nvdec"), ring, "t").active  # default device
    assert NvdecState(CameraSource.of("c", "a.mp4", decode="auto", nvdec_device="0"), ring, "t").active
    assert not NvdecState(CameraSource.of("c", "a.mp4", decode="auto"), ring, "t").active
    assert not NvdecState(CameraSource.of("c", "a.mp4", decode="cpu", nvdec_device="0"), ring, "t").active
    assert not NvdecState(CameraSource.of("c", "a.mp4"), ring, "t").active  # the dataclass default: cpu


def test_no_hw_stream_error_is_recognised() -> None:
    assert is_no_hw_stream(RuntimeError("Hardware accelerated decode requested but no stream is compatible"))
    assert not is_no_hw_stream(OSError("Hardware accelerated decode requested but no stream is compatible"))
    assert not is_no_hw_stream(RuntimeError("something else"))


# -- a reader --------------------------------------------------------------------------------------


def test_nvdec_unavailable_falls_back_to_cpu_logged_once_and_counted(clip, make_ring, run_reader, caplog) -> None:
    caplog.set_level(logging.INFO, logger="streamdet.decode")
    ring = make_ring()
    source = CameraSource.of("cam", str(clip), realtime=False, loop=True, decode="nvdec", nvdec_device=NO_SUCH_GPU)
    frames = _read_frames(ring, run_reader, source, 45)  # more than one pass of the 30-frame clip
    assert [number(f) for f in frames[:30]] == list(range(30))  # every frame, decoded on the CPU
    st = ring.status()
    assert (st.decode_mode, st.hw_fallbacks, st.reconnects) == ("cpu", 1, 0)
    assert st.state == "streaming" and st.last_error == ""
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and "NVDEC unavailable" in warnings[0] and f"CUDA device {NO_SUCH_GPU}" in warnings[0]


@pytest.mark.parametrize("decode, device", [("cpu", "0"), ("auto", None)])
def test_cpu_and_auto_without_gpu_never_try_nvdec(clip, make_ring, run_reader, caplog, monkeypatch,
                                                   decode: str, device: str | None) -> None:
    caplog.set_level(logging.INFO, logger="streamdet.decode")
    spy = NoHwAccel(monkeypatch)
    ring = make_ring()
    source = CameraSource.of("cam", str(clip), realtime=False, decode=decode, nvdec_device=device)
    frames = _read_frames(ring, run_reader, source, 30)
    assert [number(f) for f in frames] == list(range(30))
    assert spy.opens and all(o.get("hwaccel") is None for o in spy.opens)
    st = ring.status()
    assert (st.decode_mode, st.hw_fallbacks) == ("cpu", 0)
    assert not _warnings(caplog)  # silently
    assert any("decoding with the CPU" in r.getMessage() for r in caplog.records)


class NoFrameOnGpuReader(CameraReader):
    """A reader whose NVDEC sessions open (as if the GPU took the stream) but decode nothing, the way
    a GPU decoder that cannot start behaves; CPU sessions read the real clip."""

    noise: Path
    modes: list[str]

    def _open(self) -> Any:
        if self.nvdec.active:
            self._session_nvdec = True
            return av.open(str(self.noise))
        return super()._open()

    def _stream_frames(self, container: Any, stream: Any, fps: float) -> str:
        self.modes.append(self.ring.status().decode_mode)
        return super()._stream_frames(container, stream, fps)


@pytest.mark.parametrize("realtime", [False, True])
def test_nvdec_session_without_frames_moves_to_cpu_at_once(clip, undecodable, make_ring, run_reader, caplog,
                                                           realtime: bool) -> None:
    caplog.set_level(logging.INFO, logger="streamdet.decode")
    NoFrameOnGpuReader.noise, NoFrameOnGpuReader.modes = undecodable, []
    ring = make_ring()
    source = CameraSource.of("cam", str(clip), realtime=realtime, loop=True, decode="nvdec", nvdec_device="0",
                          backoff_initial_s=30.0)  # a backoff would time the test out
    t0 = time.monotonic()
    frames = _read_frames(ring, run_reader, source, 20, reader_cls=NoFrameOnGpuReader)
    assert time.monotonic() - t0 < 15
    assert number(frames[0]) == 0 if not realtime else number(frames[0]) < 5
    assert NoFrameOnGpuReader.modes == ["nvdec", "cpu"]  # the ring showed NVDEC, then the CPU
    st = ring.status()
    assert (st.decode_mode, st.hw_fallbacks, st.reconnects, st.state) == ("cpu", 1, 0, "streaming")
    warnings = _warnings(caplog)
    fallbacks = [m for m in warnings if "NVDEC unavailable" in m]
    assert len(fallbacks) == 1 and "no frame decoded with NVDEC (damaged data after frame 0" in fallbacks[0]
    assert not [m for m in warnings if "reconnecting" in m]
