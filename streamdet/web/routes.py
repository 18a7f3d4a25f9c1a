"""The live view's WSGI application: the page, the JSON list, pictures and MJPEG streams.

Routes (GET and HEAD only; anything else is a 404, a 405 or a 400, never a file from disk):

- ``/``: the page (``static/index.html``, no external resources: works offline);
- ``/api/cameras``: one JSON row per camera (id, width, height, fps, latency, drops, state, error);
- ``/cameras/<id>/latest.jpg``: the newest picture, detections drawn (``?boxes=0`` without,
  ``?width=N`` scaled down); 503 until the camera has one;
- ``/cameras/<id>/stream.mjpeg``: ``multipart/x-mixed-replace`` of the same pictures; at most
  ``web.max_streams`` at once (503 beyond).

An unknown camera is a 404. With ``web.auth`` every route needs HTTP Basic credentials (401).
Without it, a request must name the server by an IP address or ``localhost`` in its ``Host``
header (else 403): a web page elsewhere cannot reach the view through a DNS name it rebinds to
127.0.0.1 (DNS rebinding).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from streamdet.web.auth import BasicAuth
from streamdet.web.feed import CameraFeed
from streamdet.web.live import LiveView

__all__ = ["BOUNDARY", "WebApp"]

log = logging.getLogger("streamdet.web")

BOUNDARY = "streamdet-frame"
_CAMERA_ROUTE = re.compile(r"^/cameras/([A-Za-z0-9_-]{1,64})/(latest\.jpg|stream\.mjpeg)$")
_FIRST_PICTURE_S = 3.0  # how long a request waits for a camera's first picture
_STREAM_WAIT_S = 1.0  # a stream's wait for the next picture before it checks whether it should end

StartResponse = Callable[..., Any]
_SECURITY_HEADERS = [("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"),
                     ("Referrer-Policy", "no-referrer")]


class _BadQuery(ValueError):
    pass


def host_is_address(host_header: str | None) -> bool:
    """Whether a Host header names the server by an IP address or ``localhost`` (or is absent)."""
    if not host_header:
        return True
    host = host_header.strip()
    if host.startswith("["):
        name = host[1:host.find("]")] if "]" in host else host[1:]
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if name.lower() == "localhost":
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _query(environ: dict[str, Any]) -> tuple[bool, int | None]:
    """(boxes, width) from the query string; _BadQuery names what is wrong."""
    try:
        q = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True, strict_parsing=False,
                     max_num_fields=8)
    except ValueError as exc:
        raise _BadQuery(f"bad query string: {exc}") from None
    boxes_values = q.get("boxes", ["1"])
    if boxes_values[-1] not in ("0", "1"):
        raise _BadQuery("boxes must be 0 or 1")
    width: int | None = None
    if "width" in q:
        raw = q["width"][-1]
        if not raw.isdigit() or not 16 <= int(raw) <= 8192:
            raise _BadQuery("width must be a whole number of pixels from 16 to 8192")
        width = int(raw)
    return boxes_values[-1] == "1", width


class WebApp:
    """The WSGI callable (see the module docstring)."""

    def __init__(self, live: LiveView, *, auth: BasicAuth | None = None, max_streams: int = 8,
                 page: bytes | None = None) -> None:
        self.live = live
        self.auth = auth
        self.max_streams = max_streams
        self.page = page if page is not None else resources.files("streamdet.web").joinpath(
            "static/index.html").read_bytes()
        self._streams = threading.BoundedSemaphore(max_streams)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        try:
            return self._route(environ, start_response)
        except Exception:  # a bug must cost one request, never the daemon
            log.exception("live view: error serving %s", environ.get("PATH_INFO", "?"))
            return self._plain(start_response, "500 Internal Server Error", "internal error\n")

    def _route(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "") or "/"
        if self.auth is not None and not self.auth.check(environ.get("HTTP_AUTHORIZATION")):
            return self._plain(start_response, "401 Unauthorized", "authentication required\n",
                               [("WWW-Authenticate", self.auth.challenge)])
        if self.auth is None and not host_is_address(environ.get("HTTP_HOST")):
            return self._plain(start_response, "403 Forbidden", "without web.auth, address this server by its IP "
                               "address or localhost\n")
        if method not in ("GET", "HEAD"):
            return self._plain(start_response, "405 Method Not Allowed", "only GET and HEAD\n",
                               [("Allow", "GET, HEAD")])
        head = method == "HEAD"
        if path == "/":
            return self._send(start_response, "200 OK", "text/html; charset=utf-8", self.page, head,
                              [("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                                "script-src 'self' 'unsafe-inline'; img-src 'self'")])
        if path == "/api/cameras":
            body = json.dumps({"cameras": self.live.camera_rows()}, separators=(",", ":")).encode()
            return self._send(start_response, "200 OK", "application/json", body, head)
        match = _CAMERA_ROUTE.match(path)
        if match is None:
            return self._plain(start_response, "404 Not Found", "not found\n")
        feed = self.live.feed(match.group(1))
        if feed is None:
            return self._plain(start_response, "404 Not Found", f"no camera {match.group(1)!r}\n")
        try:
            boxes, width = _query(environ)
        except _BadQuery as exc:
            return self._plain(start_response, "400 Bad Request", f"{exc}\n")
        if match.group(2) == "latest.jpg":
            return self._latest(start_response, feed, boxes, width, head)
        return self._stream(start_response, feed, boxes, width, head)

    # -- pictures -----------------------------------------------------------------------------

    def _latest(self, start_response: StartResponse, feed: CameraFeed, boxes: bool, width: int | None,
                head: bool) -> Iterable[bytes]:
        self.live.watch(feed)
        got = feed.jpeg(boxes, width, self.live.clock(), timeout=_FIRST_PICTURE_S, clock=self.live.clock)
        if got is None:
            return self._plain(start_response, "503 Service Unavailable", "no picture from this camera yet\n",
                               [("Retry-After", "1")])
        w, h = got.size
        return self._send(start_response, "200 OK", "image/jpeg", got.data, head,
                          [("X-Picture", str(got.token)), ("X-Picture-Size", f"{w}x{h}"),
                           ("X-Frame", str(got.frame_index)), ("X-Capture-Ts", repr(got.ts_capture)),
                           ("X-Boxes", "none" if got.boxes is None else str(got.boxes))])

    def _stream(self, start_response: StartResponse, feed: CameraFeed, boxes: bool, width: int | None,
                head: bool) -> Iterable[bytes]:
        if head:
            return self._send(start_response, "200 OK", f"multipart/x-mixed-replace; boundary={BOUNDARY}", b"", True)
        if not self._streams.acquire(blocking=False):
            return self._plain(start_response, "503 Service Unavailable",
                               f"too many streams (web.max_streams is {self.max_streams})\n", [("Retry-After", "2")])
        start_response("200 OK", [("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}"),
                                  ("Cache-Control", "no-store"), ("Pragma", "no-cache"), *_SECURITY_HEADERS])
        return _Stream(self, feed, self._parts(feed, boxes, width))

    def _parts(self, feed: CameraFeed, boxes: bool, width: int | None) -> Generator[bytes, None, None]:
        token = 0
        while not self.live.stopping and not feed.closed:
            got = feed.jpeg(boxes, width, self.live.clock(), after=token, timeout=_STREAM_WAIT_S,
                            clock=self.live.clock)
            if got is None:
                continue
            token = got.token
            yield (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(got.data)}\r\n"
                   f"X-Picture: {token}\r\n\r\n").encode() + got.data + b"\r\n"

    # -- plumbing -----------------------------------------------------------------------------

    @staticmethod
    def _send(start_response: StartResponse, status: str, ctype: str, body: bytes, head: bool,
              extra: list[tuple[str, str]] | None = None) -> Iterable[bytes]:
        start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body))),
                                ("Cache-Control", "no-store"), *_SECURITY_HEADERS, *(extra or [])])
        return [] if head else [body]

    def _plain(self, start_response: StartResponse, status: str, text: str,
               extra: list[tuple[str, str]] | None = None) -> Iterable[bytes]:
        return self._send(start_response, status, "text/plain; charset=utf-8", text.encode(), False, extra)


class _Stream:
    """An MJPEG response: counts as a viewer of its camera and holds a stream slot until the
    server closes it (end of stream, client gone, server stopping), even if never iterated."""

    def __init__(self, app: WebApp, feed: CameraFeed, parts: Generator[bytes, None, None]) -> None:
        self._app, self._feed, self._parts = app, feed, parts
        self._open = True
        with feed.cond:
            feed.streams += 1
        app.live.watch(feed)

    def __iter__(self) -> Iterator[bytes]:
        return self._parts

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        self._parts.close()
        with self._feed.cond:
            self._feed.streams -= 1
        self._feed.last_watched = self._app.live.clock()
        self._app._streams.release()
