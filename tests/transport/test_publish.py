"""Publisher never blocks and counts drops; PublishProxy merges workers, stops cleanly, names bind errors,
admits only authorized CURVE clients (and counts the others), and captures stats for the supervisor.

Every loop here is bounded by a deadline; nothing asserts on timing. Sockets bind 127.0.0.1 or
ipc paths under a temporary directory only.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from zmq.auth import load_certificate

from streamdet import wire
from streamdet.client import Subscriber
from streamdet.errors import StreamdetError, WireError
from streamdet.pipeline.worker.publish import Publisher
from streamdet.transport.keys import load_server_keys
from streamdet.transport.proxy import PublishProxy
from tests.helpers.curve import make_keys

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


# -- CurveZMQ on the public endpoint, capture of stats ------------------------------------------------
def stats(source: str = "w0") -> dict[str, Any]:
    cam = {"fps": 25.0, "published": 1, "dropped": 0, "latency_ms": {"p50": 1, "p95": 2, "max": 3},
           "state": "streaming", "reconnects": 0}
    return wire.stats_message(source=source, interval_s=1.0, cameras={"cam1": cam})


def pump(pub: Publisher, until: Callable[[], bool], *receivers: Callable[[], None]) -> None:
    """Publish a detection and a stats message, then let each receiver poll, until ``until()``."""
    deadline = time.monotonic() + DEADLINE_S
    seq = 0
    while not until() and time.monotonic() < deadline:
        pub.send(message("cam1", seq))
        pub.send(stats())
        seq += 1
        for receive in receivers:
            receive()
        time.sleep(0.005)


def drain(sub: Subscriber, into: list[dict[str, Any]]) -> Callable[[], None]:
    def receive() -> None:
        msg = sub.recv(timeout=0)
        while msg is not None:
            into.append(msg)
            msg = sub.recv(timeout=0)
    return receive


def test_curve_admits_only_authorized_clients(ipc_dir: Path, tmp_path: Path, ctx: zmq.Context,
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    keys = make_keys(tmp_path)
    internal = f"ipc://{ipc_dir}/internal.sock"
    server = load_server_keys(keys.server_secret, keys.authorized_dir)
    with PublishProxy(internal, "tcp://127.0.0.1:*", curve=server) as proxy, Publisher(internal) as pub:
        endpoint = proxy.bound_endpoint
        assert endpoint is not None and proxy.rejected_handshakes == 0
        alice = Subscriber(endpoint, server_key=keys.server_public, client_key=keys.alice_secret)
        mallory = Subscriber(endpoint, server_key=keys.server_public, client_key=keys.mallory_secret)
        plain = raw_sub(ctx, endpoint, topic=wire.DETECTIONS_PREFIX)  # no CURVE at all
        got: list[dict[str, Any]] = []
        stranger: list[dict[str, Any]] = []
        plain_got: list[list[bytes]] = []

        def plain_receive() -> None:
            while plain.poll(0):
                plain_got.append(plain.recv_multipart())

        # both strangers are turned away (a ZAP refusal and a mechanism mismatch)...
        pump(pub, lambda: proxy.rejected_handshakes >= 2 and len(got) >= 5,
             drain(alice, got), drain(mallory, stranger), plain_receive)
        assert proxy.rejected_handshakes >= 2
        # ...and the stream goes on for the authorized client
        before = len(got)
        pump(pub, lambda: len(got) >= before + 20, drain(alice, got), drain(mallory, stranger), plain_receive)
        assert len(got) >= before + 20 and all(m["camera"] == "cam1" for m in got)
        assert stranger == [] and plain_got == [] and mallory.received == 0
        assert proxy.running and proxy.error is None
        for sock in (alice, mallory, plain):
            sock.close()
    mallory_public = load_certificate(keys.mallory_public)[0].decode()
    assert f"refused subscriber 127.0.0.1 on {endpoint}: its public key {mallory_public} is not in" in caplog.text
    assert "does not use the same security mechanism" in caplog.text
    for secret in keys.secrets():
        assert secret not in caplog.text
    assert proxy.rejected_handshakes >= 2  # still readable after stop


def test_curve_client_with_wrong_server_key_receives_nothing(ipc_dir: Path, tmp_path: Path) -> None:
    keys = make_keys(tmp_path)
    internal = f"ipc://{ipc_dir}/internal.sock"
    server = load_server_keys(keys.server_secret, keys.authorized_dir)
    with PublishProxy(internal, "tcp://127.0.0.1:*", curve=server) as proxy, Publisher(internal) as pub:
        assert proxy.bound_endpoint is not None
        # alice's own key, but she expects another server (mallory's public key)
        confused = Subscriber(proxy.bound_endpoint, server_key=keys.mallory_public, client_key=keys.alice_secret)
        alice = Subscriber(proxy.bound_endpoint, server_key=keys.server_public, client_key=keys.alice_secret)
        got: list[dict[str, Any]] = []
        lost: list[dict[str, Any]] = []
        pump(pub, lambda: proxy.rejected_handshakes >= 1 and len(got) >= 10, drain(alice, got), drain(confused, lost))
        assert proxy.rejected_handshakes >= 1 and len(got) >= 10 and lost == []
        confused.close()
        alice.close()


def test_authorized_keys_can_be_replaced_while_running(ipc_dir: Path, tmp_path: Path) -> None:
    keys = make_keys(tmp_path)
    internal = f"ipc://{ipc_dir}/internal.sock"
    server = load_server_keys(keys.server_secret, keys.authorized_dir)
    with PublishProxy(internal, "tcp://127.0.0.1:*", curve=server) as proxy, Publisher(internal) as pub:
        assert proxy.bound_endpoint is not None
        proxy.set_authorized_keys(frozenset({load_certificate(keys.mallory_public)[0]}))
        with Subscriber(proxy.bound_endpoint, server_key=keys.server_public, client_key=keys.mallory_secret) as sub:
            got: list[dict[str, Any]] = []
            pump(pub, lambda: len(got) >= 3, drain(sub, got))
            assert len(got) >= 3
    with pytest.raises(StreamdetError, match="no CURVE keys"):
        PublishProxy(internal, "tcp://127.0.0.1:*").set_authorized_keys(frozenset())


def test_plain_proxy_counts_mismatched_handshakes(ipc_dir: Path, tmp_path: Path) -> None:
    """Without CURVE everyone is admitted, but a CURVE client (wrong setup) is counted and gets nothing."""
    keys = make_keys(tmp_path)
    internal = f"ipc://{ipc_dir}/internal.sock"
    with PublishProxy(internal, "tcp://127.0.0.1:*") as proxy, Publisher(internal) as pub:
        assert proxy.bound_endpoint is not None
        with (
            Subscriber(proxy.bound_endpoint) as sub,
            Subscriber(proxy.bound_endpoint, server_key=keys.server_public, client_key=keys.alice_secret) as curve,
        ):
            got: list[dict[str, Any]] = []
            lost: list[dict[str, Any]] = []
            pump(pub, lambda: proxy.rejected_handshakes >= 1 and len(got) >= 3, drain(sub, got), drain(curve, lost))
            assert proxy.rejected_handshakes >= 1 and len(got) >= 3 and lost == []


def test_capture_delivers_stats_only(ipc_dir: Path, tmp_path: Path) -> None:
    """The supervisor's stats come from the capture socket, so CURVE cannot lock it out."""
    keys = make_keys(tmp_path)
    internal = f"ipc://{ipc_dir}/internal.sock"
    captured: list[dict[str, Any]] = []
    threads: set[str] = set()

    def on_stats(msg: dict[str, Any]) -> None:
        threads.add(threading.current_thread().name)
        captured.append(msg)

    server = load_server_keys(keys.server_secret, keys.authorized_dir)
    with (
        PublishProxy(internal, "tcp://127.0.0.1:*", curve=server, on_stats=on_stats) as proxy,
        Publisher(internal) as pub,
    ):
        pump(pub, lambda: len(captured) >= 5)
        assert proxy.running
    assert len(captured) >= 5
    assert all(m["type"] == "stats" and m["source"] == "w0" for m in captured)  # never a detection
    assert threads == {"streamdet-publish-stats"}


