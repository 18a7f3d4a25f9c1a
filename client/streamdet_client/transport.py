"""Every ZeroMQ socket option streamdet sets, in one place, and the context each process uses.

Consumed by ``streamdet.pipeline.worker.publish`` (worker PUB, the supervisor's XSUB/XPUB proxy) and
``streamdet.client.subscriber`` (SUB). One function per socket role sets that role's options:
linger, high-water marks, message-size limits, reconnect intervals, TCP keepalive and
CurveZMQ. Imports only pyzmq and the standard library (clients load it).

Contexts: a process uses one ``zmq.Context``. :class:`ContextHolder` is either a context passed in
by the caller (shared, never terminated here) or one created for the holder's owner and
terminated when it closes; there is no process-global context (``zmq.Context.instance()``).
"""

from __future__ import annotations

from dataclasses import dataclass

import zmq

from streamdet_client.errors import StreamdetError

LINGER_MS = 0  # close at once: queued messages are worth nothing once a socket goes away
TCP_KEEPALIVE_IDLE_S = 30  # a public peer silent this long is probed by the kernel...
TCP_KEEPALIVE_INTVL_S = 10
TCP_KEEPALIVE_CNT = 3  # ...and dropped after this many unanswered probes
PUBLIC_MAX_SUBSCRIPTION_BYTES = 1024  # what a public subscriber may send us: subscriptions only
SUBSCRIBER_MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # far above any real message; guards against rogue peers
RECONNECT_IVL_MS = 100
RECONNECT_IVL_MAX_MS = 5000
ZAP_DOMAIN = b"streamdet"  # the ZAP domain of the public XPUB (RFC 27 wants one)


@dataclass(frozen=True, repr=False)
class CurveServerKeys:
    """A CURVE server's key pair and the client public keys it admits (all Z85, 40 bytes).

    ``repr`` never shows the secret key, so these can be logged or put in error messages.
    """

    public_key: bytes
    secret_key: bytes
    authorized: frozenset[bytes]

    def __repr__(self) -> str:
        keys = len(self.authorized)
        return f"CurveServerKeys(public_key={self.public_key!r}, secret_key=<hidden>, authorized=<{keys} keys>)"


@dataclass(frozen=True, repr=False)
class CurveClientKeys:
    """A CURVE client's key pair and the server public key it expects (all Z85, 40 bytes)."""

    server_key: bytes
    public_key: bytes
    secret_key: bytes

    def __repr__(self) -> str:
        return f"CurveClientKeys(server_key={self.server_key!r}, public_key={self.public_key!r}, secret_key=<hidden>)"


class ContextHolder:
    """The context a streamdet object makes its sockets in: a caller's, or its own.

    ``ContextHolder(None)`` creates a context and ``close()`` terminates it (so every endpoint
    it bound is released when ``close`` returns); ``ContextHolder(ctx)`` uses ``ctx`` and never
    terminates it (the caller owns it).
    """

    def __init__(self, context: zmq.Context | None = None) -> None:
        self.owned = context is None
        self.context: zmq.Context = zmq.Context() if context is None else context

    def socket(self, kind: int) -> zmq.Socket:
        """A new socket of ``kind`` in this context (see :func:`make_socket`)."""
        return make_socket(self.context, kind)

    def close(self) -> None:
        """Terminate the context if this holder created it (all its sockets must be closed). Idempotent."""
        if self.owned and not self.context.closed:
            self.context.term()


def make_socket(context: zmq.Context, kind: int) -> zmq.Socket:
    """A new socket of ``kind`` with linger 0 (every streamdet socket has it)."""
    sock = context.socket(kind)
    configure_inproc(sock)
    return sock


def configure_inproc(sock: zmq.Socket) -> None:
    """Linger 0: what every socket gets, and all that in-process helper sockets need."""
    sock.setsockopt(zmq.LINGER, LINGER_MS)


def attach(sock: zmq.Socket, endpoint: str, *, bind: bool) -> str:
    """Bind or connect; returns the endpoint (a bound ``:*`` port resolved).

    ZeroMQ's errors become a StreamdetError that names the endpoint.
    """
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
        raise StreamdetError(f"cannot {verb} {endpoint!r}: {exc.strerror}") from exc
    if not bind:
        return endpoint
    value = sock.getsockopt(zmq.LAST_ENDPOINT)
    return value.decode() if isinstance(value, bytes) else str(value)


