"""Light client for streamdet's published detections (pyzmq + json; never numpy or torch).

    from streamdet.client import Subscriber
    with Subscriber("tcp://127.0.0.1:5555", cameras=["cam1"]) as sub:
        for msg in sub:
            print(msg["camera"], msg["seq"], msg["detections"])

A daemon configured with ``publish.curve`` admits only CurveZMQ clients whose public key it lists:

    Subscriber(endpoint, server_key="keys/server.key", client_key="keys/alice.key_secret")

(``streamdet keygen DIR NAME`` creates such key pairs.) The message contract is in docs/wire.md
and ``streamdet.wire``.
"""

from streamdet.client.subscriber import Subscriber, subscribe_main
from streamdet.keys import KeyFileError

__all__ = ["KeyFileError", "Subscriber", "subscribe_main"]
