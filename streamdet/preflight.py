"""What ``streamdet check`` verifies beyond the schema: devices, shared memory, file cameras.

None of it initialises CUDA (GPUs are counted from the NVIDIA driver's /proc entries, as the
supervisor may run on a machine where CUDA initialisation is slow or broken).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from streamdet.config import Config

NVIDIA_PROC = Path("/proc/driver/nvidia/gpus")
SHM_DIR = Path("/dev/shm")  # where POSIX shared memory (the frame rings) lives on Linux


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


def preprocess_plan(mode: str, backends: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """What ``model.preprocess`` means for each worker (device -> backend), and the problems that
    make ``cuda`` impossible here (no CUDA device, no CuPy, not the torch backend). A CUDA worker
    still runs its self-check when it starts; ``check`` does not initialise CUDA."""
    from streamdet.pipeline.worker.feed_choice import device_feed_obstacle

    plan: dict[str, str] = {}
    problems: list[str] = []
    for device, backend in backends.items():
        obstacle = device_feed_obstacle(device, backend)
        if mode == "cpu":
            plan[device] = "cpu"
        elif obstacle is None:
            plan[device] = "cuda (if its start-up self-check passes" + (")" if mode == "cuda" else "; else cpu)")
        elif mode == "cuda":
            problems.append(f"model.preprocess: cuda cannot run on {device}: {obstacle}")
        else:
            plan[device] = f"cpu ({obstacle})"
    return plan, problems


def ring_bytes(config: Config) -> int:
    """Shared memory the rings of ``config`` need."""
    from streamdet.pipeline.ring.buffer import FrameRing
    from streamdet.pipeline.ring.layout import slot_bytes_for

    r = config.ring
    per_ring = FrameRing.segment_bytes(r.slots, slot_bytes_for(r.max_width, r.max_height, "yuv420p"))
    return per_ring * sum(1 for c in config.cameras if c.enabled)


def shm_problem(config: Config, shm_dir: Path | None = None, held_bytes: int = 0) -> str | None:
    """An error line with both figures (GiB) when the rings of ``config`` do not fit in ``shm_dir``.

    What counts is the free space of ``shm_dir`` plus ``held_bytes``, the rings this daemon already
    holds and would give up (a reload). The segments are sparse: a ring that does not fit is
    created without complaint, and a process dies of SIGBUS when it first writes to a page the
    file system cannot back. So this is an error for ``streamdet check``, ``streamdet run`` and a
    reload alike.
    """
    shm_dir = SHM_DIR if shm_dir is None else shm_dir
    need = ring_bytes(config)
    try:
        st = os.statvfs(shm_dir)
    except OSError as exc:
        return f"cannot inspect {shm_dir}, where the frame rings live: {exc.strerror or exc}"
    free = st.f_bavail * st.f_frsize + held_bytes
    if need <= free:
        return None
    cameras = max(1, sum(1 for c in config.cameras if c.enabled))
    need_s, free_s = _gib_pair(need, free)
    each = need / cameras
    each_s = f"{each / 2**30:.1f} GiB" if each >= 2**30 else f"{each / 2**20:.1f} MiB"
    return (f"the frame rings need {need_s} of shared memory ({cameras} camera(s) x {each_s}) but {shm_dir} has "
            f"{free_s} free: lower ring.slots or ring.max_width/max_height, use fewer cameras, or enlarge {shm_dir}")


def _gib_pair(a: int, b: int) -> tuple[str, str]:
    """Two byte counts in GiB, with as many decimals as it takes to tell them apart (1 to 3)."""
    for decimals in (1, 2, 3):
        sa, sb = f"{a / 2**30:.{decimals}f} GiB", f"{b / 2**30:.{decimals}f} GiB"
        if sa != sb:
            break
    return sa, sb


@dataclass(frozen=True)
class ProbeResult:
    """What opening one file camera found: ``detail`` is the picture size and codec, or the reason."""

    camera: str
    ok: bool
    detail: str
    index: int = 0  # the camera's place in the configuration's cameras list
    path: str = ""

    def line(self) -> str:
        """The line ``streamdet check`` prints for it."""
        if self.ok:
            return f"camera {self.camera}: file OK ({self.detail})"
        return f"warning: cameras[{self.index}] ({self.camera}): {self.path}: {self.detail}"


def file_problem(path: str) -> str | None:
    """Why ``path`` cannot be a camera's video file, from the file system alone; None if it can be read."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "file not found"
    except PermissionError:
        return "permission denied (a folder on its path cannot be entered)"
    except OSError as exc:
        return _os_reason(exc)
    if stat.S_ISDIR(st.st_mode):
        return "is a directory, not a video file"
    if not stat.S_ISREG(st.st_mode):  # never opened: a FIFO would block until someone writes to it
        kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "a device"
        return f"not a regular file ({kind})"
    if st.st_size == 0:
        return "file is empty"
    try:
        with open(path, "rb") as f:
            f.read(1)
    except PermissionError:
        return "permission denied"
    except OSError as exc:
        return _os_reason(exc)
    return None


