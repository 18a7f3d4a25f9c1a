"""Receive streamdet messages: connect a SUB socket, subscribe exactly, yield validated dicts.

Consumes the ZeroMQ multipart messages ``[topic, payload]`` published by the daemon (contract in
docs/wire.md), over CurveZMQ when given key files. Produces decoded message dicts
(``Subscriber``) or JSON lines on stdout (``subscribe_main``, behind ``streamdet subscribe``; with
``--summary`` per-camera lines from the stats, see ``streamdet_client.summary``).
Runs in any subscriber process; imports only pyzmq, the standard library and its siblings in
``streamdet_client`` (never numpy, torch, pydantic or yaml), so it starts fast.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, TextIO

import zmq

from streamdet_client import wire
from streamdet_client.errors import StreamdetError, WireError
from streamdet_client.summary import summary_lines
from streamdet_client.transport import ContextHolder, CurveClientKeys, attach, configure_subscriber

log = logging.getLogger(__name__)

_WARN_FIRST = 10  # invalid messages logged one by one; after that, one warning per _WARN_EVERY
_WARN_EVERY = 1000


class Subscriber:
    """A SUB socket subscribed to exactly the requested cameras (and optionally stats).

    ``cameras=None`` means every camera; an empty list means none (useful with ``stats=True``).
    Iterate it (``for msg in sub:``) or call ``recv(timeout)``. Messages that break the contract
    are skipped with a logged warning and counted in ``invalid``; ``received`` counts good ones;
    ``lost`` counts messages missing from per-camera ``seq`` gaps seen by this subscriber.
    With ``server_key`` (the daemon's public certificate, ``NAME.key``) and ``client_key`` (this
    client's secret certificate, ``NAME.key_secret``, holding both its keys) the connection uses
    CurveZMQ: encrypted, and admitted only if the daemon lists this client's public key. Both or
    neither; a path that does not exist is looked up in ``$CREDENTIALS_DIRECTORY``. ``curve=``
    passes the keys in memory instead (``CurveClientKeys``). The ``curve`` attribute tells whether
    this Subscriber uses CURVE.
    ``context``: a ZeroMQ context to share; by default the Subscriber makes its own.
    Raises StreamdetError for a bad endpoint or key file and WireError for a bad camera id.
    Not thread-safe: use one Subscriber per thread.
    """

    def __init__(
        self,
        endpoint: str,
        cameras: Iterable[str] | None = None,
        stats: bool = False,
        rcvhwm: int = 1000,
        context: zmq.Context | None = None,
        *,
        server_key: str | os.PathLike[str] | None = None,
        client_key: str | os.PathLike[str] | None = None,
        curve: CurveClientKeys | None = None,
    ) -> None:
        if curve is not None and (server_key is not None or client_key is not None):
            raise StreamdetError("curve (keys in memory) and server_key/client_key (key files) exclude each other")
        if curve is None:
            curve = client_curve_keys(server_key, client_key)
        if isinstance(cameras, str):
            cameras = [cameras]
        topics = [wire.DETECTIONS_PREFIX] if cameras is None else [wire.detection_topic(c) for c in cameras]
        if stats:
            topics.append(wire.STATS_TOPIC)
        if not topics:
            raise StreamdetError("nothing to subscribe to: no camera and no stats requested")
        self.endpoint = endpoint
        self.topics: tuple[bytes, ...] = tuple(dict.fromkeys(topics))
        self.received = 0
        self.invalid = 0
        self.lost = 0
        self._last_seq: dict[str, int] = {}
        self.curve = curve is not None
        self._ctx = ContextHolder(context)
        self._sock: zmq.Socket | None = None
        try:
            self._sock = self._ctx.socket(zmq.SUB)
            configure_subscriber(self._sock, endpoint, rcvhwm=rcvhwm, curve=curve)
            attach(self._sock, endpoint, bind=False)
            for topic in self.topics:
                self._sock.setsockopt(zmq.SUBSCRIBE, topic)
        except BaseException:
            self.close()
            raise

    @property
    def closed(self) -> bool:
        return self._sock is None

    def recv(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next valid message, or None if none arrives within ``timeout`` seconds.

        ``timeout=None`` waits forever; ``0`` only takes what is already queued.
        """
        sock = self._sock
        if sock is None:
            raise StreamdetError("subscriber is closed")
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            wait_ms = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000 + 0.999))
            if not sock.poll(wait_ms, zmq.POLLIN):
                return None
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                continue
            try:
                msg = wire.decode(frames)
            except WireError as exc:
                self._skip(frames, exc)
                continue
            self.received += 1
            if msg["type"] == wire.DETECTIONS:
                self._track_seq(msg["camera"], msg["seq"])
            return msg

    def _skip(self, frames: list[bytes], exc: WireError) -> None:
        """Count an invalid message and warn (rate-limited, so garbage cannot flood the log)."""
        self.invalid += 1
        if self.invalid <= _WARN_FIRST or self.invalid % _WARN_EVERY == 0:
            topic = frames[0][:80] if frames else b""
            log.warning("skipped invalid message #%d (topic %r): %s", self.invalid, topic, exc)

    def _track_seq(self, camera: str, seq: int) -> None:
        """Add per-camera seq gaps to ``lost``; a seq that goes back (daemon restart) starts over."""
        last = self._last_seq.get(camera)
        if last is not None and seq > last + 1:
            self.lost += seq - last - 1
        self._last_seq[camera] = seq

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        if self._sock is None:
            raise StopIteration
        msg = self.recv(None)
        assert msg is not None  # recv(None) waits until a valid message arrives
        return msg

    def close(self) -> None:
        """Close the socket (and the context if this Subscriber made it). Idempotent."""
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        self._ctx.close()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def client_curve_keys(
    server_key: str | os.PathLike[str] | None, client_key: str | os.PathLike[str] | None
) -> CurveClientKeys | None:
    """The CURVE keys of a subscriber from its two certificate files, or None without them.

    Raises StreamdetError when only one is given, and KeyFileError (naming the file) when one
    cannot be read.
    """
    if server_key is None and client_key is None:
        return None
    if server_key is None or client_key is None:
        given, missing = ("server_key", "client_key") if client_key is None else ("client_key", "server_key")
        raise StreamdetError(f"{given} without {missing}: CURVE needs both the server's public key (.key) "
                             "and this client's secret key (.key_secret)")
    from streamdet_client.keys import load_client_keys

    return load_client_keys(server_key, client_key)