def test_capture_survives_public_stats_subscribers_coming_and_going(ipc_dir: Path) -> None:
    internal = f"ipc://{ipc_dir}/internal.sock"
    captured: list[dict[str, Any]] = []
    with PublishProxy(internal, "tcp://127.0.0.1:*", on_stats=captured.append) as proxy, Publisher(internal) as pub:
        assert proxy.bound_endpoint is not None
        with Subscriber(proxy.bound_endpoint, cameras=[], stats=True) as sub:
            got: list[dict[str, Any]] = []
            pump(pub, lambda: len(got) >= 3, drain(sub, got))
        # the public subscriber's unsubscribe from stats/ reaches the proxy; the capture goes on
        time.sleep(0.2)  # let the unsubscribe travel on to the worker's PUB
        before = len(captured)
        pump(pub, lambda: len(captured) >= before + 20)
        assert len(captured) >= before + 20


def test_slow_stats_callback_never_stalls_forwarding(ipc_dir: Path) -> None:
    internal = f"ipc://{ipc_dir}/internal.sock"
    release = threading.Event()
    calls: list[dict[str, Any]] = []

    def stuck(msg: dict[str, Any]) -> None:
        calls.append(msg)
        release.wait(DEADLINE_S)

    try:
        with (
            PublishProxy(internal, "tcp://127.0.0.1:*", hwm=10, on_stats=stuck) as proxy,
            Publisher(internal) as pub,
        ):
            assert proxy.bound_endpoint is not None
            with Subscriber(proxy.bound_endpoint) as sub:
                got: list[dict[str, Any]] = []
                pump(pub, lambda: len(calls) >= 1 and len(got) >= 3, drain(sub, got))  # the callback is stuck
                for _ in range(3000):  # far more stats than the capture queue holds
                    pub.send(stats())
                pump(pub, lambda: len(got) >= 50, drain(sub, got))
                assert len(got) >= 50 and len(calls) == 1
            release.set()
    finally:
        release.set()


