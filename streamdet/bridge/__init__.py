"""The MQTT bridge as the daemon runs it: a supervised child process, its Curve key, its metrics.

The bridge itself (topics, queue, broker link) is the light client's
:mod:`streamdet_client.mqtt`, so that it also runs on its own (``streamdet bridge mqtt``,
``streamdet-bridge``) without torch. This package adds what the supervisor needs:
:mod:`streamdet.bridge.child` (the child's entry and arguments) and
:mod:`streamdet.bridge.metrics` (its counters on the metrics endpoint).
"""
