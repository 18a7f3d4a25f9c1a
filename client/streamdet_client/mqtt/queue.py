"""The bridge's outgoing queue and counters: bounded, the oldest message dropped first, each drop counted.

Messages wait here while the broker is unreachable or slow; the ZeroMQ side never waits for the
broker. A drop is counted by why the queue was full: ``disconnected`` (no broker connection) or
``queue_full`` (connected, but the broker takes messages slower than they come). Thread-safe: the
ZeroMQ thread puts, the MQTT thread takes. Standard library only.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import MutableSequence
from dataclasses import dataclass

COUNTER_FIELDS = ("connected", "sent", "dropped_queue_full", "dropped_disconnected", "reconnects", "queued")
"""The bridge's figures, in the order of a shared array that mirrors them (``BridgeCounters.sink``)."""

DROP_REASONS = ("queue_full", "disconnected")


@dataclass(frozen=True)
class Outgoing:
    """One MQTT message to publish."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False


class BridgeCounters:
    """connected (0/1), sent, dropped by reason, reconnects and queued, readable from any thread.

    ``sink``: a sequence of floats (e.g. a ``multiprocessing`` shared array of len(COUNTER_FIELDS))
    that receives every change, so a supervisor can read a child bridge's figures.
    """

    def __init__(self, sink: MutableSequence[float] | None = None) -> None:
        self._values = dict.fromkeys(COUNTER_FIELDS, 0)
        self._lock = threading.Lock()
        self.sink = sink
        if sink is not None:
            for i in range(len(COUNTER_FIELDS)):
                sink[i] = 0.0

    def _store(self, name: str, value: int) -> None:
        self._values[name] = value
        if self.sink is not None:
            self.sink[COUNTER_FIELDS.index(name)] = float(value)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._store(name, self._values[name] + n)

    def set(self, name: str, value: int) -> None:
        with self._lock:
            self._store(name, value)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)

    @property
    def dropped(self) -> int:
        with self._lock:
            return self._values["dropped_queue_full"] + self._values["dropped_disconnected"]


class OutQueue:
    """At most ``maxlen`` messages; ``put`` on a full queue drops the oldest and counts it."""

    def __init__(self, maxlen: int, counters: BridgeCounters) -> None:
        if maxlen < 1:
            raise ValueError(f"maxlen must be >= 1, got {maxlen}")
        self.maxlen = maxlen
        self.counters = counters
        self._items: deque[Outgoing] = deque()
        self._lock = threading.Lock()

    def put(self, item: Outgoing, connected: bool) -> None:
        """Append ``item``; when full, drop the oldest first (counted as ``queue_full`` while
        ``connected``, else ``disconnected``)."""
        with self._lock:
            if len(self._items) >= self.maxlen:
                self._items.popleft()
                self.counters.add("dropped_queue_full" if connected else "dropped_disconnected")
            self._items.append(item)
            self.counters.set("queued", len(self._items))

    def pop(self) -> Outgoing | None:
        """The oldest message, or None when empty."""
        with self._lock:
            item = self._items.popleft() if self._items else None
            self.counters.set("queued", len(self._items))
            return item

    def push_front(self, item: Outgoing) -> None:
        """Put back a message that could not be handed over (it stays the oldest; never counted twice)."""
        with self._lock:
            if len(self._items) >= self.maxlen:
                self.counters.add("dropped_disconnected")
                return
            self._items.appendleft(item)
            self.counters.set("queued", len(self._items))

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
