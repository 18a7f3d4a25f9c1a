"""streamdet-client: receive a streamdet daemon's detections without torch, OpenCV, PyAV or numpy.

    from streamdet_client import Subscriber
    with Subscriber("tcp://127.0.0.1:5555", cameras=["cam1"]) as sub:
        for msg in sub:
            print(msg["camera"], msg["seq"], msg["detections"])

A daemon configured with ``publish.curve`` admits only CurveZMQ clients whose public key it lists:

    Subscriber(endpoint, server_key="keys/server.key", client_key="keys/alice.key_secret")

The message contract is :mod:`streamdet_client.wire` (docs/wire.md). The MQTT bridge
(:mod:`streamdet_client.mqtt`, command ``streamdet-bridge``) needs the ``[mqtt]`` extra (paho-mqtt).
Depends on pyzmq only; the ``streamdet`` daemon re-exports all of it as ``streamdet.client``.
Names are imported on first use, so ``streamdet_client.errors`` or ``.wire`` alone never load pyzmq.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streamdet_client._version import __version__
from streamdet_client.errors import KeyFileError, StreamdetError, WireError

if TYPE_CHECKING:
    from streamdet_client.subscriber import Subscriber, subscribe_main
    from streamdet_client.wire import decode

__all__ = ["KeyFileError", "StreamdetError", "Subscriber", "WireError", "__version__", "decode", "subscribe_main"]

_LAZY = {"Subscriber": "streamdet_client.subscriber", "subscribe_main": "streamdet_client.subscriber",
         "decode": "streamdet_client.wire"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'streamdet_client' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
