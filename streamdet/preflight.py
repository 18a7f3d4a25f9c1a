"""What ``streamdet check`` verifies beyond the schema: devices, shared memory, file cameras.

None of it initialises CUDA (GPUs are counted from the NVIDIA driver's /proc entries, as the
supervisor may run on a machine where CUDA initialisation is slow or broken).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from streamdet.config import Config

NVIDIA_PROC = Path("/proc/driver/nvidia/gpus")


def visible_gpus(proc_dir: Path | None = None, environ: Mapping[str, str] | None = None) -> int:
    """How many CUDA devices a process would see: the driver's GPUs, limited by CUDA_VISIBLE_DEVICES."""
    env = os.environ if environ is None else environ
    proc_dir = NVIDIA_PROC if proc_dir is None else proc_dir
    try:
        present = sum(1 for e in proc_dir.iterdir() if e.is_dir())
    except OSError:
        present = 0
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return present
    entries = [v.strip() for v in visible.split(",") if v.strip()]
    count = 0
    for v in entries:  # CUDA stops at the first invalid entry
        if v.isdigit() and int(v) < present or v.startswith(("GPU-", "MIG-")):
            count += 1
        else:
            break
    return min(count, present) if present else 0


def device_problems(devices: tuple[str, ...], gpus: int) -> list[str]:
    """One line per configured device that does not exist here."""
    problems = []
    for d in devices:
        kind, _, index = d.partition(":")
        if kind != "cuda":
            continue
        i = int(index or 0)
        if gpus == 0:
            problems.append(f"devices: {d} is configured but this machine has no usable NVIDIA GPU "
                            f"({NVIDIA_PROC} lists none; is the driver loaded?)")
        elif i >= gpus:
            problems.append(f"devices: {d} is configured but only {gpus} GPU(s) are visible (cuda:0..cuda:{gpus - 1})")
    return problems


def ring_bytes(config: Config) -> int:
    """Shared memory the rings of ``config`` need."""
    from streamdet.pipeline.ring import FrameRing, slot_bytes_for

    r = config.ring
    per_ring = FrameRing.segment_bytes(r.slots, slot_bytes_for(r.max_width, r.max_height, "yuv420p"))
    return per_ring * sum(1 for c in config.cameras if c.enabled)


def shm_warning(config: Config, shm_dir: Path = Path("/dev/shm")) -> str | None:
    """A warning with the figures when the rings would not fit in what ``shm_dir`` has free."""
    need = ring_bytes(config)
    try:
        st = os.statvfs(shm_dir)
    except OSError as exc:
        return f"cannot inspect {shm_dir}: {exc}"
    free = st.f_bavail * st.f_frsize
    if need > free:
        gib = 1024 ** 3
        return (f"the frame rings need {need / gib:.1f} GiB of shared memory but {shm_dir} has {free / gib:.1f} GiB "
                f"free: lower ring.slots or ring.max_width/max_height, or enlarge {shm_dir}")
    return None


@dataclass(frozen=True)
class ProbeResult:
    camera: str
    ok: bool
    detail: str


def probe_file(camera_id: str, url: str, timeout_s: float = 10.0) -> ProbeResult:
    """Open a file camera and decode its first frame."""
    import av

    from streamdet.redact import redact_text

    try:
        with av.open(url, mode="r", timeout=timeout_s) as container:
            if not container.streams.video:
                return ProbeResult(camera_id, False, "no video stream")
            stream = container.streams.video[0]
            for frame in container.decode(stream):
                return ProbeResult(camera_id, True, f"{frame.width}x{frame.height} {stream.codec_context.name}")
            return ProbeResult(camera_id, False, "no frame could be decoded")
    except Exception as exc:
        return ProbeResult(camera_id, False, redact_text(f"{type(exc).__name__}: {exc}"))


def probe_file_cameras(config: Config) -> list[ProbeResult]:
    """Probe every enabled camera whose URL is a local file."""
    from streamdet.pipeline.decode import CameraSource

    out = []
    for cam in config.cameras:
        if cam.enabled and CameraSource(cam.id, str(cam.url)).scheme == "file":
            out.append(probe_file(cam.id, str(cam.url), config.decode.open_timeout_s))
    return out
