"""Publisher never blocks and counts drops; PublishProxy merges workers, stops cleanly, names bind errors.

Every loop here is bounded by a deadline; nothing asserts on timing. Sockets bind 127.0.0.1 or
ipc paths under a temporary directory only.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from streamdet import wire
from streamdet.errors import StreamdetError, WireError
from streamdet.pipeline.publish import Publisher, PublishProxy

DEADLINE_S = 10.0


def message(camera: str = "cam1", seq: int = 0, n_dets: int = 1) -> dict[str, Any]:
    dets = [{"box": [1.0, 2.0, 30.0, 40.0], "score": 0.5, "class_id": i % 80, "label": "x"} for i in range(n_dets)]
    return wire.detection_message(
        camera=camera, seq=seq, frame=seq, pts=seq / 25, ts_capture=time.time(), width=640, height=480, detections=dets
    )


@pytest.fixture
def ipc_dir() -> Iterator[Path]:
    """A short private directory for ipc:// sockets (socket paths are limited to ~100 bytes)."""
    with tempfile.TemporaryDirectory(prefix="sdt-") as d:
        yield Path(d)


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def raw_sub(ctx: zmq.Context, endpoint: str, topic: bytes = b"", rcvhwm: int = 1000, rcvbuf: int = -1) -> zmq.Socket:
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, rcvhwm)
    sock.setsockopt(zmq.RCVBUF, rcvbuf)
    sock.connect(endpoint)
    sock.setsockopt(zmq.SUBSCRIBE, topic)
    return sock


def test_publisher_without_subscriber_never_blocks(ipc_dir: Path) -> None:
    with Publisher("tcp://127.0.0.1:*", bind=True, hwm=2) as pub:
        assert pub.bound_endpoint is not None and pub.bound_endpoint.startswith("tcp://127.0.0.1:")
        msg = message()
        for _ in range(2000):
            pub.send(msg)
        assert pub.sent == 2000 and pub.dropped == 0  # nobody subscribed: filtered, not queued
    # connecting to an endpoint nobody has bound yet (the proxy is not up) is fine too
    with Publisher(f"ipc://{ipc_dir}/absent.sock", hwm=2) as pub:
        for _ in range(2000):
            pub.send(msg)
        assert pub.sent + pub.dropped == 2000


def test_publisher_with_stalled_subscriber_drops_and_counts(ctx: zmq.Context) -> None:
    with Publisher("tcp://127.0.0.1:*", bind=True, hwm=4) as pub:
        assert pub.bound_endpoint is not None
        sub = raw_sub(ctx, pub.bound_endpoint, rcvhwm=1, rcvbuf=4096)  # never reads
        msg = message(n_dets=300)  # ~25 kB, so the kernel buffers fill quickly
        calls = 0
        deadline = time.monotonic() + DEADLINE_S
        while pub.dropped < 20 and calls < 100_000 and time.monotonic() < deadline:
            assert pub.send(msg) in (True, False)  # returned: did not block
            calls += 1
        assert pub.dropped >= 20, f"no drop counted after {calls} sends"
        assert pub.sent + pub.dropped == calls
        sub.close()


def test_publisher_send_rejects_invalid_message_and_closed_use() -> None:
    pub = Publisher("tcp://127.0.0.1:*", bind=True)
    with pytest.raises(WireError):
        pub.send({"v": 1, "type": "detections"})
    pub.close()
    pub.close()  # idempotent
    with pytest.raises(StreamdetError, match="closed"):
        pub.send(message())


def test_proxy_merges_two_publishers(ipc_dir: Path) -> None:
    internal = f"ipc://{ipc_dir}/internal.sock"
    with PublishProxy(internal, "tcp://127.0.0.1:*", hwm=100) as proxy:
        assert proxy.running and proxy.bound_endpoint is not None
        from streamdet.client import Subscriber

        with Publisher(internal) as p1, Publisher(internal) as p2, Subscriber(proxy.bound_endpoint) as sub:
            seen: dict[str, int] = {}
            deadline = time.monotonic() + DEADLINE_S
            seq = 0
            while len(seen) < 2 and time.monotonic() < deadline:
                p1.send(message("camA", seq))
                p2.send(message("camB", seq))
                seq += 1
                msg = sub.recv(timeout=0.02)
                while msg is not None:
                    seen[msg["camera"]] = seen.get(msg["camera"], 0) + 1
                    msg = sub.recv(timeout=0)
            assert set(seen) == {"camA", "camB"}
            assert sub.invalid == 0


