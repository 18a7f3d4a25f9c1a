"""The benchmark's workload: cached synthetic clips and the daemon configurations that play them.

Clips are shapes-v1 clips (``streamdet.datasets.shapes.write_clip``), cached in
``<workdir>/clips`` under a name keyed by size, frame count and seed, and written atomically
(the .mp4 appears last), so an interrupted run never leaves a half clip that a later run reuses.
Camera ``i`` plays clip ``i % len(clips)``: capacity trials may use more cameras than clips.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

CLIP_FPS = 25
SEED_BASE = 8100


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clip_path(workdir: Path, width: int, height: int, frames: int, seed: int) -> Path:
    """Where the clip of these parameters is cached."""
    return Path(workdir) / "clips" / f"shapes_{width}x{height}_{frames}f_seed{seed}.mp4"


def ensure_clips(workdir: Path, count: int, width: int, height: int, frames: int,
                 progress: Callable[[str], None] | None = None) -> list[Path]:
    """``count`` clips (seeds ``SEED_BASE + i``), rendering only the ones not cached yet."""
    from streamdet.datasets.shapes import write_clip

    paths = []
    for i in range(count):
        path = clip_path(workdir, width, height, frames, SEED_BASE + i)
        if not path.is_file():
            if progress is not None:
                progress(f"rendering clip {i + 1}/{count}: {path.name}")
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=path.parent))
            try:
                written = write_clip(tmp / path.name, width=width, height=height, frames=frames, fps=CLIP_FPS,
                                     seed=SEED_BASE + i)
                gt = written.with_suffix(".jsonl")
                if gt.exists():
                    os.replace(gt, path.with_suffix(".jsonl"))
                os.replace(written, path)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        paths.append(path)
    return paths


@dataclass(frozen=True)
class CameraSpec:
    """One camera of a generated configuration."""

    id: str
    url: Path
    realtime: bool
    loop: bool
    max_fps: float | None = None


def cameras_for(clips: Sequence[Path], n: int, *, realtime: bool, loop: bool,
                rate: float | None = None) -> list[CameraSpec]:
    """``n`` cameras cycling over ``clips``; ``max_fps`` set when ``rate`` is below the clips' rate."""
    max_fps = rate if rate is not None and rate < CLIP_FPS else None
    return [CameraSpec(f"cam{i}", clips[i % len(clips)], realtime, loop, max_fps) for i in range(n)]


@dataclass(frozen=True)
class DaemonSettings:
    """The model and process settings shared by every daemon the benchmark starts."""

    weights: Path
    img_size: int
    device: str = "cpu"
    backend: str | None = None
    stats_interval_s: float = 2.0
    frame_size: tuple[int, int] = (1280, 720)
    detect_every: int | None = None  # tracking on, detector on every Nth frame of each camera; None: off


def write_daemon_config(path: Path, settings: DaemonSettings, endpoint: str, cameras: Sequence[CameraSpec]) -> Path:
    """Write a ``streamdet run`` configuration; ``model.backend`` only when one was asked for.

    The publish high-water mark is raised so that a subscriber busy decoding JSON never loses
    messages, and the rings are sized to the clips. With ``settings.detect_every`` set, tracking is
    on (the tracker's default parameters) and every camera gets that ``detect_every``.
    """
    model: dict = {"weights": str(Path(settings.weights).resolve()), "img_size": settings.img_size}
    if settings.backend:
        model["backend"] = settings.backend
    cams = []
    for c in cameras:
        entry: dict = {"id": c.id, "url": str(Path(c.url).resolve()), "realtime": c.realtime, "loop": c.loop}
        if c.max_fps is not None:
            entry["max_fps"] = c.max_fps
        if settings.detect_every is not None:
            entry["detect_every"] = settings.detect_every
        cams.append(entry)
    width, height = settings.frame_size
    config = {
        "model": model,
        "devices": [settings.device],
        "publish": {"endpoint": endpoint, "hwm": 100000, "stats_interval_s": settings.stats_interval_s},
        "ring": {"max_width": max(32, width), "max_height": max(32, height)},
        "log_level": "info",
        "cameras": cams,
    }
    if settings.detect_every is not None:
        config["tracking"] = {"enabled": True}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