def _silence_stdout() -> None:
    """After EPIPE on stdout, point fd 1 at /dev/null so the interpreter's final flush is quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def subscribe_main(
    endpoint: str,
    cameras: Iterable[str] | None = None,
    stats: bool = False,
    count: int | None = None,
    timeout: float | None = None,
    out: TextIO | None = None,
    summary: bool = False,
    server_key: str | None = None,
    client_key: str | None = None,
) -> int:
    """``streamdet subscribe``: print each message as one JSON line (flushed), return the exit status.

    With ``summary``, receive the stats messages only and print, per stats interval, one line per
    camera (``cameras`` when given) for people (:func:`streamdet_client.summary.summary_lines`);
    ``stats`` is then implied and ``count`` counts the stats messages that printed a line.
    ``server_key``/``client_key``: connect with CurveZMQ (see :class:`Subscriber`).

    Stops with 0 after ``count`` messages, on Ctrl-C, or when the reader goes away (broken pipe,
    e.g. ``| head``). ``timeout`` is the longest wait for the next output (a message; with
    ``summary``, a stats message covering a shown camera): when it passes without one, returns 1
    with a hint on stderr. ``out`` defaults to ``sys.stdout``.
    Raises StreamdetError (bad endpoint or key file) or WireError (bad camera id).
    """
    if count is not None and count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    stream = sys.stdout if out is None else out
    if cameras is not None:
        cameras = [cameras] if isinstance(cameras, str) else list(cameras)
        for camera in cameras:
            wire.detection_topic(camera)  # a bad id is an error even where only stats are received
    # the summary reads the stats alone: they carry every figure it prints, so no detection stream is pulled
    topics, stats = ([], True) if summary else (cameras, stats)
    printed = unshown = 0  # messages printed; stats messages since the last output that covered no shown camera
    try:
        with Subscriber(endpoint, topics, stats=stats, server_key=server_key, client_key=client_key) as sub:
            last_output = time.monotonic()
            while count is None or printed < count:
                wait = None if timeout is None else max(0.0, timeout - (time.monotonic() - last_output))
                msg = sub.recv(wait)
                if msg is None:
                    if unshown and cameras:
                        _print_no_camera_hint(endpoint, cameras, timeout, unshown)
                    else:
                        _print_timeout_hint(endpoint, topics, stats, timeout, printed, sub.curve)
                    return 1
                lines = summary_lines(msg, cameras) if summary else [json.dumps(msg, separators=(",", ":"),
                                                                                ensure_ascii=False)]
                if not lines:
                    unshown += 1
                    continue
                stream.write("".join(line + "\n" for line in lines))
                stream.flush()
                printed += 1
                unshown = 0
                last_output = time.monotonic()
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        if stream is sys.stdout:
            _silence_stdout()
        return 0
    return 0


def _print_timeout_hint(
    endpoint: str, cameras: list[str] | None, stats: bool, timeout: float | None, printed: int, curve: bool = False
) -> None:
    """Tell the user on stderr what was waited for, and where, when nothing came."""
    parts = ["all cameras"] if cameras is None else ([f"camera(s) {', '.join(cameras)}"] if cameras else [])
    if stats:
        parts.append("stats")
    when = f"for {timeout:g} s after {printed} message(s)" if printed else f"within {timeout:g} s"
    hint = "is the daemon running and publishing to this endpoint?"
    if not printed and curve:
        hint += (" With CURVE: is --server-key the daemon's public key, and is this client's public key in the"
                 " daemon's publish.curve.authorized_keys?")
    elif not printed:
        hint += " If the daemon uses CURVE, pass --server-key and --client-key."
    print(f"streamdet subscribe: no message {when} from {endpoint} ({' and '.join(parts)}); {hint}", file=sys.stderr)


def _print_no_camera_hint(endpoint: str, cameras: list[str], timeout: float | None, unshown: int) -> None:
    """``--summary --camera``: stats arrived, but none covered the cameras asked for."""
    print(f"streamdet subscribe: no stats for camera(s) {', '.join(cameras)} within {timeout:g} s from {endpoint} "
          f"({unshown} stats message(s) covered only other cameras); is the camera id right, and is it enabled?",
          file=sys.stderr)
