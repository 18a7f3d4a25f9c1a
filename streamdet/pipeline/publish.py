"""Stage 6: publish wire messages over ZeroMQ without ever blocking the pipeline.

Consumes message dicts built with ``streamdet.wire`` (detections per frame, periodic stats).
Produces ZeroMQ multipart messages ``[topic, payload]``.
Processes: ``Publisher`` runs in each worker process (PUB, connects to the supervisor's internal
endpoint); ``PublishProxy`` runs as a thread in the supervisor (XSUB on the internal endpoint,
XPUB on the public one), so several workers appear to subscribers as one stream.

Back-pressure policy: drop, never block. A worker's PUB refuses a message once ``hwm`` messages
are queued towards the proxy (counted in ``Publisher.dropped``); the proxy's XPUB silently drops
messages for any subscriber that is slower than the stream (subscribers see gaps in ``seq``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import zmq

from streamdet import wire
from streamdet.errors import StreamdetError

log = logging.getLogger(__name__)

_TCP_KEEPALIVE_IDLE_S = 30
_TCP_KEEPALIVE_INTVL_S = 10
_TCP_KEEPALIVE_CNT = 3
_MAX_SUBSCRIPTION_BYTES = 1024  # what a public subscriber may send us: subscriptions only
_STOP_TIMEOUT_S = 5.0
_CONTROL_ENDPOINT = "inproc://control"  # inproc names are per context; each proxy has its own


def configure_socket(sock: zmq.Socket, endpoint: str, *, public: bool = False) -> None:
    """Options every streamdet socket gets: linger 0, IPv6 iff the endpoint is a bracketed IPv6
    address, and for a public TCP endpoint keepalive, so dead subscribers are noticed and freed."""
    sock.setsockopt(zmq.LINGER, 0)
    if endpoint.startswith("tcp://"):
        sock.setsockopt(zmq.IPV6, 1 if endpoint[len("tcp://") :].startswith("[") else 0)
        if public:
            sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
            sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, _TCP_KEEPALIVE_IDLE_S)
            sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, _TCP_KEEPALIVE_INTVL_S)
            sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, _TCP_KEEPALIVE_CNT)


def _attach(sock: zmq.Socket, endpoint: str, bind: bool) -> None:
    """Bind or connect, turning ZeroMQ's errors into a StreamdetError that names the endpoint."""
    verb = "bind" if bind else "connect to"
    port = endpoint.rpartition(":")[2]
    if endpoint.startswith("tcp://") and port.isdigit() and int(port) > 65535:
        raise StreamdetError(f"cannot {verb} {endpoint!r}: port {port} out of range")  # libzmq would wrap it
    try:
        if bind:
            sock.bind(endpoint)
        else:
            sock.connect(endpoint)
    except zmq.ZMQError as exc:
        raise StreamdetError(f"cannot {verb} {endpoint!r}: {zmq.strerror(exc.errno)}") from exc


def _last_endpoint(sock: zmq.Socket) -> str:
    """The endpoint a socket last bound, with a wildcard port (``tcp://127.0.0.1:*``) resolved."""
    value = sock.getsockopt(zmq.LAST_ENDPOINT)
    return value.decode() if isinstance(value, bytes) else str(value)


