"""Stand-in children for supervisor tests (module level: spawned processes import them)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from streamdet.pipeline.ring import FrameRing


def crash_at_once(*_args: Any) -> None:
    raise SystemExit(3)


def cannot_start(*_args: Any) -> None:
    raise SystemExit(78)


def hang_forever(*_args: Any) -> None:
    while True:
        time.sleep(1)


def beat_until_stopped(stop: Any, heartbeat: Any, phase: Any = None) -> None:
    if phase is not None:
        phase.value = 2
    while not stop.is_set():
        heartbeat.value = time.time()
        time.sleep(0.05)


def fake_decoder(spec: Any, stop: Any) -> None:
    """Heartbeats its cameras' rings as 'streaming' and records the max_fps it sees."""
    rings = {cam: FrameRing.attach(name) for cam, name in spec.ring_names.items()}
    while not stop.is_set():
        for cam, ring in rings.items():
            ring.set_state("streaming")
            ring.heartbeat()
            if spec.live_max_fps is not None:
                ring.set_error(f"max_fps={spec.live_max_fps[cam].value:g}")
        time.sleep(0.05)
    for ring in rings.values():
        ring.close()


def fake_worker(spec: Any, stop: Any, control: Any) -> None:
    """Serves at once; writes what it serves (cameras, thresholds, live generation) to a JSON file
    named after the worker beside its live settings file."""
    out = Path(control.live_path).with_suffix(".seen.json")
    control.set_phase("serving")
    seen_gen = -1
    while not stop.is_set():
        control.heartbeat.value = time.time()
        if control.generation.value != seen_gen:
            seen_gen = control.generation.value
            live = json.loads(Path(control.live_path).read_text())
            out.write_text(json.dumps({"pid": os.getpid(), "generation": seen_gen, **live,
                                       "spec_weights": str(spec.model.weights)}))
        time.sleep(0.05)


def serve_briefly_then_crash(spec: Any, stop: Any, control: Any) -> None:
    """Reaches serving, then dies: a crash loop, not a worker that cannot start."""
    control.set_phase("serving")
    control.heartbeat.value = time.time()
    time.sleep(0.6)
    raise SystemExit(3)


def decoder_crashing_for_cam2(spec: Any, stop: Any) -> None:
    if "cam2" in spec.ring_names:
        raise SystemExit(3)
    fake_decoder(spec, stop)
