"""Bring the running children, rings and proxy in line with a plan: at start and on reload.

A reload is applied as a diff against what runs. Cameras added, removed or changed are started,
stopped or restarted; an unchanged camera keeps its decoder, its ring and its worker (no gap in its
messages, its ``seq`` keeps counting). NMS settings, tracking and ``max_fps`` apply live: each
child has one live-settings channel (:class:`~streamdet.pipeline.live.LiveChannel`), on which a
reload sends its new settings whole (``WorkerLive``, ``DecoderLive``). What a worker needs a
restart for (weights, img_size, backend, devices, batching, threads) restarts only that worker.
A change of ``ring`` (slot count or size) re-creates every ring and so restarts every child;
``publish`` restarts the proxy; ``metrics`` the metrics endpoint; ``mqtt`` the MQTT bridge child
alone (:mod:`streamdet.supervisor.bridge`); ``supervisor`` and
``log_level`` apply to the supervisor at once (children take a new log level when they restart).

Cameras that finished for good (:mod:`streamdet.supervisor.finished`) stay finished, without a
ring, while a reload leaves them unchanged; a reload that changes one (or the ring settings)
creates its ring again and starts it. A child's arguments are built at each start, from the rings
that exist then: a restarted decoder leaves out its finished cameras, a restarted worker attaches
only the rings that are left.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from streamdet.config import Config
from streamdet.pipeline.decode.contract import DecoderLive, DecoderSpec
from streamdet.pipeline.live import LiveChannel
from streamdet.pipeline.ring.buffer import FrameRing
from streamdet.pipeline.ring.layout import slot_bytes_for
from streamdet.pipeline.worker.contract import WorkerControl, WorkerLive, WorkerSpec
from streamdet.stopflag import StopFlag
from streamdet.supervisor.bridge import BridgeRunner
from streamdet.supervisor.children import Child, ChildTargets
from streamdet.supervisor.finished import final_settings
from streamdet.supervisor.plan import DaemonPlan, DecoderPlan, WorkerPlan, make_plan
from streamdet.supervisor.runtime import ring_name
from streamdet.supervisor.state import ReloadOutcome
from streamdet.transport.proxy import PublishProxy

if TYPE_CHECKING:
    from streamdet.supervisor.finished import FinishedCameras
    from streamdet.supervisor.state import SupervisorState

log = logging.getLogger("streamdet.supervisor")


class Reconciler:
    """Creates and updates the supervisor's rings, children and proxy (see the module docstring)."""

    def __init__(self, state: SupervisorState, finished: FinishedCameras, targets: ChildTargets | None = None) -> None:
        self.state = state  # the supervisor's state (read and changed here)
        self.finished = finished
        self.targets = targets if targets is not None else ChildTargets()
        self.live: dict[str, LiveChannel] = {}  # child name -> its live settings channel
        self.bridge = BridgeRunner(state)  # the MQTT bridge child (mqtt:)

    # -- rings -----------------------------------------------------------------------------
    def _create_ring(self, cam: str) -> None:
        r = self.state.config.ring
        slot_bytes = slot_bytes_for(r.max_width, r.max_height, "yuv420p")
        self.state.rings[cam] = FrameRing.create(ring_name(os.getpid(), cam), cam, r.slots, slot_bytes)

    def _remove_ring(self, cam: str) -> None:
        ring = self.state.rings.pop(cam, None)
        if ring is not None:
            ring.close()
            ring.unlink()  # processes that still map it keep their mapping until they exit

    def release_ring(self, cam: str) -> None:
        """A camera finished for good (its final status already in ``finished.released``): unlink
        its ring and tell its worker to detach it (its live settings carry the final status)."""
        self._remove_ring(cam)
        plan = self.state.plan
        for w in plan.workers if plan is not None else ():
            if cam in w.cameras and w.name in self.live:
                self._write_live(w)

    def _channel(self, name: str) -> LiveChannel:
        """The child's live settings channel (a file in the runtime directory and a shared counter)."""
        channel = self.live.get(name)
        if channel is None:
            path = self.state.workdir / f"{name}.live.json"
            channel = self.live[name] = LiveChannel(str(path), self.state.ctx.RawValue("L", 0))
        return channel

    def _set_max_fps(self, plan: DecoderPlan) -> None:
        self._channel(plan.name).publish(DecoderLive({s.camera_id: float(s.max_fps or 0.0) for s in plan.sources}))

    # -- children --------------------------------------------------------------------------
    def _decoder_args(self, plan: DecoderPlan) -> Callable[[StopFlag], tuple[Any, ...]]:
        def build(stop: StopFlag) -> tuple[Any, ...]:  # at each start: its cameras not finished yet
            finished = self.finished
            sources = [s for s in plan.sources if not finished.is_finished(s.camera_id)]
            cams = [s.camera_id for s in sources]
            spec = DecoderSpec(sources=sources, ring_names={c: self.state.rings[c].name for c in cams},
                               start_gate=self.state.start_gate, live=self._channel(plan.name),
                               finished={c: finished.flag(c) for c in cams})
            return spec, stop

        return build

    def _write_live(self, plan: WorkerPlan) -> None:
        rings, released = self.state.rings, self.finished.released
        self._channel(plan.name).publish(WorkerLive(
            cameras={c: rings[c].name for c in plan.cameras if c in rings}, nms=plan.nms(), tracking=plan.tracking(),
            finished={c: final_settings(released[c]) for c in plan.cameras if c in released}))

    def _worker_args(self, plan: WorkerPlan, child: Child) -> Callable[[StopFlag], tuple[Any, ...]]:
        child.env = plan.env  # the worker's GPU alone (it sees it as cuda:0)
        control = WorkerControl(heartbeat=child.heartbeat, phase=child.phase, live=self._channel(plan.name))

        def build(stop: StopFlag) -> tuple[Any, ...]:  # at each start: the rings that exist now
            rings = self.state.rings
            spec = WorkerSpec(
                name=plan.name, device=plan.spec_device,
                ring_names={c: rings[c].name for c in plan.cameras if c in rings},
                model=plan.model, batching=plan.batching, publish_endpoint=self.state.internal_endpoint,
                stats_interval_s=plan.stats_interval_s, threads=plan.threads, lanes=plan.lanes, stuck_s=plan.stuck_s,
            )
            return spec, stop, control

        return build

    def _new_decoder(self, plan: DecoderPlan) -> Child:
        self._set_max_fps(plan)
        child = Child(plan.name, "decoder", plan.cameras, self._decoder_args(plan), self.targets.decoder)
        self.state.children[plan.name] = child
        return child

    def _new_worker(self, plan: WorkerPlan) -> Child:
        self._write_live(plan)
        child = Child(plan.name, "worker", plan.cameras, lambda stop: (), self.targets.worker,
                      heartbeat=self.state.ctx.RawValue("d", 0.0), phase=self.state.ctx.RawValue("i", 0))
        child.build_args = self._worker_args(plan, child)
        self.state.children[plan.name] = child
        return child

    def _restart(self, child: Child) -> None:
        """Restart ``child`` with its (already updated) arguments, without counting a failure."""
        child.parked = None
        child.finished = False
        if child.process is None:
            child.next_start, child.start_failures = 0.0, 0
            return
        child.restart_when_stopped = True
        child.request_stop(self.state.config.supervisor.stop_timeout_s)

    def _retire(self, child: Child) -> None:
        child.retire = True
        child.request_stop(self.state.config.supervisor.stop_timeout_s)

    def _revive(self, plan: DecoderPlan, before: DecoderPlan | None) -> set[str]:
        """The finished cameras of ``plan`` whose source this reload changed (all of them without
        ``before``): cleared to run again, with a new ring where theirs was released."""
        finished = self.finished
        old = _source_keys(before) if before is not None else {}
        revived = set()
        for cam, key in _source_keys(plan).items():
            if old.get(cam) == key or not (finished.is_finished(cam) or cam in finished.released):
                continue
            if finished.restart(cam):
                self._create_ring(cam)
            revived.add(cam)
        return revived

    def create(self, plan: DaemonPlan) -> None:
        """The first start: every ring, decoder and worker of ``plan``."""
        for d in plan.decoders:
            for cam in d.cameras:
                self._create_ring(cam)
        for d in plan.decoders:
            self._new_decoder(d)
        for w in plan.workers:
            self._new_worker(w)
        self.bridge.sync(None, self.state.config)
        self.state.plan = plan

    # -- proxy -----------------------------------------------------------------------------
    def start_proxy(self, config: Config) -> PublishProxy:
        from streamdet.bridge.child import admit_bridge
        from streamdet.supervisor.observe import on_stats_callback
        from streamdet.transport.keys import server_keys_from_config

        curve = admit_bridge(server_keys_from_config(config), self.bridge.keys)  # the MQTT bridge may subscribe
        proxy = PublishProxy(self.state.internal_endpoint, config.publish.endpoint, config.publish.hwm,
                             curve=curve, on_stats=on_stats_callback(self.state))
        proxy.start()
        log.info("publishing on %s", config.publish.endpoint)
        return proxy

    def restart_proxy(self, config: Config, why: str) -> PublishProxy | None:
        old = self.state.proxy
        if old is not None:
            old.stop()
        log.warning("restarting the publish proxy: %s", why)
        try:
            return self.start_proxy(config)
        except Exception as exc:
            log.error("cannot start the publish proxy on %s: %s", config.publish.endpoint, exc)
            return None

    # -- reload ----------------------------------------------------------------------------
    def apply(self, new: Config) -> ReloadOutcome:
        """Apply ``new`` as a diff against what runs; returns a one-line summary of the changes and
        what the core restarts itself (the metrics endpoint, the live view)."""
        sup = self.state
        old, old_plan = sup.config, sup.plan
        assert old_plan is not None
        plan = make_plan(new, sup.cpus, previous=old_plan)
        sup.config = new
        if new.log_level != old.log_level:
            logging.getLogger("streamdet").setLevel(new.log_level.upper())
        rings_changed = new.ring != old.ring
        old_cams = set(sup.rings) | set(self.finished.released)
        new_cams = {c for d in plan.decoders for c in d.cameras}
        added, removed = sorted(new_cams - old_cams), sorted(old_cams - new_cams)
        notes: list[str] = []

        if rings_changed:
            for cam in sorted(old_cams & new_cams):
                self._remove_ring(cam)
                self.finished.restart(cam)
                self._create_ring(cam)
            notes.append("ring settings changed: every camera restarted")
        for cam in added:
            self._create_ring(cam)

        old_decoders = {d.name: d for d in old_plan.decoders}
        restarted_cams: list[str] = []
        revived: set[str] = set()  # finished cameras this reload changed: they run again
        live_fps: list[str] = []
        wanted = {d.name for d in plan.decoders}
        for retired in [c for c in sup.children.values() if c.kind == "decoder" and c.name not in wanted]:
            self._retire(retired)
        for d in plan.decoders:
            child: Child | None = sup.children.get(d.name)
            before = old_decoders.get(d.name)
            revived |= self._revive(d, before)
            if child is None or child.retire:
                if child is not None:  # removed and re-added within one reload cycle: restart instead
                    child.retire = False
                    child.cameras = d.cameras
                    self._set_max_fps(d)
                    child.build_args = self._decoder_args(d)
                    self._restart(child)
                else:
                    self._new_decoder(d)
                continue
            if before is not None and any(
                (a.max_fps or 0) != (b.max_fps or 0) for a, b in zip(before.sources, d.sources, strict=False)
            ):
                live_fps += [s.camera_id for s in d.sources]
            self._set_max_fps(d)
            child.cameras = d.cameras
            child.build_args = self._decoder_args(d)
            if rings_changed or before is None or before.restart_key() != d.restart_key() or child.parked:
                restarted_cams += [c for c in d.cameras if c not in added]
                self._restart(child)

        old_workers = {w.name: w for w in old_plan.workers}
        restarted_workers: list[str] = []
        live_workers: list[str] = []
        wanted = {w.name for w in plan.workers}
        for retired in [c for c in sup.children.values() if c.kind == "worker" and c.name not in wanted]:
            self._retire(retired)
            restarted_workers.append(f"{retired.name} (removed)")
        for w in plan.workers:
            child = sup.children.get(w.name)
            before_worker = old_workers.get(w.name)
            if child is None or child.retire:
                if child is not None:
                    child.retire = False
                    self._write_live(w)
                    child.build_args = self._worker_args(w, child)
                    child.cameras = w.cameras
                    self._restart(child)
                else:
                    self._new_worker(w)
                    restarted_workers.append(f"{w.name} (new)")
                continue
            if rings_changed or before_worker is None or before_worker.restart_key() != w.restart_key():
                self._write_live(w)
                child.build_args = self._worker_args(w, child)
                child.cameras = w.cameras
                self._restart(child)
                restarted_workers.append(w.name)
            elif (before_worker.cameras != w.cameras or before_worker.nms() != w.nms()
                  or before_worker.tracking() != w.tracking() or revived & set(w.cameras)):
                self._write_live(w)
                child.build_args = self._worker_args(w, child)
                child.cameras = w.cameras
                live_workers.append(w.name)

        for cam in removed:
            self._remove_ring(cam)
            self.finished.forget(cam)
        if (new.publish.endpoint, new.publish.hwm, new.publish.curve) != (
                old.publish.endpoint, old.publish.hwm, old.publish.curve):
            sup.proxy = self.restart_proxy(new, "publish settings changed")
            notes.append("publish proxy restarted")
        restart_metrics = new.metrics != old.metrics
        if restart_metrics:
            notes.append("metrics endpoint restarted")
        bridge_note = self.bridge.sync(old, new)  # mqtt: alone restarts the bridge alone
        if bridge_note:
            notes.append(bridge_note)
        restart_web = new.web != old.web
        if restart_web:
            notes.append("live view restarted" if new.web is not None else "live view stopped")
        sup.plan = plan
        parts = [f"cameras +{len(added)} -{len(removed)} restarted {len(restarted_cams)}"
                 f" unchanged {len(new_cams) - len(added) - len(restarted_cams)}"]
        for label, items in (("added", added), ("removed", removed), ("restarted", restarted_cams),
                             ("max_fps live", live_fps), ("workers restarted", restarted_workers),
                             ("workers updated live", live_workers)):
            if items:
                parts.append(f"{label}: {', '.join(items)}")
        return ReloadOutcome("; ".join(parts + notes), restart_metrics=restart_metrics, restart_web=restart_web)


def _source_keys(plan: DecoderPlan) -> dict[str, object]:
    """camera -> what a change of restarts it (its source but ``max_fps``, applied live)."""
    return dict(zip(plan.cameras, plan.restart_key(), strict=True))
