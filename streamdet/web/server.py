"""The live view's HTTP server: the standard library's WSGI server, threaded, bounded, quiet.

One thread per connection up to ``web.threads``; a connection beyond that is closed at once
(the page retries), so a flood of clients costs the supervisor a bounded number of threads.
Each connection has a socket timeout: a slow client (a request trickling in, a stream nobody
reads) is dropped, and a vanished one ends its stream at the next write. Request lines and
headers are bounded by :mod:`http.server` (414/431). Requests are logged at debug level only.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from streamdet.errors import StreamdetError

__all__ = ["WebServer"]

log = logging.getLogger("streamdet.web")

CLIENT_TIMEOUT_S = 10.0  # a client that sends or reads nothing this long is dropped
_MAX_REQUEST_LINE = 8192


class _Handler(WSGIRequestHandler):
    timeout = CLIENT_TIMEOUT_S  # StreamRequestHandler sets it on the connection's socket

    def handle(self) -> None:
        try:
            super().handle()
        except (OSError, ValueError):  # timeouts, resets: the client's problem, not the daemon's
            self.close_connection = True

    raw_requestline: bytes  # set by BaseHTTPRequestHandler.handle_one_request

    def parse_request(self) -> bool:
        if len(self.raw_requestline) > _MAX_REQUEST_LINE:
            self.requestline = ""
            self.request_version = "HTTP/1.0"
            self.command = "GET"
            self.send_error(414)
            return False
        return super().parse_request()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        log.debug("web %s: " + format, self.address_string(), *args)


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], threads: int, family: int) -> None:
        self.address_family = family
        self._slots = threading.BoundedSemaphore(threads)
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log.debug("web: connection from %s closed: every thread is busy", client_address)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("web: error serving %s", client_address, exc_info=True)


class WebServer:
    """Serves a WSGI app on ``host:port`` in a background thread (``port`` 0: any free port)."""

    def __init__(self, app: Any, host: str, port: int, threads: int = 16) -> None:
        self.app = app
        self.host = host
        self.requested_port = port
        self.threads = threads
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> WebServer:
        """Bind and serve; StreamdetError names the address when it cannot bind."""
        host = self.host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            server = _Server((host, self.requested_port), self.threads, family)
        except OSError as exc:
            raise StreamdetError(f"live view: cannot listen on {self.host}:{self.requested_port}: "
                                 f"{exc.strerror or exc}") from None
        server.set_app(self.app)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="streamdet-web", daemon=True)
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        """The port bound (the chosen one when started with port 0)."""
        if self._server is None:
            raise RuntimeError("web server not started")
        return int(self._server.server_address[1])

    def stop(self, timeout: float = 2.0) -> None:
        """Stop accepting and close the listening socket (idempotent). Open streams end on their
        own within a second once the live view stops."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout)
