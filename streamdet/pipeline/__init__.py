"""The daemon's data flow, one subpackage per stage, in this order.

    decode/       1  decoder processes: one reader thread per camera, start gate, backoff, NVDEC;
                     copies the decoded YUV 4:2:0 planes into the ring (no colour conversion on
                     decoding cores)
    ring/         2  per-camera shared-memory ring of frames: latest wins (live, paced), or
                     lossless in order (files with realtime: false); the seqlock read protocol;
                     page-locked rings for the GPU
    preprocess/   3  worker: YUV/BGR -> letterboxed RGB batch (CpuPreprocessor, or the fused
                     CUDA kernel of CudaPreprocessor)
    backends/     4  worker: the model (torch, onnxruntime, openvino), chosen by name
    postprocess/  5  worker: NMS (per image, or whole-batch), boxes back to source pixels
    worker/     2-6  the worker process: gather, prepare (host or device feed), infer,
                     postprocess, track, publish (its PUB socket)

Beside them: types.py (Image, Frame, Transform: what travels between stages), stages.py (3-5
composed: the one inference path, also behind ``streamdet.Detector``), registry.py (lazy
registries of implementations), tracking/ (the per-camera tracker), cuda/ (the CUDA layer the
device feed runs on, and its CPU emulation). The supervisor-side ZeroMQ (proxy, handshakes,
capture, keys, socket options) is :mod:`streamdet.transport`.

This ``__init__`` and those of decode/, ring/, preprocess/, postprocess/, cuda/ and worker/ import
nothing, so importing one module never loads another stage's libraries; backends/``__init__`` is
the backend seam and its lazy registry (it imports no inference library), tracking/``__init__``
names the tracker.
"""
