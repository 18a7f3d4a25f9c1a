"""The live view's model: every camera's feed, the sampler that copies frames, stats for the page.

Consumes the supervisor's rings (by name: the sampler maps each one itself, read-only, and never
records consumption, so neither the decoder nor the worker notices it), stats messages and
detection messages. Produces per-camera :class:`~streamdet.web.feed.CameraFeed` pictures and
the rows of ``/api/cameras``.

Cost: a camera is *watched* while an MJPEG stream is open on it or a picture was asked for in the
last ``WATCH_S`` seconds. Only watched cameras are sampled (and only their detections are
subscribed, see :mod:`streamdet.web.detections`); with no viewer the sampler thread sleeps.
The sampler copies the frame the worker just took (``consumed_seq``), at most ``web.max_fps``
per camera; when the worker takes none (it is down or slow), the newest frame instead.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from streamdet.config.web import WebConfig
from streamdet.pipeline.ring.buffer import FrameRing
from streamdet.pipeline.ring.layout import RingStatus
from streamdet.web.feed import CameraFeed

__all__ = ["FORGET_S", "WATCH_S", "LiveView"]

log = logging.getLogger("streamdet.web")

WATCH_S = 3.0  # a picture request keeps its camera sampled this long
FORGET_S = 30.0  # a camera nobody watched this long gives back the frames and JPEGs it held
_TICK_S = 0.01  # sampler period while something is watched (a consumed frame stays in the ring longer)
_STALL = 2.0  # intervals without a consumed frame before the newest frame is shown instead


class LiveView:
    """Feeds, sampler thread and stats store (see the module docstring).

    ``cameras()``: the configured camera ids, in order; ``ring_names()``: camera -> ring segment
    name of the cameras that have a ring now; ``statuses()``: camera -> ring status (decoder
    state, last error), as the metrics get them; ``sizes()``: camera -> source size of its newest
    frame, for the cameras nobody watches (a watched camera's feed knows its size).
    """

    def __init__(self, config: WebConfig, *, cameras: Callable[[], Sequence[str]],
                 ring_names: Callable[[], Mapping[str, str]],
                 statuses: Callable[[], Mapping[str, RingStatus]] | None = None,
                 sizes: Callable[[], Mapping[str, tuple[int, int] | None]] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.cameras = cameras
        self.ring_names = ring_names
        self.statuses = statuses
        self.sizes = sizes
        self.clock = clock
        self._feeds: dict[str, CameraFeed] = {}
        self._feeds_lock = threading.Lock()
        self._rings: dict[str, FrameRing] = {}  # the sampler's own mappings (sampler thread only)
        self._stats: dict[str, tuple[dict[str, Any], float | None]] = {}
        self._stats_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.copies = 0  # frames copied out of rings (zero as long as nobody watches)

    # -- feeds and viewers --------------------------------------------------------------------

    def feed(self, camera: str) -> CameraFeed | None:
        """The camera's feed, or None for a camera that is not configured (a 404)."""
        if camera not in self.cameras():
            return None
        with self._feeds_lock:
            feed = self._feeds.get(camera)
            if feed is None:
                feed = self._feeds[camera] = CameraFeed(camera, self.config.jpeg_quality)
            return feed

    def watch(self, feed: CameraFeed) -> None:
        """A viewer asked for a picture of this camera: sample it (now and for WATCH_S seconds)."""
        feed.last_watched = self.clock()
        self._wake.set()

    def watched(self) -> set[str]:
        """Cameras with a viewer now."""
        now = self.clock()
        with self._feeds_lock:
            return {cam for cam, f in self._feeds.items()
                    if not f.closed and (f.streams > 0 or now - f.last_watched < WATCH_S)}

    def encodes(self) -> int:
        """JPEG encodings so far, all cameras together."""
        with self._feeds_lock:
            return sum(f.encodes for f in self._feeds.values())

    # -- inputs -------------------------------------------------------------------------------

    def on_detections(self, msg: Mapping[str, Any]) -> None:
        """A detections message (from :class:`~streamdet.web.detections.DetectionFeed`)."""
        with self._feeds_lock:
            feed = self._feeds.get(str(msg.get("camera")))
        if feed is not None:
            feed.add_detections(msg, self.clock())

    def on_stats(self, msg: Mapping[str, Any]) -> None:
        """A stats message: keep each camera's newest entry (from the proxy's capture thread)."""
        cams = msg.get("cameras")
        if not isinstance(cams, Mapping):
            return
        ts = msg.get("ts")
        with self._stats_lock:
            for cam, entry in cams.items():
                if isinstance(entry, Mapping):
                    self._stats[str(cam)] = (dict(entry), float(ts) if isinstance(ts, int | float) else None)

    # -- sampler ------------------------------------------------------------------------------

    def sample_once(self) -> int:
        """Copy what the watched cameras need now; returns the frames copied. Also maps new rings
        and unmaps those of cameras that are gone (sampler thread only)."""
        names = dict(self.ring_names())
        watched = self.watched()
        for cam in [c for c, r in self._rings.items() if names.get(c) != r.name or c not in watched]:
            with contextlib.suppress(Exception):
                self._rings.pop(cam).close()
        now = self.clock()
        with self._feeds_lock:
            for cam in [c for c in self._feeds if c not in self.cameras()]:
                self._feeds.pop(cam).close()
            idle = [f for f in self._feeds.values() if f.streams == 0 and now - f.last_watched > FORGET_S]
        for stale in idle:
            stale.forget()
        copied = 0
        for cam in watched:
            name = names.get(cam)
            if name is None:
                continue
            ring = self._rings.get(cam)
            if ring is None:
                try:
                    ring = self._rings[cam] = FrameRing.attach(name)
                except (OSError, ValueError) as exc:
                    log.debug("live view: cannot map the ring of %s: %s", cam, exc)
                    continue
            feed = self.feed(cam)
            if feed is not None and self._sample(feed, ring):
                copied += 1
        return copied

    def _sample(self, feed: CameraFeed, ring: FrameRing) -> bool:
        now = self.clock()
        interval = 1.0 / self.config.max_fps
        if now < feed.next_copy:
            return False
        consumed = ring.consumed_seq
        frame = None
        if consumed > feed.last_consumed:
            feed.last_consumed = consumed
            frame = ring.peek(consumed)  # the frame the worker is inferring now
        if frame is None and (feed.picture(False, now) is None or now - feed.last_copy >= _STALL * interval):
            frame = ring.peek()  # the worker takes nothing: show the newest frame all the same
        if frame is None:
            return False
        # on schedule (max_fps on average, not less because each copy comes a tick late), never catching up
        feed.next_copy = feed.next_copy + interval if now - feed.next_copy < interval else now + interval
        feed.last_copy = now
        self.copies += 1
        feed.add_frame(frame, now)
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = bool(self.watched())
                if busy or self._has_frames():
                    self.sample_once()
            except Exception:  # the live view must never take the supervisor down
                log.exception("live view: sampler error")
                busy = False
            if busy:
                self._stop.wait(_TICK_S)
            else:
                self._wake.wait(0.5)
                self._wake.clear()
        for ring in self._rings.values():
            with contextlib.suppress(Exception):
                ring.close()
        self._rings.clear()

    def _has_frames(self) -> bool:
        """Whether any feed still holds frames (or a ring mapping) that an idle sampler should release."""
        with self._feeds_lock:
            return bool(self._rings) or any(f.size is not None for f in self._feeds.values())

    def start(self) -> None:
        """Run the sampler thread."""
        self._thread = threading.Thread(target=self._run, name="streamdet-web-sampler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """End the sampler and every viewer's wait; unmap the rings."""
        self._stop.set()
        self._wake.set()
        with self._feeds_lock:
            for feed in self._feeds.values():
                feed.close()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # -- the page's numbers -------------------------------------------------------------------

    def camera_rows(self) -> list[dict[str, Any]]:
        """``/api/cameras``: one row per configured camera."""
        statuses = dict(self.statuses()) if self.statuses is not None else {}
        sizes = dict(self.sizes()) if self.sizes is not None else {}
        with self._stats_lock:
            stats = dict(self._stats)
        rows = []
        for cam in self.cameras():
            entry, ts = stats.get(cam, ({}, None))
            status = statuses.get(cam)
            with self._feeds_lock:
                feed = self._feeds.get(cam)
            size = feed.size if feed is not None and feed.size is not None else sizes.get(cam)
            raw_latency = entry.get("latency_ms")
            latency: Mapping[str, Any] = raw_latency if isinstance(raw_latency, Mapping) else {}
            error = status.last_error if status is not None and status.last_error else entry.get("last_error")
            error_ts = status.error_time if status is not None and status.last_error else entry.get("last_error_ts")
            rows.append({
                "id": cam,
                "width": size[0] if size else None,
                "height": size[1] if size else None,
                "fps": entry.get("fps"),
                "latency_ms": {"p50": latency.get("p50"), "p99": latency.get("p99")},
                "dropped": entry.get("dropped"),
                "drops": entry.get("drops") if isinstance(entry.get("drops"), Mapping) else {},
                "objects": entry.get("objects"),
                "published": entry.get("published"),
                "state": status.state if status is not None else entry.get("state"),
                "last_error": error or None,
                "last_error_ts": error_ts or None,
                "stats_ts": ts,
            })
        return rows
