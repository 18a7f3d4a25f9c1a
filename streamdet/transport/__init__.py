"""ZeroMQ on the daemon's side: socket options, keys, and the supervisor's public endpoint.

    sockets.py     every socket option and the context each process uses (from the light client)
    keys.py        CurveZMQ key pairs and certificates, the admitted client keys
    proxy.py       PublishProxy: the supervisor's XSUB/XPUB forwarder of the workers' messages
    handshakes.py  ZAP: admit only authorized keys, count and log refused handshakes
    capture.py     the proxy's capture socket: stats messages for the supervisor's metrics

The worker's side (its PUB socket) is :mod:`streamdet.pipeline.worker.publish`.
"""