def test_stats_callback_errors_are_logged_not_fatal(ipc_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    internal = f"ipc://{ipc_dir}/internal.sock"
    calls: list[int] = []

    def flaky(msg: dict[str, Any]) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")

    with PublishProxy(internal, "tcp://127.0.0.1:*", on_stats=flaky) as proxy, Publisher(internal) as pub:
        pump(pub, lambda: len(calls) >= 3)
        assert proxy.running
    assert len(calls) >= 3 and "the stats callback raised" in caplog.text and "boom" in caplog.text


def test_shared_context_is_kept_and_endpoints_are_freed(ipc_dir: Path, ctx: zmq.Context, tmp_path: Path) -> None:
    keys = make_keys(tmp_path)
    internal = f"ipc://{ipc_dir}/internal.sock"
    server = load_server_keys(keys.server_secret, keys.authorized_dir)
    proxy = PublishProxy(internal, "tcp://127.0.0.1:*", curve=server, on_stats=lambda m: None, context=ctx).start()
    public = proxy.bound_endpoint
    assert public is not None
    # one ZAP handler per context: a second CURVE proxy in it is refused, and leaves nothing bound
    with pytest.raises(StreamdetError, match="ZAP handler"):
        PublishProxy(f"ipc://{ipc_dir}/other.sock", "tcp://127.0.0.1:*", curve=server, context=ctx).start()
    with Publisher(internal, context=ctx) as pub:
        pub.send(message())
    proxy.stop()
    assert not ctx.closed and not proxy.running and proxy.error is None
    probe = ctx.socket(zmq.PUB)  # the public port is free as soon as stop() returns
    probe.setsockopt(zmq.LINGER, 0)
    probe.bind(public)
    probe.close()
    with PublishProxy(internal, "tcp://127.0.0.1:*", curve=server, context=ctx) as again:  # ZAP free again
        assert again.running
    with PublishProxy(f"ipc://{ipc_dir}/other.sock", "tcp://127.0.0.1:*", context=ctx) as again:
        assert again.running
