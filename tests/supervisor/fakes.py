"""Stand-in children for supervisor tests (module level: spawned processes import them)."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

from streamdet.pipeline.decode.contract import DecoderLive
from streamdet.pipeline.ring.buffer import FrameRing
from streamdet.pipeline.worker.contract import WorkerLive


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
    live = spec.live.reader(DecoderLive.from_json) if spec.live is not None else None
    while not stop.is_set():
        if live is not None:
            live.poll()
        for cam, ring in rings.items():
            ring.set_state("streaming")
            ring.heartbeat()
            if live is not None and live.current is not None:
                ring.set_error(f"max_fps={live.current.max_fps[cam]:g}")
        time.sleep(0.05)
    for ring in rings.values():
        ring.close()


def fake_worker(spec: Any, stop: Any, control: Any) -> None:
    """Serves at once; writes what it serves (its live settings: cameras, NMS, ...; the channel's
    generation) to a JSON file named after the worker beside its live settings file."""
    out = Path(control.live.path).with_suffix(".seen.json")
    reader = control.live.reader(WorkerLive.from_json)
    control.set_phase("serving")
    while not stop.is_set():
        control.heartbeat.value = time.time()
        live = reader.poll()
        if live is not None:
            out.write_text(json.dumps({"pid": os.getpid(), "generation": reader.seen, **live.to_json(),
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


def _starts(control: Any) -> int:
    """Counts this worker's starts in a file beside its live settings; returns this start's number."""
    path = Path(control.live.path).with_suffix(".starts")
    n = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(n))
    return n


def serve_once_then_die_while_starting(spec: Any, stop: Any, control: Any) -> None:
    """Serves on its first start, then dies; every later start dies while still loading (as a
    worker the OOM killer takes while it reloads its model)."""
    if _starts(control) == 1:
        serve_briefly_then_crash(spec, stop, control)
    control.heartbeat.value = -time.time()
    time.sleep(0.2)
    raise SystemExit(3)


def serve_first_then_load_slowly(spec: Any, stop: Any, control: Any) -> None:
    """Serves on its first start; every later start stays loading (heartbeating) until stopped."""
    if _starts(control) == 1:
        beat_until_stopped(stop, control.heartbeat, control.phase)
        return
    while not stop.is_set():
        control.heartbeat.value = -time.time()
        time.sleep(0.05)


def decoder_serving_then_crashing(spec: Any, stop: Any) -> None:
    """Heartbeats its rings for a moment (it served), then dies."""
    rings = {cam: FrameRing.attach(name) for cam, name in spec.ring_names.items()}
    end = time.monotonic() + 0.6
    while time.monotonic() < end:
        for ring in rings.values():
            ring.set_state("streaming")
            ring.heartbeat()
        time.sleep(0.05)
    raise SystemExit(3)


BAD_ERROR = "not a decodable video file (stand-in)"


def finishing_decoder(spec: Any, stop: Any) -> None:
    """A camera whose file is named ``bad*.mp4`` fails for good at once (state, error, flag), as
    the real decoder does; a decoder left without a camera exits with EXIT_FINISHED (79); the
    other cameras stream as with :func:`fake_decoder`."""
    bad = {s.camera_id for s in spec.sources if Path(s.url).name.startswith("bad")}
    for cam in bad:
        ring = FrameRing.attach(spec.ring_names[cam])
        ring.set_state("failed", error=BAD_ERROR)
        ring.close()
        spec.finished[cam].value = 1
    if bad == set(spec.ring_names):
        raise SystemExit(79)
    fake_decoder(dataclasses.replace(spec, ring_names={c: n for c, n in spec.ring_names.items() if c not in bad}),
                 stop)