def _address_family(sock: zmq.Socket, endpoint: str) -> None:
    """IPv6 iff the endpoint is a bracketed IPv6 address (``tcp://[::1]:5555``)."""
    if endpoint.startswith("tcp://"):
        sock.setsockopt(zmq.IPV6, 1 if endpoint[len("tcp://") :].startswith("[") else 0)


def _public(sock: zmq.Socket, endpoint: str) -> None:
    """Liveness on a TCP connection that may cross a network: keepalive probes after 30 s idle.

    A dead peer (or a vanished daemon, seen from a subscriber) is noticed within about a
    minute, and NAT state stays alive. ZMTP heartbeats are not used: a subscriber that stops
    reading stops answering them, and would be disconnected for being slow rather than dead.
    """
    if endpoint.startswith("tcp://"):
        sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
        sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, TCP_KEEPALIVE_IDLE_S)
        sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, TCP_KEEPALIVE_INTVL_S)
        sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, TCP_KEEPALIVE_CNT)


def configure_publisher(sock: zmq.Socket, endpoint: str, *, hwm: int, bind: bool) -> None:
    """A worker's PUB: at most ``hwm`` queued messages, and a full queue reports EAGAIN.

    A PUB silently discards at the high-water mark; XPUB_NODROP makes it report EAGAIN instead,
    so that drops are counted (a non-blocking send still never waits). A bound PUB (standalone,
    no proxy) faces subscribers directly and gets the public liveness options.
    """
    _address_family(sock, endpoint)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.XPUB_NODROP, 1)
    if bind:
        _public(sock, endpoint)


def configure_internal_xsub(sock: zmq.Socket, endpoint: str, *, hwm: int) -> None:
    """The proxy's XSUB, where the workers' PUBs connect (an ipc path in a private directory)."""
    _address_family(sock, endpoint)
    sock.setsockopt(zmq.RCVHWM, hwm)


def configure_public_xpub(sock: zmq.Socket, endpoint: str, *, hwm: int, curve: CurveServerKeys | None) -> None:
    """The proxy's public XPUB: ``hwm`` messages per subscriber, then drops (never blocks).

    Peers may only send subscriptions, so incoming messages are capped at 1 kB. With ``curve``
    the socket is a CURVE server: every peer must complete a CURVE handshake with our key pair
    and be admitted by the ZAP handler of the socket's context (``ZAP_DOMAIN``). ZAP is
    enforced: if no handler answers, the handshake fails (libzmq would otherwise admit any key).
    """
    _address_family(sock, endpoint)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.MAXMSGSIZE, PUBLIC_MAX_SUBSCRIPTION_BYTES)
    _public(sock, endpoint)
    if curve is not None:
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_SECRETKEY, curve.secret_key)
        sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN)
        sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)


def configure_subscriber(sock: zmq.Socket, endpoint: str, *, rcvhwm: int, curve: CurveClientKeys | None) -> None:
    """A client's SUB: bounded queue and message size, quick reconnects, liveness, optional CURVE."""
    _address_family(sock, endpoint)
    sock.setsockopt(zmq.RCVHWM, rcvhwm)
    sock.setsockopt(zmq.MAXMSGSIZE, SUBSCRIBER_MAX_MESSAGE_BYTES)
    sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_IVL_MS)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_IVL_MAX_MS)
    _public(sock, endpoint)
    if curve is not None:
        sock.setsockopt(zmq.CURVE_SERVERKEY, curve.server_key)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, curve.public_key)
        sock.setsockopt(zmq.CURVE_SECRETKEY, curve.secret_key)


def configure_capture(sock: zmq.Socket, *, hwm: int) -> None:
    """The proxy's capture PUB (inproc): a slow stats reader loses stats, never stalls the proxy."""
    sock.setsockopt(zmq.SNDHWM, hwm)


def configure_capture_reader(sock: zmq.Socket, *, hwm: int) -> None:
    """The SUB that reads the capture socket inside the supervisor."""
    sock.setsockopt(zmq.RCVHWM, hwm)
