"""The publish guard's parts: ZAP decisions and the log rate limiter (end to end in test_publish.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import zmq
from zmq.utils import z85

from streamdet.transport.handshakes import HandshakeGuard, RateLimiter
from streamdet.transport.sockets import ZAP_DOMAIN


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def zap_request(key: bytes, mechanism: bytes = b"CURVE", domain: bytes = ZAP_DOMAIN) -> list[bytes]:
    return [b"1.0", b"7", domain, b"192.0.2.1", b"", mechanism, z85.decode(key)]


def test_zap_admits_only_authorized_curve_keys(ctx: zmq.Context, caplog: pytest.LogCaptureFixture) -> None:
    alice, _ = zmq.curve_keypair()
    mallory, _ = zmq.curve_keypair()
    guard = HandshakeGuard(ctx, "tcp://127.0.0.1:5555", frozenset({alice}))
    assert guard._decide(zap_request(alice)) == (b"200", b"OK")
    assert guard._decide(zap_request(mallory))[0] == b"400"
    assert f"refused subscriber 192.0.2.1 on tcp://127.0.0.1:5555: its public key {mallory.decode()}" in caplog.text
    assert guard._decide(zap_request(alice, mechanism=b"PLAIN"))[0] == b"400"
    assert guard._decide(zap_request(alice, domain=b"other"))[0] == b"400"
    assert guard._decide([b"1.0", b"7"])[0] == b"400"
    assert guard._decide([b"2.0", b"7", ZAP_DOMAIN, b"", b"", b"CURVE", b"x" * 32])[0] == b"400"
    guard.set_authorized(frozenset({mallory}))
    assert guard._decide(zap_request(mallory))[0] == b"200"
    assert guard._decide(zap_request(alice))[0] == b"400"
    assert guard.join(0)  # never started: nothing to wait for


def test_zap_refusals_are_rate_limited_per_peer(ctx: zmq.Context, caplog: pytest.LogCaptureFixture) -> None:
    mallory, _ = zmq.curve_keypair()
    guard = HandshakeGuard(ctx, "ep", frozenset())
    for _ in range(50):
        guard._decide(zap_request(mallory))
    assert caplog.text.count("refused subscriber 192.0.2.1") == 1


def test_rate_limiter() -> None:
    now = [0.0]
    limiter = RateLimiter(interval_s=60.0, max_keys=3, clock=lambda: now[0])
    assert limiter.allow("a") == 0
    assert limiter.allow("a") is None and limiter.allow("a") is None
    assert limiter.allow("b") == 0  # another key has its own budget
    now[0] = 59.0
    assert limiter.allow("a") is None
    now[0] = 60.5
    assert limiter.allow("a") == 3  # the line says how many were held back
    assert limiter.allow("a") is None
    # bounded memory: beyond max_keys live keys, newcomers share one line
    assert limiter.allow("c") == 0
    assert limiter.allow("d") == 0  # takes the room of "b", which has expired
    assert limiter.allow("e") == 0  # full: "e" is the first of the overflow...
    assert limiter.allow("f") is None  # ...whose later newcomers share its line
    now[0] = 200.0  # old keys expire and make room again
    assert limiter.allow("f") == 0