def test_proxy_with_stalled_subscriber_never_blocks_workers(ipc_dir: Path, ctx: zmq.Context) -> None:
    internal = f"ipc://{ipc_dir}/internal.sock"
    with PublishProxy(internal, "tcp://127.0.0.1:*", hwm=4) as proxy, Publisher(internal, hwm=4) as pub:
        assert proxy.bound_endpoint is not None
        sub = raw_sub(ctx, proxy.bound_endpoint, rcvhwm=1, rcvbuf=4096)  # never reads
        msg = message(n_dets=200)
        deadline = time.monotonic() + 3
        calls = 0
        while calls < 1000 and time.monotonic() < deadline:
            pub.send(msg)
            calls += 1
        assert pub.sent + pub.dropped == calls
        assert proxy.running and proxy.error is None
        # the stalled subscriber does not wedge the stream: a fresh one still receives
        fresh = raw_sub(ctx, proxy.bound_endpoint, topic=wire.DETECTIONS_PREFIX)
        got = None
        deadline = time.monotonic() + DEADLINE_S
        while got is None and time.monotonic() < deadline:
            pub.send(message())
            if fresh.poll(20):
                got = wire.decode(fresh.recv_multipart())
        assert got is not None and got["camera"] == "cam1"
        sub.close()
        fresh.close()


def test_proxy_stop_is_clean_and_frees_endpoints(ipc_dir: Path, ctx: zmq.Context) -> None:
    internal = f"ipc://{ipc_dir}/internal.sock"
    proxy = PublishProxy(internal, "tcp://127.0.0.1:*", hwm=10).start()
    public = proxy.bound_endpoint
    assert public is not None and proxy.running
    sub = raw_sub(ctx, public)  # a connected client must not keep the port bound
    time.sleep(0.05)
    proxy.stop()
    assert not proxy.running and proxy.error is None
    proxy.stop()  # idempotent
    # both endpoints can be bound again at once, by a new proxy and by a plain socket
    with PublishProxy(internal, public, hwm=10) as again:
        assert again.running and again.bound_endpoint == public
    probe = ctx.socket(zmq.PUB)
    probe.setsockopt(zmq.LINGER, 0)
    probe.bind(public)
    probe.close()
    sub.close()


def test_proxy_start_twice_is_an_error(ipc_dir: Path) -> None:
    with (
        PublishProxy(f"ipc://{ipc_dir}/i.sock", "tcp://127.0.0.1:*") as proxy,
        pytest.raises(StreamdetError, match="already started"),
    ):
        proxy.start()


def test_bind_errors_name_the_endpoint(ipc_dir: Path, ctx: zmq.Context) -> None:
    busy = ctx.socket(zmq.PUB)
    busy.setsockopt(zmq.LINGER, 0)
    busy.bind("tcp://127.0.0.1:*")
    taken = busy.getsockopt(zmq.LAST_ENDPOINT).decode()
    internal = f"ipc://{ipc_dir}/internal.sock"
    with pytest.raises(StreamdetError, match="cannot bind") as info:
        PublishProxy(internal, taken).start()
    assert taken in str(info.value) and "in use" in str(info.value)
    for bad in ("tcp://nonsense", "bogus://x", "tcp://127.0.0.1:99999"):
        with pytest.raises(StreamdetError, match="cannot bind") as info:
            PublishProxy(internal, bad).start()
        assert bad in str(info.value)
    with pytest.raises(StreamdetError, match="cannot bind") as info:
        PublishProxy(f"ipc://{ipc_dir}/missing/dir/x.sock", "tcp://127.0.0.1:*").start()
    assert "missing/dir" in str(info.value)
    with pytest.raises(StreamdetError, match=f"cannot bind '{taken}'"):
        Publisher(taken, bind=True)
    with pytest.raises(StreamdetError, match="cannot connect to 'bogus://x'"):
        Publisher("bogus://x")
    # a failed start released what it had bound: the internal endpoint is free again
    with PublishProxy(internal, "tcp://127.0.0.1:*") as proxy:
        assert proxy.running
    busy.close()
