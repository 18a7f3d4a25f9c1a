"""The bridge's connection to the broker: its own thread, reconnect with backoff and jitter, one log line
per change of state.

``MqttLink`` owns a paho-mqtt 2.x client and drives its network loop in a thread of its own, so a
broker that is down, slow or refusing never blocks the ZeroMQ side: that side only puts messages in
the :class:`~streamdet_client.mqtt.queue.OutQueue`, which this thread drains into paho while
connected (at most ``WINDOW`` messages handed over and not yet written or acknowledged).

Connection state: ``online`` (retained) is published on ``<prefix>/<gateway>/available`` after every
connect, ``offline`` is the connection's last will and is published on a clean stop. After a lost
connection or a failed attempt the next attempt waits ``reconnect_initial_s``, doubling up to
``reconnect_max_s``, each delay scaled by a random factor in ``1 +- reconnect_jitter`` so a fleet of
gateways that lost the same broker does not come back in lock-step. Each change of state (connected,
refused with its reason, unreachable with its error) is logged once; repeats go to debug.
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from streamdet_client.errors import StreamdetError
from streamdet_client.mqtt.queue import BridgeCounters, OutQueue
from streamdet_client.mqtt.settings import BridgeSettings, TlsSettings
from streamdet_client.mqtt.topics import OFFLINE, ONLINE, Topics

log = logging.getLogger("streamdet.bridge")

WINDOW = 100  # messages handed to paho and not yet written (QoS 0) or acknowledged (QoS 1)
LOOP_S = 0.05  # paho network loop wait; also how often the queue is looked at
CONNECT_TIMEOUT_S = 3.0  # TCP connect and TLS handshake of one attempt (a stop waits for one at most)
STOP_FLUSH_S = 2.0  # a clean stop waits this long for 'offline' (and what is queued) to reach the broker


def _paho() -> Any:
    """paho.mqtt.client, or a StreamdetError that says which extra installs it."""
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        raise StreamdetError("the MQTT bridge needs paho-mqtt 2.x: pip install 'streamdet-client[mqtt]' "
                             "(or 'streamdet[mqtt]')") from None
    if not hasattr(mqtt, "CallbackAPIVersion"):
        raise StreamdetError("the MQTT bridge needs paho-mqtt 2.x (found an older one): pip install 'paho-mqtt>=2,<3'")
    return mqtt


class _ClosingSSLSocket(ssl.SSLSocket):
    """Closes itself when its handshake fails (paho would leave the socket to the garbage collector)."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


class _ClosingContext(ssl.SSLContext):
    sslsocket_class = _ClosingSSLSocket


def tls_context(tls: TlsSettings) -> ssl.SSLContext:
    """A client TLS context: the broker's certificate verified against ``ca_file`` (else the system's
    CAs), its host name too unless ``insecure``; the client certificate when given.
    Raises StreamdetError naming a file that cannot be loaded."""
    ctx = _ClosingContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        if tls.ca_file is not None:
            ctx.load_verify_locations(cafile=str(tls.ca_file))
        else:
            ctx.load_default_certs()
        if tls.cert_file is not None and tls.key_file is not None:
            ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise StreamdetError(f"mqtt tls: cannot load {tls.ca_file if tls.cert_file is None else 'the certificates'}:"
                             f" {getattr(exc, 'strerror', None) or exc}") from None
    ctx.check_hostname = not tls.insecure
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def backoff_delays(initial_s: float, max_s: float, jitter: float, rng: random.Random) -> Callable[[], float]:
    """A function returning the next delay: ``initial_s`` doubling up to ``max_s``, times 1 +- jitter."""
    state = {"next": initial_s}

    def next_delay() -> float:
        base = state["next"]
        state["next"] = min(base * 2, max_s)
        return base * (1 + rng.uniform(-jitter, jitter))

    return next_delay


