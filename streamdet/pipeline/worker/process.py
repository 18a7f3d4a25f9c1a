"""The worker process: load and warm up the stages, attach the rings, then serve until stopped."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from streamdet.pipeline.ring.buffer import FrameRing
from streamdet.pipeline.worker.contract import EXIT_CANNOT_START, StartupBeat, WorkerControl, WorkerSpec
from streamdet.pipeline.worker.feed import Feed
from streamdet.pipeline.worker.feed_choice import FeedUnavailable, choose_feed
from streamdet.pipeline.worker.loop import WorkerLoop
from streamdet.pipeline.worker.runner import PipelinedRunner
from streamdet.stopflag import StopFlag

log = logging.getLogger("streamdet.worker")


def worker_main(spec: WorkerSpec, stop: StopFlag, control: WorkerControl) -> None:
    """Process entry point: attach rings, load and warm up the model, then serve until ``stop``."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: idle threads sleep
    control.set_phase("loading")
    with StartupBeat(control.heartbeat):
        ready = _start_worker(spec, control)
    if ready is None:
        return
    stages, rings, publisher, feed = ready
    loop = WorkerLoop(spec, rings, stages, publisher, control.heartbeat, control, feed=feed)
    try:
        control.set_phase("serving")
        if spec.pipelined:
            PipelinedRunner(loop, lanes=len(stages.backends), stuck_s=spec.stuck_s).run(stop)
        else:
            loop.run(stop)
    finally:
        publisher.close()
        loop.close_rings()
        feed.close()
        stages.close()


def _start_worker(spec: WorkerSpec, control: WorkerControl) -> tuple[Any, dict[str, FrameRing], Any, Feed] | None:
    """Load the stages, attach the rings, warm up, choose the feed (``model.preprocess``), connect the publisher.

    Exits with EXIT_CANNOT_START when a restart cannot help (a bad checkpoint, a missing backend,
    a device that does not exist), after one clear log line.
    """
    from streamdet.errors import ModelError
    from streamdet.model.checkpoint import read_checkpoint
    from streamdet.model.input_size import choose_img_size
    from streamdet.pipeline.backends import DeviceUnavailable, ensure_device
    from streamdet.pipeline.registry import RegistryError
    from streamdet.pipeline.settings import InferenceOptions
    from streamdet.pipeline.stages import build_stages
    from streamdet.pipeline.worker.publish import Publisher

    try:
        ensure_device(spec.device)
        m = spec.model
        input_size = choose_img_size(m.img_size, read_checkpoint(m.weights).trained_img_size)
        log.info("%s: %s", spec.name, input_size.describe())
        if input_size.warning:
            log.warning("%s: %s", spec.name, input_size.warning)
        stages = build_stages(InferenceOptions.from_config(
            m, device=spec.device, img_size=input_size.size, threads=spec.threads,
            lanes=spec.lanes if spec.pipelined else 1))
    except (ModelError, ValueError, RegistryError, DeviceUnavailable) as exc:
        log.error("%s cannot start: %s", spec.name, exc)
        raise SystemExit(EXIT_CANNOT_START) from exc
    rings = {}
    for cam, name in spec.ring_names.items():
        try:
            rings[cam] = FrameRing.attach(name)
        except FileNotFoundError:  # released since this start was decided (the camera finished for good)
            log.info("%s: camera %s has no ring any more (it finished); not attached", spec.name, cam)
    try:
        control.set_phase("warming_up")
        t0 = time.monotonic()
        max_batch = min(spec.batching.max_batch, max(1, len(rings)))
        stages.warmup([spec.warmup_shape], max_batch)
        try:
            feed = choose_feed(spec.name, getattr(spec.model, "preprocess", "auto"), spec.device, stages,
                               max_batch=spec.batching.max_batch, warmup_hw=spec.warmup_shape)
        except FeedUnavailable as exc:
            log.error("%s cannot start: %s", spec.name, exc)
            raise SystemExit(EXIT_CANNOT_START) from exc
        log.info("%s ready on %s: %d cameras, backend %s, preprocess %s, %d inference lane(s) of %s thread(s), "
                 "warm-up %.1f s", spec.name, spec.device, len(rings), stages.backend.name, feed.stats()["preprocess"],
                 len(stages.backends), spec.threads or "default", time.monotonic() - t0)
        return stages, rings, Publisher(spec.publish_endpoint), feed
    except BaseException:
        stages.close()
        for ring in rings.values():
            ring.close()
        raise