def _os_reason(exc: OSError) -> str:
    """'permission denied', 'input/output error', ...: the system's words, without the errno number."""
    if isinstance(exc, PermissionError):
        return "permission denied"
    return (exc.strerror or type(exc).__name__).lower()


def _media_reason(exc: Exception, decoding: bool) -> str:
    """One clause for an error PyAV raised while opening (or decoding) a file; no errno numbers."""
    import av

    if isinstance(exc, av.error.DecoderNotFoundError):
        return "FFmpeg has no decoder for its video codec"
    if isinstance(exc, (av.error.InvalidDataError, av.error.DemuxerNotFoundError)):
        if decoding:
            return "its video data is damaged (FFmpeg cannot decode the first frame)"
        return "not a video file, or a damaged one (FFmpeg recognises no media format in it)"
    if isinstance(exc, OSError):
        return _os_reason(exc)
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return f"FFmpeg cannot {'decode' if decoding else 'read'} it: {reason}"


def probe_file(camera_id: str, url: str, timeout_s: float = 10.0, index: int = 0) -> ProbeResult:
    """Open a file camera and decode its first frame; a failure says why in one clause."""
    import av

    from streamdet.redact import redact_text

    def fail(reason: str) -> ProbeResult:
        return ProbeResult(camera_id, False, redact_text(reason), index, url)

    problem = file_problem(url)
    if problem is not None:
        return fail(problem)
    try:
        with av.open(url, mode="r", timeout=timeout_s) as container:
            if container.format.name == "tty":  # FFmpeg shows any text file as ANSI art
                return fail("not a video file (a text file)")
            attached = av.stream.Disposition.attached_pic
            video = [v for v in container.streams.video if not v.disposition & attached]
            if not video:
                kinds: list[str] = sorted({s.type for s in container.streams if s.type != "video"})
                kinds += ["a cover picture"] if container.streams.video else []
                holds = f"no video stream; only {' and '.join(kinds)}" if kinds else "no streams at all"
                return fail(f"not a video file ({holds})")
            stream = video[0]
            try:
                for frame in container.decode(stream):
                    still = ", a still image" if container.format.name.endswith(("_pipe", "image2")) else ""
                    detail = f"{frame.width}x{frame.height} {stream.codec_context.name}{still}"
                    return ProbeResult(camera_id, True, detail, index, url)
            except Exception as exc:
                return fail(_media_reason(exc, decoding=True))
            return fail("no video frame could be decoded (an empty or truncated video stream)")
    except Exception as exc:
        return fail(_media_reason(exc, decoding=False))


def probe_file_cameras(config: Config) -> list[ProbeResult]:
    """Probe every enabled camera whose URL is a local file."""
    return [probe_file(cam.id, cam.url, config.decode.open_timeout_s, i)
            for i, cam in enumerate(config.cameras) if cam.enabled and cam.is_file]
