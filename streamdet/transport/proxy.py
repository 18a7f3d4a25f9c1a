"""The supervisor's XSUB/XPUB proxy: every worker's messages in, one public stream out.

Runs as a thread in the supervisor: XSUB on the internal endpoint the workers'
:class:`~streamdet.pipeline.worker.publish.Publisher` s connect to, XPUB on the public endpoint,
with :mod:`streamdet.transport.handshakes` at its door (CurveZMQ, refused handshakes) and
:mod:`streamdet.transport.capture` copying the stats messages for the supervisor's metrics.

Back-pressure policy: drop, never block. The XPUB silently drops messages for any subscriber that
is slower than the stream (subscribers see gaps in ``seq``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

import zmq

from streamdet import wire
from streamdet.errors import StreamdetError
from streamdet.transport.capture import StatsCapture
from streamdet.transport.handshakes import HandshakeGuard
from streamdet.transport.sockets import (
    ContextHolder,
    CurveServerKeys,
    attach,
    configure_internal_xsub,
    configure_public_xpub,
)

log = logging.getLogger(__name__)

_STOP_TIMEOUT_S = 5.0


def _remove_ipc_file(endpoint: str) -> None:
    """libzmq leaves an ipc:// socket file behind when the socket closes: remove ours."""
    if endpoint.startswith("ipc://") and not endpoint.startswith("ipc://@"):
        with contextlib.suppress(OSError):
            os.unlink(endpoint[len("ipc://"):])


