"""The soak test's workload (tools/soak.py): cached looping clips and the two configurations it reloads between.

Clips are made once by tools/make_shapes.py into ``<workdir>/clips`` (written under a temporary
name and renamed, so an interrupted run never leaves a half clip that a later run reuses). The
two configurations differ only in live settings: ``model.conf_thres`` (0.25 / 0.3) and the first
camera's ``max_fps`` (``fps`` / ``fps - 1``), so a reload must change no process and every other
camera runs through it unchanged.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "configs" / "demo" / "shapes_yolov5n.pt"
IMG_SIZE = 416  # the demo model's training size
SEED_BASE = 9100
CONF = (0.25, 0.3)


@dataclass(frozen=True)
class Workload:
    """What the daemon plays: ``cameras`` looping paced clips at ``fps`` detections per second each."""

    cameras: int = 4
    fps: float = 5.0
    width: int = 640
    height: int = 360
    frames: int = 250
    stats_interval_s: float = 5.0


def ensure_clips(workdir: Path, load: Workload) -> list[Path]:
    """One clip per camera (seeds ``SEED_BASE + i``), rendered only when not cached yet."""
    paths = []
    for i in range(load.cameras):
        seed = SEED_BASE + i
        path = workdir / "clips" / f"shapes_{load.width}x{load.height}_{load.frames}f_seed{seed}.mp4"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
            print(f"soak: rendering {path.name}", file=sys.stderr, flush=True)
            subprocess.run([sys.executable, str(REPO / "tools" / "make_shapes.py"), "clip", str(tmp),
                            "--width", str(load.width), "--height", str(load.height), "--frames", str(load.frames),
                            "--seed", str(seed), "--quiet"], check=True, stdout=subprocess.DEVNULL)
            os.replace(tmp.with_suffix(".jsonl"), path.with_suffix(".jsonl"))
            os.replace(tmp, path)
        paths.append(path)
    return paths


def daemon_config(load: Workload, clips: list[Path], *, variant: int, endpoint: str, metrics_port: int) -> dict:
    """The configuration of ``variant`` 0 (conf 0.25, every camera at ``fps``) or 1 (conf 0.3, cam0 at fps - 1)."""
    cams = []
    for i, clip in enumerate(clips):
        fps = load.fps - 1 if variant == 1 and i == 0 and load.fps > 1 else load.fps
        cams.append({"id": f"cam{i}", "url": str(clip), "loop": True, "realtime": True, "max_fps": fps})
    return {
        "model": {"weights": str(WEIGHTS), "img_size": IMG_SIZE, "conf_thres": CONF[variant]},
        "devices": ["cpu"],
        "publish": {"endpoint": endpoint, "hwm": 100000, "stats_interval_s": load.stats_interval_s},
        "batching": {"max_batch": load.cameras, "max_wait_ms": 10},
        "ring": {"max_width": load.width, "max_height": load.height},
        "metrics": {"port": metrics_port, "host": "127.0.0.1"},
        "log_level": "info",
        "cameras": cams,
    }


def write_config(path: Path, config: dict) -> None:
    """Write ``config`` as YAML, atomically (a reload never reads a half-written file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    os.replace(tmp, path)