class MqttLink:
    """The broker connection (see the module docstring). ``start()``, then ``stop()``; ``connected``
    tells the current state. ``on_connect()`` runs in the link's thread after every connect (the
    bridge queues its retained camera states again there)."""

    def __init__(self, settings: BridgeSettings, queue: OutQueue, counters: BridgeCounters, *,
                 on_connect: Callable[[], None] | None = None, rng: random.Random | None = None) -> None:
        mqtt = _paho()
        self.settings = settings
        self.queue = queue
        self.counters = counters
        self.topics = Topics(settings.topic_prefix, settings.gateway_id)
        self.on_connect = on_connect
        self._rng = rng or random.Random()
        self._mqtt = mqtt
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._open = False  # a socket to the broker is open (CONNACK pending or received)
        self._connected = threading.Event()
        self._ever_connected = False
        self._pending: set[int] = set()  # mids handed to paho, not yet published
        self._pending_lock = threading.RLock()  # on_publish may run inside publish()
        self._last_state = ""
        self._refusal: str | None = None
        self._reset_backoff()
        self.client = self._make_client()

    # -- setup -------------------------------------------------------------------------------
    def _make_client(self) -> Any:
        mqtt, s = self._mqtt, self.settings
        v5 = s.protocol == "5"
        client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                             client_id=f"streamdet-{s.gateway_id}",
                             protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
                             clean_session=None if v5 else True)
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        if s.tls is not None:
            client.tls_set_context(tls_context(s.tls))
            client.tls_insecure_set(s.tls.insecure)
        client.will_set(self.topics.available, OFFLINE, qos=1, retain=True)
        client.connect_timeout = CONNECT_TIMEOUT_S
        client.max_queued_messages_set(0)
        client.max_inflight_messages_set(WINDOW)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def _reset_backoff(self) -> None:
        s = self.settings
        self._next_delay = backoff_delays(s.reconnect_initial_s, s.reconnect_max_s, s.reconnect_jitter, self._rng)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        """Block until connected (True) or ``timeout`` seconds pass (False)."""
        return self._connected.wait(timeout)

    # -- state and logging -------------------------------------------------------------------
    def _state(self, state: str, level: int, line: str) -> None:
        """Log ``line`` at ``level`` when the state changes, at debug while it stays the same."""
        if state != self._last_state:
            log.log(level, "%s", line)
            self._last_state = state
        else:
            log.debug("%s", line)

    # -- paho callbacks (in this link's thread, from client.loop) -------------------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self._refusal = str(reason)
            return
        self._refusal = None
        self._connected.set()
        self.counters.set("connected", 1)
        if self._ever_connected:
            self.counters.add("reconnects")
        self._ever_connected = True
        self._reset_backoff()
        self._state("connected", logging.INFO, f"connected to {self.settings.broker} as gateway "
                                                f"{self.settings.gateway_id!r}")
        client.publish(self.topics.available, ONLINE, qos=1, retain=True)
        if self.on_connect is not None:
            self.on_connect()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._open = False
        was_connected = self._connected.is_set()
        self._connected.clear()
        self.counters.set("connected", 0)
        if self._stop.is_set():
            return
        if self._refusal is not None:
            self._state(f"refused {self._refusal}", logging.ERROR,
                        f"{self.settings.broker} refused the connection: {self._refusal}"
                        f"{self._refusal_hint()}; retrying with backoff")
        elif was_connected:
            self._state("lost", logging.WARNING, f"lost the connection to {self.settings.broker} ({reason}); "
                                                 f"queueing up to {self.settings.max_queued} messages, reconnecting")

    def _refusal_hint(self) -> str:
        text = (self._refusal or "").lower()
        if "password" in text or "authori" in text:
            return " (check mqtt.username and mqtt.password)"
        return ""

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        with self._pending_lock:
            if mid not in self._pending:
                return  # availability messages: not counted
            self._pending.discard(mid)
        self.counters.add("sent")

    # -- the thread ----------------------------------------------------------------------------
    def start(self) -> MqttLink:
        if self._thread is not None:
            raise StreamdetError("MQTT link already started")
        self._thread = threading.Thread(target=self._run, name="streamdet-mqtt", daemon=True)
        self._thread.start()
        return self

    def _attempt(self) -> None:
        """One connection attempt: open the socket and send CONNECT (CONNACK comes through the loop)."""
        s = self.settings
        try:
            self.client.connect(s.host, s.broker_port, keepalive=s.keepalive_s)
        except ssl.SSLCertVerificationError as exc:
            self._state("tls", logging.ERROR, f"TLS: {s.broker} presented a certificate that does not verify "
                                              f"({exc.verify_message}); retrying with backoff")
        except (ssl.SSLError, OSError) as exc:
            what = f"{type(exc).__name__}: {exc.strerror or exc}" if isinstance(exc, OSError) else str(exc)
            self._state(f"unreachable {type(exc).__name__}", logging.WARNING,
                        f"cannot reach {s.broker} ({what}); queueing up to {s.max_queued} messages, retrying "
                        "with backoff")
        else:
            self._open = True
            return
        self._open = False

    def _run(self) -> None:
        next_attempt = 0.0
        while not self._stop.is_set():
            if not self._open:
                wait = next_attempt - time.monotonic()
                if wait > 0:
                    self._stop.wait(min(wait, 0.2))
                    continue
                self._attempt()
                if not self._open:
                    next_attempt = time.monotonic() + self._next_delay()
                continue
            rc = self.client.loop(LOOP_S)
            if rc != self._mqtt.MQTT_ERR_SUCCESS or not self._open:
                self._open = False
                if self._connected.is_set():  # loop failed without on_disconnect
                    self._on_disconnect(self.client, None, None, rc, None)
                next_attempt = time.monotonic() + self._next_delay()
                continue
            if self._connected.is_set():
                self._pump()

    def _pump(self) -> None:
        """Hand queued messages to paho while fewer than WINDOW are unwritten."""
        while True:
            with self._pending_lock:
                if len(self._pending) >= WINDOW:
                    return
            item = self.queue.pop()
            if item is None:
                return
            with self._pending_lock:  # on_publish may run inside publish(): register the mid first
                info = self.client.publish(item.topic, item.payload, qos=item.qos, retain=item.retain)
                if info.rc == self._mqtt.MQTT_ERR_SUCCESS:
                    if not info.is_published():
                        self._pending.add(info.mid)
                        continue
                    published_now = True
                else:
                    published_now = False
            if published_now:
                self.counters.add("sent")
                continue
            self.queue.push_front(item)
            return

    def stop(self, timeout: float = STOP_FLUSH_S) -> None:
        """Clean stop: publish ``offline`` (retained), flush for up to ``timeout`` s, disconnect (no will)."""
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        thread.join(5.0)
        self._thread = None
        if self._connected.is_set():
            deadline = time.monotonic() + timeout
            self._pump()
            info = self.client.publish(self.topics.available, OFFLINE, qos=1, retain=True)
            while time.monotonic() < deadline and not info.is_published():
                if self.client.loop(LOOP_S) != self._mqtt.MQTT_ERR_SUCCESS:
                    break
                self._pump()
            self.client.disconnect()
            self.client.loop(LOOP_S)
        self._connected.clear()
        self.counters.set("connected", 0)
        log.info("MQTT bridge stopped (%s)", ", ".join(f"{k} {v}" for k, v in self.counters.snapshot().items()))