class PublishProxy:
    """XSUB/XPUB forwarder: many worker Publishers in, one public stream out.

    ``start()`` binds XSUB on ``internal_endpoint`` (an ipc:// path in a private directory,
    chosen by the supervisor) and XPUB on ``public_endpoint``, then forwards in a background
    thread. The XPUB send high-water mark is ``hwm`` per subscriber and the XPUB drops rather
    than waits, so a slow or absent subscriber loses messages and never blocks the workers.
    ``stop()`` ends the threads through a control socket and releases both endpoints.
    Bind errors raise StreamdetError naming the endpoint. ``bound_endpoint`` is the public endpoint
    actually bound once started (a ``tcp://host:*`` wildcard port resolved).

    ``curve``: the XPUB becomes a CURVE server with these keys, and a ZAP handler in the same
    context admits only the client public keys in ``curve.authorized``; any other client, or one
    without CURVE, completes no handshake and receives nothing. ``rejected_handshakes`` counts
    failed handshakes (with or without CURVE), which are also logged (rate-limited).
    ``on_stats(message)``: called in the proxy's stats thread with every ``stats/`` message
    forwarded (decoded and validated by ``streamdet.wire.decode``), read from the proxy's capture
    socket; never with detections. ``context``: the process's ZeroMQ context; by default the
    proxy makes its own and terminates it on ``stop``. ``view_endpoint`` (once started): an
    inproc endpoint the XPUB also binds, for in-process subscribers such as the live view (a SUB
    made with ``context`` while running); inproc has no handshake, so CURVE does not apply there.
    """

    def __init__(
        self,
        internal_endpoint: str,
        public_endpoint: str,
        hwm: int = 1000,
        *,
        curve: CurveServerKeys | None = None,
        on_stats: Callable[[dict[str, Any]], None] | None = None,
        context: zmq.Context | None = None,
    ) -> None:
        self.internal_endpoint = internal_endpoint
        self.public_endpoint = public_endpoint
        self.hwm = hwm
        self.curve = curve
        self.on_stats = on_stats
        self.error: BaseException | None = None
        self.bound_endpoint: str | None = None
        self.view_endpoint: str | None = None
        self._context = context
        self._ctx: ContextHolder | None = None
        self._control: zmq.Socket | None = None
        self._thread: threading.Thread | None = None
        self._guard: HandshakeGuard | None = None
        self._capture: StatsCapture | None = None
        self._rejected_before = 0  # handshakes rejected by earlier runs (start after stop)
        self._guard_lock = threading.Lock()  # _guard and _rejected_before change together

    @property
    def running(self) -> bool:
        """True while the forwarding thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def context(self) -> zmq.Context | None:
        """The ZeroMQ context of the running proxy (None when stopped): ``view_endpoint`` lives in it."""
        return self._ctx.context if self._ctx is not None else None

    @property
    def rejected_handshakes(self) -> int:
        """Subscriber handshakes that failed on the public endpoint: a key not authorized, a
        client without CURVE, a handshake broken off (thread-safe)."""
        with self._guard_lock:
            return self._rejected_before + (self._guard.rejected if self._guard is not None else 0)

    def set_authorized_keys(self, keys: frozenset[bytes]) -> None:
        """Admit exactly these client public keys (Z85) from the next handshake on (CURVE only)."""
        if self.curve is None:
            raise StreamdetError("the publish proxy has no CURVE keys: nothing to authorize")
        self.curve = CurveServerKeys(self.curve.public_key, self.curve.secret_key, frozenset(keys))
        with self._guard_lock:
            if self._guard is not None:
                self._guard.set_authorized(self.curve.authorized)

    def start(self) -> PublishProxy:
        """Bind both endpoints and start forwarding; returns self."""
        if self._ctx is not None:
            raise StreamdetError("proxy already started")
        holder = ContextHolder(self._context)
        tag = f"{id(self):x}"  # inproc names are per context, which may be shared
        guard = HandshakeGuard(holder.context, self.public_endpoint,
                               None if self.curve is None else self.curve.authorized)
        capture = None if self.on_stats is None else StatsCapture(
            holder.context, f"inproc://streamdet-capture-{tag}", self.on_stats)
        sockets: list[zmq.Socket] = []
        try:
            xsub = holder.socket(zmq.XSUB)
            sockets.append(xsub)
            configure_internal_xsub(xsub, self.internal_endpoint, hwm=self.hwm)
            attach(xsub, self.internal_endpoint, bind=True)
            if capture is not None:
                # The workers' PUBs send only what is subscribed. Subscribing to stats here keeps
                # them flowing to the capture with no public subscriber; XSUB counts subscriptions,
                # so a public subscriber's later unsubscribe from stats/ does not cancel this one.
                xsub.send(b"\x01" + wire.STATS_TOPIC)

            xpub = holder.socket(zmq.XPUB)
            sockets.append(xpub)
            configure_public_xpub(xpub, self.public_endpoint, hwm=self.hwm, curve=self.curve)
            guard.open(xpub)  # ZAP handler and monitor exist before the first peer can connect
            bound = attach(xpub, self.public_endpoint, bind=True)
            guard.endpoint = bound  # log lines name the port actually bound
            view = f"inproc://streamdet-view-{tag}"
            xpub.bind(view)

            capture_pub = capture.open() if capture is not None else None
            if capture_pub is not None:
                sockets.append(capture_pub)
            control_in = holder.socket(zmq.PAIR)
            sockets.append(control_in)
            control_in.bind(f"inproc://streamdet-control-{tag}")
            control_out = holder.socket(zmq.PAIR)
            sockets.append(control_out)
            control_out.connect(f"inproc://streamdet-control-{tag}")
        except BaseException:
            for sock in sockets:
                sock.close(linger=0)
            guard.join(0)
            if capture is not None:
                capture.stop(0)
            holder.close()
            raise
        self._ctx, self._control, self.bound_endpoint, self._capture = holder, control_out, bound, capture
        self.view_endpoint = view
        with self._guard_lock:
            self._guard = guard
        guard.start()
        if capture is not None:
            capture.start()
        # The proxy sockets move to the forwarding thread; this thread keeps only control_out.
        self._thread = threading.Thread(
            target=self._forward, args=(xsub, xpub, capture_pub, control_in, guard),
            name="streamdet-publish-proxy", daemon=True,
        )
        self._thread.start()
        log.info("publish proxy: %s -> %s (hwm %d%s)", self.internal_endpoint, self.public_endpoint, self.hwm,
                 f", CURVE, {len(self.curve.authorized)} client keys" if self.curve is not None else "")
        return self

    def _forward(self, xsub: zmq.Socket, xpub: zmq.Socket, capture: zmq.Socket | None, control: zmq.Socket,
                 guard: HandshakeGuard) -> None:
        """Thread body: forward until TERMINATE arrives on the control socket, then close."""
        try:
            zmq.proxy_steerable(xsub, xpub, capture, control)
        except zmq.ContextTerminated:
            pass
        except Exception as exc:  # recorded for the supervisor; the thread must not die silently
            self.error = exc
            log.error("publish proxy stopped: %s", exc)
        finally:
            for sock in (xsub, xpub, capture, control):
                if sock is not None:
                    sock.close(linger=0)
            guard.xpub_closed()

    def stop(self) -> None:
        """Stop forwarding and unbind both endpoints (the port is free when this returns). Idempotent."""
        if self._ctx is None:
            return
        thread, control, holder = self._thread, self._control, self._ctx
        guard, capture = self._guard, self._capture
        self._thread, self._control, self._ctx, self._capture = None, None, None, None
        self.view_endpoint = None
        assert thread is not None and control is not None and guard is not None
        if thread.is_alive():
            try:
                control.send(b"TERMINATE", flags=zmq.NOBLOCK)
            except zmq.ZMQError as exc:
                log.warning("publish proxy: cannot send TERMINATE: %s", exc)
            thread.join(_STOP_TIMEOUT_S)
        control.close(linger=0)
        # the guard ends after the monitor's last event, i.e. once the XPUB's listener is closed
        stopped = not thread.is_alive() and guard.join(_STOP_TIMEOUT_S)
        stopped = (capture is None or capture.stop(_STOP_TIMEOUT_S)) and stopped
        with self._guard_lock:
            self._rejected_before += guard.rejected
            self._guard = None
        if not stopped:
            log.error("publish proxy threads did not stop within %.0f s; leaving their sockets open", _STOP_TIMEOUT_S)
            return
        holder.close()  # an own context: returns once every socket is closed, both endpoints unbound
        _remove_ipc_file(self.bound_endpoint or self.public_endpoint)

    def __enter__(self) -> PublishProxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
