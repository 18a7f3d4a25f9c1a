"""Light client for streamdet's published detections: the ``streamdet_client`` package, re-exported.

    from streamdet.client import Subscriber      # or: from streamdet_client import Subscriber
    with Subscriber("tcp://127.0.0.1:5555", cameras=["cam1"]) as sub:
        for msg in sub:
            print(msg["camera"], msg["seq"], msg["detections"])

A program that only subscribes installs ``pip install ./client`` (the ``streamdet-client``
distribution: pyzmq only, no torch, OpenCV, PyAV or numpy) and imports ``streamdet_client``; this
module keeps ``streamdet.client`` working for programs written against the full package.
"""

from streamdet_client import KeyFileError, Subscriber, subscribe_main

__all__ = ["KeyFileError", "Subscriber", "subscribe_main"]
