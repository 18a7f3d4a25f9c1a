"""Stages 2-6 in one process per device: gather frames, preprocess, infer, postprocess, publish.

One module per concern (this ``__init__`` imports nothing, so the supervisor can import the
contract without numpy):

    contract.py  the worker <-> supervisor contract: WorkerSpec, WorkerControl, phases, exit
                 codes, the start-up beat (no numpy, no torch: the supervisor imports it)
    gather.py    which frame of which camera goes into the next batch (BatchGatherer)
    feed.py      where gathering meets preprocessing: the host feed and the device feed
    loop.py      WorkerLoop: the per-batch steps (gather, prepare, infer, postprocess, publish)
    runner.py    PipelinedRunner: those steps overlapped in threads
    stats.py     per-camera and per-stage counters, the stats message's entries
    process.py   the process entry point: load, warm up, serve (worker_main)
"""
