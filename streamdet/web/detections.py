"""Detections for the live view: an in-process subscriber of the publish proxy, watched cameras only.

Consumes the detection messages the proxy forwards, through the XPUB's inproc ``view_endpoint``
(in the proxy's own ZeroMQ context; no handshake, so it works with CurveZMQ on the public
endpoint). It subscribes to ``det/<camera>/`` only while the camera is watched: the workers' PUBs
send only subscribed topics, so with no viewer no detection crosses to the supervisor at all.
Produces decoded messages for :meth:`~streamdet.web.live.LiveView.on_detections`.

The socket lives and dies with the proxy: a proxy restart (reload of ``publish:``) terminates
its context, this thread closes its socket and reconnects to the new proxy. The SUB has a small
receive high-water mark and the XPUB drops for a slow subscriber: never any back pressure.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import zmq

from streamdet import wire
from streamdet.errors import WireError
from streamdet.transport.sockets import make_socket

__all__ = ["DetectionFeed"]

log = logging.getLogger("streamdet.web")

_POLL_MS = 50
_RCVHWM = 64


class DetectionFeed:
    """Thread that feeds ``on_detections`` with the watched cameras' detections.

    ``proxy()`` returns the running publish proxy (anything with ``context`` and
    ``view_endpoint``) or None; ``watched()`` the cameras to subscribe to now.
    """

    def __init__(self, proxy: Callable[[], Any], watched: Callable[[], set[str]],
                 on_detections: Callable[[dict[str, Any]], None]) -> None:
        self.proxy = proxy
        self.watched = watched
        self.on_detections = on_detections
        self.received = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="streamdet-web-detections", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            proxy = self.proxy()
            ctx = getattr(proxy, "context", None)
            endpoint = getattr(proxy, "view_endpoint", None)
            if ctx is None or endpoint is None or not self.watched():
                self._stop.wait(0.1)
                continue
            try:
                self._serve(proxy, ctx, endpoint)
            except zmq.ZMQError as exc:  # the proxy's context ended under us (it stopped): start over
                log.debug("live view: detection subscriber ended: %s", exc)
            except Exception:
                log.exception("live view: detection subscriber error")
                self._stop.wait(0.5)

    def _serve(self, proxy: Any, ctx: zmq.Context, endpoint: str) -> None:
        sock = make_socket(ctx, zmq.SUB)
        try:
            sock.setsockopt(zmq.RCVHWM, _RCVHWM)
            sock.connect(endpoint)
            subscribed: set[str] = set()
            while not self._stop.is_set() and self.proxy() is proxy:
                want = self.watched()
                for cam in sorted(want - subscribed):
                    sock.setsockopt(zmq.SUBSCRIBE, wire.detection_topic(cam))
                for cam in sorted(subscribed - want):
                    sock.setsockopt(zmq.UNSUBSCRIBE, wire.detection_topic(cam))
                subscribed = want
                if not subscribed:
                    return  # nobody watches: close the socket (no subscription left upstream)
                if sock.poll(_POLL_MS, zmq.POLLIN):
                    self._drain(sock)
        finally:
            sock.close(linger=0)

    def _drain(self, sock: zmq.Socket) -> None:
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                msg = wire.decode(frames)
            except WireError:
                continue
            if msg.get("type") == wire.DETECTIONS:
                self.received += 1
                self.on_detections(msg)
