"""NVDEC for one camera: whether to try it, the PyAV hwaccel to open with, the fall-back to the CPU.

NVDEC decodes through FFmpeg's ``cuda`` hwaccel (PyAV's :class:`av.codec.hwaccel.HWAccel`; the
PyPI ``av`` wheel's FFmpeg is built with ``--enable-nvdec``). Frames are downloaded to host
memory as NV12 (``is_hw_owned=False``) and copied into the camera's ring like any other frame,
so the worker's path is the same for both (stage F1 of the GPU design).

``allow_software_fallback=False``: FFmpeg never switches to its software decoder silently, so
every failure is seen here and handled once per camera by :class:`NvdecState`:

- before the first open, the CUDA device is opened once (:func:`nvdec_problem`): no GPU, no
  driver, FFmpeg without CUDA -> CPU; after an open with NVDEC failed, it is checked again (a
  device that cannot be opened now -> CPU, else the failure is the source's);
- the input has no stream NVDEC can decode (PyAV refuses the open with the hwaccel) -> CPU;
- a session opened with NVDEC that fails before decoding any frame (``libnvcuvid`` missing,
  a profile NVDEC cannot decode, out of decoder sessions or memory) -> CPU;

each time the reason is logged once (warning), ``hw_fallbacks`` counted in the ring and the
camera decodes on the CPU from then on, for the life of the reader. The ring's ``decode_mode``
says which decoder is in use. Importing this module loads av, never CUDA: the device is opened
only when a camera asks for NVDEC, in the decoder process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import av
from av.codec.hwaccel import HWAccel, hwdevices_available

from streamdet.pipeline.decode.source import CameraSource
from streamdet.pipeline.ring.buffer import FrameRing
from streamdet.redact import redact_text

log = logging.getLogger("streamdet.decode")

#: FFmpeg threads of an NVDEC session: the GPU decodes, the CPU only parses; more threads would
#: only add frames of latency and decoder surfaces [guess: measured by tools/gpu_verify.py].
NVDEC_THREADS = 1

_NO_HW_STREAM = "Hardware accelerated decode requested but no stream is compatible"

#: Options of FFmpeg's CUDA device: the device's primary context, shared by every NVDEC session
#: of the process (one context per session would cost device memory and start-up time each).
CUDA_DEVICE_OPTIONS: dict[str, object] = {"primary_ctx": "1"}


def nvdec_hwaccel(device: str | None) -> HWAccel:
    """PyAV's hwaccel for NVDEC on CUDA ``device``: frames downloaded to host memory, no silent
    software fallback inside FFmpeg (a failure must reach :class:`NvdecState`)."""
    return HWAccel("cuda", device=device, allow_software_fallback=False, options=dict(CUDA_DEVICE_OPTIONS))


def nvdec_problem(device: str | None) -> str | None:
    """Why NVDEC cannot be used on CUDA ``device`` (an index; None = CUDA's default) in this
    process, or None when it can. Opens and frees a CUDA device context through FFmpeg (CUDA is
    initialised in the calling process: a decoder's, never the supervisor's)."""
    if "cuda" not in hwdevices_available():
        return f"this FFmpeg (PyAV {av.__version__}) was built without CUDA hardware decoding"
    try:
        nvdec_hwaccel(device).create(av.Codec("h264", "r"))
    except Exception as exc:
        which = f"CUDA device {device}" if device is not None else "the default CUDA device"
        return f"cannot open {which} for NVDEC: {type(exc).__name__}: {redact_text(str(exc))}"
    return None


def is_no_hw_stream(exc: BaseException) -> bool:
    """PyAV refused an open with the hwaccel: the input has no stream NVDEC can decode."""
    return isinstance(exc, RuntimeError) and _NO_HW_STREAM in str(exc)


class NvdecState:
    """One camera's decoder choice: NVDEC while it works, the CPU for good after it fails."""

    def __init__(self, source: CameraSource, ring: FrameRing, tag: str,
                 probe: Callable[[str | None], str | None] = nvdec_problem) -> None:
        self.source = source
        self.ring = ring
        self.tag = tag
        self.probe = probe
        self.wanted = source.wants_nvdec
        self.failure: str | None = None  # why NVDEC was given up (None: not given up)
        self._probed = False

    @property
    def active(self) -> bool:
        """Whether the next session opens with NVDEC."""
        return self.wanted and self.failure is None

    @property
    def mode(self) -> str:
        """``nvdec`` or ``cpu``: what the next (or current) session decodes with."""
        return "nvdec" if self.active else "cpu"

    def hwaccel(self) -> HWAccel | None:
        """The hwaccel to open the next session with, or None (CPU). The device is checked once,
        before the first NVDEC open; a failure there falls back at once."""
        if not self.active:
            return None
        if not self._probed:
            self._probed = True
            problem = self.probe(self.source.nvdec_device)
            if problem is not None:
                self.fall_back(problem)
                return None
        return nvdec_hwaccel(self.source.nvdec_device)

    def device_problem(self) -> str | None:
        """Check the CUDA device again (after an open with NVDEC failed): why it cannot be used
        now, or None when it can (the failure was the source's)."""
        return self.probe(self.source.nvdec_device)

    def fall_back(self, reason: str) -> None:
        """Give NVDEC up for this camera: logged once, counted in the ring, CPU from now on."""
        if self.failure is not None:
            return
        self.failure = reason
        self.ring.add_counts(hw_fallbacks=1)
        self.ring.set_decode_mode("cpu")
        log.warning("%s: NVDEC unavailable, decoding on the CPU from now on: %s", self.tag, reason)
