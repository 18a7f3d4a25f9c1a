"""Cameras that finished for good: their rings released, their final state kept.

A file camera that ended, or that failed for good (not decodable, damaged data), is done until a
reload changes it. Its decoder thread ends and sets the camera's shared ``finished`` flag (a
decoder process left without a camera exits, see :mod:`streamdet.pipeline.decode.process`).
The supervisor then releases the camera's ring: once the worker has taken every frame written to
it (the lossless tail of a file is published) and ``hang_timeout_s`` has passed since (a batch in
flight is published by then, or its worker is killed as hung), or at the latest
RELEASE_WAIT_MAX_S after the camera finished. Releasing means: a snapshot of the ring's status is
kept (state ``ended`` or ``failed`` with ``last_error``, final counters), the worker is told to
detach the camera (its live settings carry the snapshot instead, so its stats messages keep
reporting the camera), and the supervisor unmaps and unlinks the segment. The metrics read the
snapshot where no ring is left.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streamdet.pipeline.ring.layout import RingStatus

if TYPE_CHECKING:
    from streamdet.supervisor.state import SupervisorState

log = logging.getLogger("streamdet.supervisor")

RELEASE_WAIT_MAX_S = 120.0  # a finished camera's ring is released after this long, read to its end or not


@dataclass
class _Pending:
    """A finished camera whose ring is not released yet."""

    since: float  # monotonic: when the supervisor saw the flag
    drained_since: float | None = None  # monotonic: since when the worker has taken every frame


def final_settings(status: RingStatus) -> dict[str, Any]:
    """What a worker's live settings carry for a released camera: its final state, error and
    decoder counters (the keys of the worker's ``_ring_counters``), for its stats messages."""
    return {"state": status.state, "last_error": status.last_error, "error_time": status.error_time,
            "reconnects": status.reconnects, "decoded": status.frames_decoded, "skipped": status.frames_skipped,
            "behind": status.frames_behind, "decode_ns": status.decode_ns}


class FinishedCameras:
    """The ``finished`` flags shared with the decoders and the released cameras' final status."""

    def __init__(self, state: SupervisorState) -> None:
        self.state = state
        self.flags: dict[str, Any] = {}  # camera -> shared byte, set to 1 by its decoder process
        self.released: dict[str, RingStatus] = {}  # camera -> its ring's status when it was released
        self._pending: dict[str, _Pending] = {}

    def flag(self, cam: str) -> Any:
        """The camera's shared flag (created at 0 on first use)."""
        value = self.flags.get(cam)
        if value is None:
            value = self.flags[cam] = self.state.ctx.RawValue("b", 0)
        return value

    def is_finished(self, cam: str) -> bool:
        """Whether the camera finished for good (its ring may still wait for its release)."""
        value = self.flags.get(cam)
        return value is not None and bool(value.value)

    def restart(self, cam: str) -> bool:
        """The camera runs again (a reload changed it): clear its flag and its final state.
        Returns whether its ring had been released (the caller creates a new one)."""
        if cam in self.flags:
            self.flags[cam].value = 0
        self._pending.pop(cam, None)
        return self.released.pop(cam, None) is not None

    def forget(self, cam: str) -> None:
        """The camera was removed from the configuration."""
        self.flags.pop(cam, None)
        self._pending.pop(cam, None)
        self.released.pop(cam, None)

    def statuses(self) -> dict[str, RingStatus]:
        """Every camera's status: from its ring, or the final one of a released camera."""
        out = dict(self.released)
        out.update({cam: ring.status() for cam, ring in list(self.state.rings.items())})
        return out

    def poll(self) -> list[str]:
        """The finished cameras whose rings are due for release (see the module docstring), with
        their final status recorded; the caller releases them (``Reconciler.release_ring``)."""
        now = time.monotonic()
        grace = self.state.config.supervisor.hang_timeout_s
        due = []
        for cam, value in list(self.flags.items()):
            ring = self.state.rings.get(cam)
            if not value.value or ring is None:
                continue
            pending = self._pending.setdefault(cam, _Pending(now))
            st = ring.status()
            if st.consumed_seq < st.latest_seq:
                pending.drained_since = None
            elif pending.drained_since is None:
                pending.drained_since = now
            if pending.drained_since is not None and now - pending.drained_since >= grace:
                due.append((cam, st, ""))
            elif now - pending.since >= RELEASE_WAIT_MAX_S:
                due.append((cam, st, f" ({st.latest_seq - st.consumed_seq} frames never read)"))
        for cam, st, note in due:
            del self._pending[cam]
            self.released[cam] = self.state.rings[cam].status()  # final: its decoder is done with it
            why = f": {st.last_error}" if st.state == "failed" and st.last_error else ""
            log.info("camera %s %s%s; its ring is released%s", cam, st.state, why, note)
        return [cam for cam, _, _ in due]
