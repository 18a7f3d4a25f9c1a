"""Every ZeroMQ socket option streamdet sets, and the context each process uses.

Defined in the light client, :mod:`streamdet_client.transport`, and re-exported here: the daemon and every
subscriber share this one definition (``pip install ./client`` installs it alone, with pyzmq only).
"""

from streamdet_client.transport import (
    LINGER_MS,
    PUBLIC_MAX_SUBSCRIPTION_BYTES,
    RECONNECT_IVL_MAX_MS,
    RECONNECT_IVL_MS,
    SUBSCRIBER_MAX_MESSAGE_BYTES,
    TCP_KEEPALIVE_CNT,
    TCP_KEEPALIVE_IDLE_S,
    TCP_KEEPALIVE_INTVL_S,
    ZAP_DOMAIN,
    ContextHolder,
    CurveClientKeys,
    CurveServerKeys,
    attach,
    configure_capture,
    configure_capture_reader,
    configure_inproc,
    configure_internal_xsub,
    configure_public_xpub,
    configure_publisher,
    configure_subscriber,
    make_socket,
)

__all__ = ["ContextHolder", "CurveClientKeys", "CurveServerKeys", "LINGER_MS", "PUBLIC_MAX_SUBSCRIPTION_BYTES",
           "RECONNECT_IVL_MAX_MS", "RECONNECT_IVL_MS", "SUBSCRIBER_MAX_MESSAGE_BYTES", "TCP_KEEPALIVE_CNT",
           "TCP_KEEPALIVE_IDLE_S", "TCP_KEEPALIVE_INTVL_S", "ZAP_DOMAIN", "attach", "configure_capture",
           "configure_capture_reader", "configure_inproc", "configure_internal_xsub", "configure_public_xpub",
           "configure_publisher", "configure_subscriber", "make_socket"]
