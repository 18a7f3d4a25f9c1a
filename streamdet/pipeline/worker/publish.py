"""Stage 6 (worker side): publish wire messages over ZeroMQ without ever blocking the pipeline.

Consumes message dicts built with ``streamdet.wire`` (detections per frame, periodic stats).
Produces ZeroMQ multipart messages ``[topic, payload]`` on a PUB socket that connects to the
supervisor's internal endpoint, where :class:`streamdet.transport.proxy.PublishProxy` forwards
them to subscribers, so several workers appear to subscribers as one stream.

Back-pressure policy: drop, never block. A worker's PUB refuses a message once ``hwm`` messages
are queued towards the proxy (counted in ``Publisher.dropped``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import zmq

from streamdet import wire
from streamdet.errors import StreamdetError
from streamdet.transport.sockets import ContextHolder, attach, configure_publisher

log = logging.getLogger(__name__)


class Publisher:
    """A PUB socket that sends wire messages and never blocks.

    Connects to ``endpoint`` (the supervisor's internal proxy endpoint), or binds it with
    ``bind=True`` (a standalone publisher without a proxy). ``send`` is non-blocking: when
    ``hwm`` messages are already queued it drops the message and counts it in ``dropped``.
    ``sent`` counts messages handed to ZeroMQ (including those no subscriber wanted).
    ``bound_endpoint`` is the endpoint actually bound (``bind=True``; a ``:*`` port resolved).
    ``context``: the process's ZeroMQ context; by default the Publisher makes its own and
    terminates it on ``close``. Not thread-safe: use one Publisher per thread.
    """

    def __init__(
        self, endpoint: str, *, bind: bool = False, hwm: int = 1000, context: zmq.Context | None = None
    ) -> None:
        self.endpoint = endpoint
        self.sent = 0
        self.dropped = 0
        self.bound_endpoint: str | None = None
        self._ctx = ContextHolder(context)
        self._sock: zmq.Socket | None = None
        try:
            self._sock = self._ctx.socket(zmq.PUB)
            configure_publisher(self._sock, endpoint, hwm=hwm, bind=bind)
            resolved = attach(self._sock, endpoint, bind=bind)
            if bind:
                self.bound_endpoint = resolved
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

        A :class:`streamdet.wire.DetectionMessage` was checked when it was built and is encoded as it
        is; any other mapping is validated first (WireError if it breaks the contract: a bug in the caller).
        """
        frames = msg.frames() if isinstance(msg, wire.DetectionMessage) else wire.encode(msg)
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
        self._ctx.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
