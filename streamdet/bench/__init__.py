"""``streamdet bench``: the daemon measured side by side with a naive single-process detection loop.

Modules, by concern: ``workload`` (cached clips, generated daemon configs), ``naive`` (the baseline
loop), ``daemon`` (the daemon as a subprocess, watched by a subscriber), ``accounting`` (drops and
latency, shared by both systems), ``capacity`` (the search for the most cameras held), ``stages``
(per-stage costs from the daemon's stats), ``report`` (table, JSON, plot), ``options`` and
``runner`` (the command). Nothing is imported here, so ``import streamdet.bench`` stays light.
"""
