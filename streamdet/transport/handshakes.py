"""The public socket's door: admit only authorized CURVE keys, count and log failed handshakes.

Consumes ZAP requests (RFC 27) from libzmq for the proxy's public XPUB, and the XPUB's socket
monitor events. Produces ZAP replies (200 for a client public key in the authorized set, 400
otherwise), the count of failed handshakes, and rate-limited log lines. Runs as one thread in
the supervisor, next to the proxy's forwarding thread, in the same ZeroMQ context.

What fires (measured with libzmq 4.3.5): a client whose key is not authorized makes the ZAP
handler answer 400 and the monitor report ``EVENT_HANDSHAKE_FAILED_AUTH`` (value 400); a plain
client without CURVE never reaches ZAP: the monitor reports ``EVENT_HANDSHAKE_FAILED_PROTOCOL``
(``PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH``); a peer that breaks off a handshake gives
``EVENT_HANDSHAKE_FAILED_NO_DETAIL`` (value errno). Monitor events name our own endpoint, not the
peer, so only the ZAP refusal can log the peer's address. A refused client keeps reconnecting,
so each kind of line is logged at most once per key per minute, with a count of what was held back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import zmq
import zmq.utils.z85
from zmq.utils.monitor import recv_monitor_message

from streamdet.errors import StreamdetError
from streamdet.transport.sockets import ZAP_DOMAIN, configure_inproc, make_socket

log = logging.getLogger(__name__)

ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # fixed by RFC 27: one ZAP handler per context
ZAP_VERSION = b"1.0"
LOG_INTERVAL_S = 60.0
_POLL_MS = 100
_STOP_GRACE_S = 2.0  # after the XPUB closed, how long to wait for the monitor's last event
_FAILED_EVENTS = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)
_PROTOCOL_REASONS = {
    zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH: "the peer does not use the same security mechanism (no CURVE?)",
    zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC: "the CURVE handshake did not decrypt (the client has a wrong server key?)",
}


class RateLimiter:
    """One log line per key per ``interval_s``; counts what it held back. Memory is bounded:
    beyond ``max_keys`` live keys, new keys share one line (a flood of addresses is one line)."""

    def __init__(self, interval_s: float = LOG_INTERVAL_S, max_keys: int = 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.max_keys = max_keys
        self._clock = clock
        self._last: dict[Hashable, float] = {}
        self._held: dict[Hashable, int] = {}

    def allow(self, key: Hashable) -> int | None:
        """None: stay quiet; else log now, mentioning the returned number of lines held back."""
        now = self._clock()
        if key not in self._last and len(self._last) >= self.max_keys:
            self._last = {k: t for k, t in self._last.items() if now - t < self.interval_s}
            self._held = {k: n for k, n in self._held.items() if k in self._last}
            if len(self._last) >= self.max_keys:
                key = "<other peers>"
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._held.pop(key, 0)


class HandshakeGuard:
    """ZAP handler (with CURVE) and monitor of the public XPUB, in one thread.

    ``open(xpub)`` in the starting thread, before the XPUB binds: binds the context's ZAP
    endpoint (when ``authorized`` is not None) and attaches a monitor. ``start()`` runs the
    thread; it ends once the XPUB is closed (the monitor's last event) after ``xpub_closed()``.
    ``rejected`` counts failed handshakes (thread-safe). ``set_authorized`` swaps the admitted
    keys at any time (Z85 public keys).
    """

    def __init__(self, context: zmq.Context, endpoint: str, authorized: frozenset[bytes] | None) -> None:
        self.endpoint = endpoint
        self._ctx = context
        self._authorized = authorized
        self._lock = threading.Lock()
        self._rejected = 0
        self._limiter = RateLimiter()
        self._xpub_closed = threading.Event()
        self._zap: zmq.Socket | None = None
        self._monitor: zmq.Socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def rejected(self) -> int:
        with self._lock:
            return self._rejected

    def set_authorized(self, keys: frozenset[bytes]) -> None:
        """Admit exactly these client public keys from the next handshake on."""
        self._authorized = frozenset(keys)

    def open(self, xpub: zmq.Socket) -> None:
        """Bind ZAP (CURVE only) and monitor ``xpub``; call before ``xpub`` binds."""
        if self._authorized is not None:
            zap = make_socket(self._ctx, zmq.REP)
            try:
                zap.bind(ZAP_ENDPOINT)
            except zmq.ZMQError as exc:
                zap.close(linger=0)
                raise StreamdetError(f"cannot start the ZAP handler: {exc.strerror} "
                                     "(another one is bound in this ZeroMQ context)") from exc
            self._zap = zap
        self._monitor = xpub.get_monitor_socket(_FAILED_EVENTS | zmq.EVENT_MONITOR_STOPPED)
        configure_inproc(self._monitor)

    def start(self) -> None:
        """Run the thread (it takes over the ZAP and monitor sockets)."""
        self._thread = threading.Thread(target=self._run, name="streamdet-publish-guard", daemon=True)
        self._thread.start()

    def xpub_closed(self) -> None:
        """Tell the thread the XPUB is closed: it ends after the monitor's last event."""
        self._xpub_closed.set()

    def join(self, timeout: float) -> bool:
        """Wait for the thread; True once it has ended (or never started: then close its sockets)."""
        if self._thread is None:
            self._close_sockets()
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _close_sockets(self) -> None:
        for sock in (self._monitor, self._zap):
            if sock is not None:
                sock.close(linger=0)
        self._monitor = self._zap = None

    def _run(self) -> None:
        assert self._monitor is not None
        poller = zmq.Poller()
        poller.register(self._monitor, zmq.POLLIN)
        if self._zap is not None:
            poller.register(self._zap, zmq.POLLIN)
        give_up: float | None = None
        try:
            while True:
                ready = dict(poller.poll(_POLL_MS))
                if self._zap is not None and self._zap in ready:
                    self._answer(self._zap)
                if self._monitor in ready and not self._on_event(recv_monitor_message(self._monitor)):
                    return
                if self._xpub_closed.is_set():
                    give_up = give_up or time.monotonic() + _STOP_GRACE_S
                    if time.monotonic() > give_up:
                        log.warning("publish guard: no final monitor event from %s; stopping anyway", self.endpoint)
                        return
        except zmq.ContextTerminated:
            pass
        except Exception:  # the guard must never die silently: handshakes would hang without ZAP
            log.exception("publish guard failed; subscribers with CURVE will not be admitted")
        finally:
            self._close_sockets()

    def _on_event(self, event: Mapping[str, Any]) -> bool:
        """Count and log one monitor event; False once the monitor has stopped."""
        kind, value = event["event"], event["value"]
        if kind == zmq.EVENT_MONITOR_STOPPED:
            return False
        with self._lock:
            self._rejected += 1
        if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            return True  # logged, with the peer's address, when ZAP refused it
        if kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
            reason = _PROTOCOL_REASONS.get(value, f"ZMTP protocol error {value:#x}")
        else:
            reason = f"broken off: {zmq.strerror(value)}"
        held = self._limiter.allow((kind, value))
        if held is not None:
            log.warning("rejected a subscriber handshake on %s: %s%s", self.endpoint, reason, _held(held))
        return True

    def _answer(self, zap: zmq.Socket) -> None:
        """Reply to one ZAP request: 200 for an authorized CURVE client key, 400 for anything else."""
        frames = zap.recv_multipart()
        request_id = frames[1] if len(frames) > 1 else b""
        status, text = self._decide(frames)
        zap.send_multipart([ZAP_VERSION, request_id, status, text, b"", b""])

    def _decide(self, frames: list[bytes]) -> tuple[bytes, bytes]:
        if len(frames) < 6 or frames[0] != ZAP_VERSION:
            log.error("malformed ZAP request (%d frames); refused", len(frames))
            return b"400", b"malformed request"
        _version, _request_id, domain, address, _identity, mechanism, *credentials = frames
        peer = address.decode("ascii", "replace") or "?"
        if domain != ZAP_DOMAIN or mechanism != b"CURVE" or len(credentials) != 1 or len(credentials[0]) != 32:
            self._refusal(peer, f"unexpected {mechanism.decode('ascii', 'replace')} request for domain {domain!r}")
            return b"400", b"CURVE only"
        client_key = zmq.utils.z85.encode(credentials[0])  # a public key: safe to log
        authorized = self._authorized
        if authorized is not None and client_key in authorized:
            return b"200", b"OK"
        self._refusal(peer, f"its public key {client_key.decode()} is not in authorized_keys")
        return b"400", b"key not authorized"

    def _refusal(self, peer: str, why: str) -> None:
        held = self._limiter.allow(("zap", peer))
        if held is not None:
            log.warning("refused subscriber %s on %s: %s%s", peer, self.endpoint, why, _held(held))


def _held(count: int) -> str:
    return f" ({count} more like it since the last such line)" if count else ""