class Publisher:
    """A PUB socket that sends wire messages and never blocks.

    Connects to ``endpoint`` (the supervisor's internal proxy endpoint), or binds it with
    ``bind=True`` (a standalone publisher without a proxy). ``send`` is non-blocking: when
    ``hwm`` messages are already queued it drops the message and counts it in ``dropped``.
    ``sent`` counts messages handed to ZeroMQ (including those no subscriber wanted).
    ``bound_endpoint`` is the endpoint actually bound (``bind=True``; a ``:*`` port resolved).
    Not thread-safe: use one Publisher per thread.
    """

    def __init__(
        self, endpoint: str, *, bind: bool = False, hwm: int = 1000, context: zmq.Context | None = None
    ) -> None:
        self.endpoint = endpoint
        self.sent = 0
        self.dropped = 0
        self.bound_endpoint: str | None = None
        self._own_context = context is None
        self._ctx = zmq.Context() if context is None else context
        self._sock: zmq.Socket | None = None
        try:
            self._sock = self._ctx.socket(zmq.PUB)
            configure_socket(self._sock, endpoint, public=bind)
            self._sock.setsockopt(zmq.SNDHWM, hwm)
            # A PUB silently discards at the high-water mark; NODROP makes it report EAGAIN
            # instead, so that drops are counted. With NOBLOCK the send still never waits.
            self._sock.setsockopt(zmq.XPUB_NODROP, 1)
            _attach(self._sock, endpoint, bind)
            if bind:
                self.bound_endpoint = _last_endpoint(self._sock)
        except BaseException:
            self.close()
            raise

    @property
    def socket(self) -> zmq.Socket:
        """The underlying PUB socket (for tuning and tests)."""
        if self._sock is None:
            raise StreamdetError("publisher is closed")
        return self._sock

    def send(self, msg: Mapping[str, Any]) -> bool:
        """Encode and send one message; True if queued, False if dropped (queue full).

        Raises WireError if the message breaks the contract (a bug in the caller).
        """
        frames = wire.encode(msg)
        try:
            self.socket.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.Again:
            self.dropped += 1
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        """Close the socket at once (linger 0: queued messages are discarded). Idempotent."""
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        if self._own_context and not self._ctx.closed:
            self._ctx.term()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class PublishProxy:
    """XSUB/XPUB forwarder: many worker Publishers in, one public stream out.

    ``start()`` binds XSUB on ``internal_endpoint`` (an ipc:// path in a private directory,
    chosen by the supervisor) and XPUB on ``public_endpoint``, then forwards in a background
    thread. The XPUB send high-water mark is ``hwm`` per subscriber and the XPUB drops rather
    than waits, so a slow or absent subscriber loses messages and never blocks the workers.
    ``stop()`` ends the thread through a control socket and releases both endpoints.
    Bind errors raise StreamdetError naming the endpoint. ``bound_endpoint`` is the public endpoint
    actually bound once started (a ``tcp://host:*`` wildcard port resolved).
    """

    def __init__(self, internal_endpoint: str, public_endpoint: str, hwm: int = 1000) -> None:
        self.internal_endpoint = internal_endpoint
        self.public_endpoint = public_endpoint
        self.hwm = hwm
        self.error: BaseException | None = None
        self.bound_endpoint: str | None = None
        self._ctx: zmq.Context | None = None
        self._control: zmq.Socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """True while the forwarding thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> PublishProxy:
        """Bind both endpoints and start forwarding; returns self."""
        if self._ctx is not None:
            raise StreamdetError("proxy already started")
        ctx = zmq.Context()
        sockets: list[zmq.Socket] = []
        try:
            xsub = ctx.socket(zmq.XSUB)
            sockets.append(xsub)
            configure_socket(xsub, self.internal_endpoint)
            xsub.setsockopt(zmq.RCVHWM, self.hwm)
            _attach(xsub, self.internal_endpoint, bind=True)

            xpub = ctx.socket(zmq.XPUB)
            sockets.append(xpub)
            configure_socket(xpub, self.public_endpoint, public=True)
            xpub.setsockopt(zmq.SNDHWM, self.hwm)
            xpub.setsockopt(zmq.MAXMSGSIZE, _MAX_SUBSCRIPTION_BYTES)
            _attach(xpub, self.public_endpoint, bind=True)
            bound = _last_endpoint(xpub)

            control_in = ctx.socket(zmq.PAIR)
            sockets.append(control_in)
            control_in.setsockopt(zmq.LINGER, 0)
            control_in.bind(_CONTROL_ENDPOINT)
            control_out = ctx.socket(zmq.PAIR)
            sockets.append(control_out)
            control_out.setsockopt(zmq.LINGER, 0)
            control_out.connect(_CONTROL_ENDPOINT)
        except BaseException:
            for sock in sockets:
                sock.close(linger=0)
            ctx.term()
            raise
        self._ctx, self._control, self.bound_endpoint = ctx, control_out, bound
        # The three proxy sockets move to the thread; this thread keeps only control_out.
        self._thread = threading.Thread(
            target=self._forward, args=(xsub, xpub, control_in), name="streamdet-publish-proxy", daemon=True
        )
        self._thread.start()
        log.info("publish proxy: %s -> %s (hwm %d)", self.internal_endpoint, self.public_endpoint, self.hwm)
        return self

    def _forward(self, xsub: zmq.Socket, xpub: zmq.Socket, control: zmq.Socket) -> None:
        """Thread body: forward until TERMINATE arrives on the control socket, then close."""
        try:
            zmq.proxy_steerable(xsub, xpub, None, control)
        except zmq.ContextTerminated:
            pass
        except Exception as exc:  # recorded for the supervisor; the thread must not die silently
            self.error = exc
            log.error("publish proxy stopped: %s", exc)
        finally:
            for sock in (xsub, xpub, control):
                sock.close(linger=0)

    def stop(self) -> None:
        """Stop forwarding and unbind both endpoints (the port is free when this returns). Idempotent."""
        if self._ctx is None:
            return
        thread, control, ctx = self._thread, self._control, self._ctx
        self._thread, self._control, self._ctx = None, None, None
        assert thread is not None and control is not None
        if thread.is_alive():
            try:
                control.send(b"TERMINATE", flags=zmq.NOBLOCK)
            except zmq.ZMQError as exc:
                log.warning("publish proxy: cannot send TERMINATE: %s", exc)
            thread.join(_STOP_TIMEOUT_S)
        control.close(linger=0)
        if thread.is_alive():
            log.error("publish proxy thread did not stop within %.0f s; leaving its sockets open", _STOP_TIMEOUT_S)
            return
        ctx.term()  # returns once every socket is closed, i.e. both endpoints are unbound

    def __enter__(self) -> PublishProxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
