"""Light client for streamdet's published detections (pyzmq + json; never numpy or torch).

    from streamdet.client import Subscriber
    with Subscriber("tcp://127.0.0.1:5555", cameras=["cam1"]) as sub:
        for msg in sub:
            print(msg["camera"], msg["seq"], msg["detections"])

The message contract is in docs/wire.md and ``streamdet.wire``.
"""

from streamdet.client.subscriber import Subscriber, subscribe_main

__all__ = ["Subscriber", "subscribe_main"]
