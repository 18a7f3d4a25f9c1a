"""Socket options per role, contexts owned or shared, bind/connect errors, key sets that hide secrets."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import zmq

from streamdet.errors import StreamdetError
from streamdet.transport.sockets import (
    PUBLIC_MAX_SUBSCRIPTION_BYTES,
    SUBSCRIBER_MAX_MESSAGE_BYTES,
    ZAP_DOMAIN,
    ContextHolder,
    CurveClientKeys,
    CurveServerKeys,
    attach,
    configure_internal_xsub,
    configure_public_xpub,
    configure_publisher,
    configure_subscriber,
    make_socket,
)


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def server_keys() -> CurveServerKeys:
    public, secret = zmq.curve_keypair()
    client_public, _ = zmq.curve_keypair()
    return CurveServerKeys(public, secret, frozenset({client_public}))


def test_context_holder_owns_or_borrows(ctx: zmq.Context) -> None:
    own = ContextHolder()
    assert own.owned
    sock = own.socket(zmq.PUB)
    assert sock.getsockopt(zmq.LINGER) == 0
    sock.close()
    own.close()
    assert own.context.closed
    own.close()  # idempotent
    shared = ContextHolder(ctx)
    assert not shared.owned and shared.context is ctx
    shared.close()
    assert not ctx.closed  # a caller's context is never terminated


def test_public_xpub_options(ctx: zmq.Context) -> None:
    plain = make_socket(ctx, zmq.XPUB)
    configure_public_xpub(plain, "tcp://127.0.0.1:*", hwm=7, curve=None)
    assert plain.getsockopt(zmq.SNDHWM) == 7
    assert plain.getsockopt(zmq.MAXMSGSIZE) == PUBLIC_MAX_SUBSCRIPTION_BYTES
    assert plain.getsockopt(zmq.TCP_KEEPALIVE) == 1 and plain.getsockopt(zmq.IPV6) == 0
    assert plain.getsockopt(zmq.CURVE_SERVER) == 0 and plain.getsockopt(zmq.MECHANISM) == zmq.NULL
    keys = server_keys()
    secure = make_socket(ctx, zmq.XPUB)
    configure_public_xpub(secure, "tcp://[::1]:*", hwm=7, curve=keys)
    assert secure.getsockopt(zmq.IPV6) == 1
    assert secure.getsockopt(zmq.MECHANISM) == zmq.CURVE and secure.getsockopt(zmq.CURVE_SERVER) == 1
    assert secure.getsockopt(zmq.ZAP_DOMAIN) == ZAP_DOMAIN
    assert secure.getsockopt(zmq.ZAP_ENFORCE_DOMAIN) == 1  # no ZAP handler: no admission
    plain.close()
    secure.close()


def test_subscriber_options(ctx: zmq.Context) -> None:
    sock = make_socket(ctx, zmq.SUB)
    public, secret = zmq.curve_keypair()
    server_public, _ = zmq.curve_keypair()
    configure_subscriber(sock, "tcp://127.0.0.1:5555", rcvhwm=9,
                         curve=CurveClientKeys(server_public, public, secret))
    assert sock.getsockopt(zmq.RCVHWM) == 9
    assert sock.getsockopt(zmq.MAXMSGSIZE) == SUBSCRIBER_MAX_MESSAGE_BYTES
    assert sock.getsockopt(zmq.RECONNECT_IVL) == 100 and sock.getsockopt(zmq.RECONNECT_IVL_MAX) == 5000
    assert sock.getsockopt(zmq.TCP_KEEPALIVE) == 1
    assert sock.getsockopt(zmq.MECHANISM) == zmq.CURVE and sock.getsockopt(zmq.CURVE_SERVER) == 0
    ipc = make_socket(ctx, zmq.SUB)
    configure_subscriber(ipc, "ipc:///tmp/x.sock", rcvhwm=1, curve=None)
    assert ipc.getsockopt(zmq.MECHANISM) == zmq.NULL
    sock.close()
    ipc.close()


def test_worker_side_options(ctx: zmq.Context) -> None:
    pub = make_socket(ctx, zmq.PUB)
    configure_publisher(pub, "ipc:///tmp/x.sock", hwm=3, bind=False)
    assert pub.getsockopt(zmq.SNDHWM) == 3 and pub.getsockopt(zmq.TCP_KEEPALIVE) == -1
    bound = make_socket(ctx, zmq.PUB)
    configure_publisher(bound, "tcp://127.0.0.1:*", hwm=3, bind=True)
    assert bound.getsockopt(zmq.TCP_KEEPALIVE) == 1  # a standalone publisher faces subscribers
    xsub = make_socket(ctx, zmq.XSUB)
    configure_internal_xsub(xsub, "ipc:///tmp/x.sock", hwm=5)
    assert xsub.getsockopt(zmq.RCVHWM) == 5
    for sock in (pub, bound, xsub):
        sock.close()


def test_attach_resolves_wildcards_and_names_the_endpoint(ctx: zmq.Context) -> None:
    sock = make_socket(ctx, zmq.PUB)
    bound = attach(sock, "tcp://127.0.0.1:*", bind=True)
    assert bound.startswith("tcp://127.0.0.1:") and bound.rpartition(":")[2].isdigit()
    other = make_socket(ctx, zmq.PUB)
    with pytest.raises(StreamdetError, match=f"cannot bind '{bound}': .*in use"):
        attach(other, bound, bind=True)
    with pytest.raises(StreamdetError, match="port 70000 out of range"):
        attach(other, "tcp://127.0.0.1:70000", bind=False)
    with pytest.raises(StreamdetError, match="cannot connect to 'bogus://x'"):
        attach(other, "bogus://x", bind=False)
    assert attach(other, bound, bind=False) == bound
    sock.close()
    other.close()


def test_key_sets_never_show_secrets() -> None:
    keys = server_keys()
    text = repr(keys) + str(keys)
    assert keys.secret_key.decode() not in text and "<hidden>" in text and keys.public_key.decode() in text
    public, secret = zmq.curve_keypair()
    client = CurveClientKeys(keys.public_key, public, secret)
    assert secret.decode() not in repr(client) + str(client)
