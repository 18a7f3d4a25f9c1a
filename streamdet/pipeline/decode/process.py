"""The decoder process: one :class:`~streamdet.pipeline.decode.reader.CameraReader` thread per camera.

The supervisor spawns :func:`decoder_main` for one camera, or for a group of cameras
(``decode.cameras_per_process``). Never imports torch.

- A camera that is down never blocks the others: each has its own thread, and a thread that
  crashes is restarted after 1, 2, 4 ... 30 s.
- The process heartbeats each camera's ring from its main loop while the camera's thread shows
  progress within what its own timeouts allow (a frozen process, or a reader stuck beyond every
  timeout, stops the heartbeat: the supervisor then kills and restarts the process).
- A camera that finished for good (a file that ended, or one that failed for good: see
  :mod:`streamdet.pipeline.decode.reader`) lets its thread end, having closed its ring, and the process
  sets the camera's ``finished`` flag (shared with the supervisor, which releases the camera's
  ring once the worker has taken its frames, keeping its final state for stats and metrics). The
  other cameras of the process go on.
- A process whose every camera finished exits with :data:`EXIT_FINISHED`: the supervisor does not
  restart it (until a reload changes one of its cameras), so a camera that failed for good holds
  no process, thread or ring.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from streamdet.pipeline.decode.contract import EXIT_FINISHED, DecoderSpec, EventLike
from streamdet.pipeline.decode.reader import POLL_S, CameraReader
from streamdet.pipeline.decode.source import CameraSource
from streamdet.pipeline.live import LiveChannel
from streamdet.pipeline.ring.buffer import FrameRing
from streamdet.redact import redact_text

log = logging.getLogger("streamdet.decode")



@dataclass
class _CameraThread:
    """decoder_main's bookkeeping for one camera's thread."""

    source: CameraSource
    ring_name: str
    thread: threading.Thread | None = None
    finished: bool = False  # its thread is done for good: the file ended or failed for good, or stop
    crashes: int = 0
    restart_at: float = 0.0
    started_at: float = 0.0
    result: dict = field(default_factory=dict)
    reader: CameraReader | None = None


def _camera_thread_body(cam: _CameraThread, stop: EventLike, start_gate: EventLike | None = None,
                        live: LiveChannel | None = None) -> None:
    """Attach the ring and run the reader; an unexpected crash is logged (redacted) and
    recorded in the ring, and decoder_main restarts the thread after a backoff."""
    ring: FrameRing | None = None
    try:
        try:
            ring = FrameRing.attach(cam.ring_name)
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"cannot attach ring {cam.ring_name}: {exc}") from exc
        cam.reader = CameraReader(cam.source, ring, stop, start_gate=start_gate, live=live)
        cam.reader.run()
        cam.result["finished"] = cam.reader.finished
        cam.result["ok"] = True
    except BaseException as exc:  # one camera never takes the process down
        text = redact_text(f"{type(exc).__name__}: {exc}")
        log.error("camera=%s url=%s: reader crashed: %s", cam.source.camera_id, cam.source.redacted_url, text)
        log.debug("camera=%s traceback: %s", cam.source.camera_id,
                  redact_text("".join(traceback.format_exception(exc))).replace("\n", " | "))
        if ring is not None:
            try:
                ring.set_state("failed", error=text[:256])
                ring.heartbeat()
            except Exception:
                log.debug("camera=%s: cannot record the crash in the ring", cam.source.camera_id)
    finally:
        if ring is not None:
            ring.close()


def _process_beat(cam: _CameraThread, now: float) -> None:
    """Heartbeat the camera's ring from the process's main loop while its reader thread is alive
    and has shown progress within what its own timeouts allow: a reader waiting on a slow source
    is not a hang, but a frozen process (no main loop) or a reader stuck beyond every timeout is."""
    reader = cam.reader
    if cam.thread is None or not cam.thread.is_alive() or reader is None:
        return
    s = cam.source
    if now - reader.last_beat < s.open_timeout_s + s.read_limit_s + POLL_S + 5.0:
        # the thread may close its ring between the check and the beat
        with contextlib.suppress(ValueError, TypeError):
            reader.ring.heartbeat(reader.pid)


def _thread_ended(cam: _CameraThread, now: float, finished_flags: dict[str, Any]) -> None:
    """Bookkeeping once ``cam``'s thread is no longer alive: done for good, or a restart later."""
    cam.thread = None
    if cam.result.get("ok"):
        cam.finished = True
        how = cam.result.get("finished")
        flag = finished_flags.get(cam.source.camera_id)
        if how is not None:
            log.info("camera=%s: %s for good; its reader is done", cam.source.camera_id, how)
            if flag is not None:
                flag.value = 1
        return
    if now - cam.started_at > 60.0:
        cam.crashes = 0  # it ran fine for a while
    delay = min(30.0, 1.0 * 2 ** cam.crashes)
    cam.crashes += 1
    cam.restart_at = now + delay
    log.warning("camera=%s: reader thread died; restarting in %.0f s", cam.source.camera_id, delay)


def decoder_main(spec: DecoderSpec, stop_event: EventLike) -> None:
    """Decoder process entry point: one CameraReader thread per camera until ``stop_event``.

    Returns once stop is set and the threads have finished (waiting at most ~2 s; a thread still
    inside a blocking FFmpeg read is a daemon thread and ends with the process, or by its read
    timeout). Raises ``SystemExit(EXIT_FINISHED)`` once every camera finished for good.
    """
    flags = spec.finished or {}
    sources = list(spec.sources)
    cams = [_CameraThread(src, spec.ring_names[src.camera_id]) for src in sources]
    log.info("decoder started (pid %d): cameras %s", os.getpid(), ", ".join(c.source.camera_id for c in cams))

    def start(cam: _CameraThread) -> None:
        cam.result = {}
        cam.reader = None
        cam.started_at = time.monotonic()
        cam.thread = threading.Thread(target=_camera_thread_body, args=(cam, stop_event, spec.start_gate, spec.live),
                                      name=f"decode-{cam.source.camera_id}", daemon=True)
        cam.thread.start()

    for cam in cams:
        start(cam)
    while not stop_event.wait(POLL_S):
        now = time.monotonic()
        for cam in cams:
            _process_beat(cam, now)
            if cam.finished:
                continue
            if cam.thread is None:
                if now >= cam.restart_at:
                    log.info("camera=%s: restarting reader", cam.source.camera_id)
                    start(cam)
            elif not cam.thread.is_alive():
                _thread_ended(cam, now, flags)
        if all(c.finished for c in cams) and not stop_event.is_set():
            log.info("decoder finished (pid %d): every camera ended or failed for good; exiting with status %d",
                     os.getpid(), EXIT_FINISHED)
            raise SystemExit(EXIT_FINISHED)
    deadline = time.monotonic() + 2.0
    for cam in cams:
        if cam.thread is not None:
            cam.thread.join(max(0.0, deadline - time.monotonic()))
    alive = [c.source.camera_id for c in cams if c.thread is not None and c.thread.is_alive()]
    if alive:
        log.warning("decoder stopping with readers still blocked in I/O: %s", ", ".join(alive))
    log.info("decoder stopped (pid %d)", os.getpid())
