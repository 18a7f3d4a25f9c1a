"""The daemon's data flow, one module per stage, in this order.

    decode.py      1  decoder process: one reader thread per camera, start gate, backoff;
                      copies the decoded YUV 4:2:0 planes into the ring (no colour conversion
                      on decoding cores). source.py: a camera as the decoder reads it;
                      frame_pass.py: one read pass with the read and stall timeouts;
                      source_faults.py: which failures are permanent (state ``failed``);
                      frames.py, pacing.py: frame formats, real-time pacing and max_fps
    ring.py        2  per-camera shared-memory ring of frames: latest wins (live, paced), or
                      lossless in order (files with realtime: false); ring_layout.py: its layout
    preprocess.py  3  worker: YUV/BGR -> letterboxed RGB uint8 batch (CpuPreprocessor);
                      colour.py holds the YUV->RGB arithmetic, transform.py the frame geometry
    backends/      4  worker: the model (torch, onnxruntime, openvino), chosen by name
    postprocess.py 5  worker: NMS, Transform inverse to source pixels, wire records
    publish.py     6  worker: ZeroMQ PUB of wire messages (see streamdet.wire); the supervisor's
                      XSUB/XPUB proxy, with handshakes.py (CurveZMQ: ZAP, refused handshakes)
                      and capture.py (the stats messages for the supervisor's metrics)

stages.py puts 3-5 together (the one inference path, also behind ``streamdet.Detector``);
worker/ runs them per batch (contract.py: phases loading, warming_up, serving, exit codes, live
settings through ``WorkerControl``; loop.py the steps; runner.py overlaps them in threads);
registry.py picks implementations by name;
image.py is the picture type passed between stages.

GPU path (none of it has run on a GPU yet, see docs/gpu-verification.md): the worker's device
feed (worker/device_feed.py, chosen by ``model.preprocess`` in worker/feed_choice.py) drives these
through cuda_runtime.py, the CUDA layer; cuda_emulation.py runs that layer on the CPU for CI:

    hwdecode.py          1  NVDEC through PyAV's CUDA hwaccel, falling back to the CPU for good
    ring_slots.py        2  seqlock slot reader: pick a slot, copy it elsewhere, validate after
    pinned.py            2  page-locked rings: DMA of the chosen slots to device arenas, torn count
    cuda_preprocess.py   3  CudaPreprocessor ("cuda"): the fused kernel via CuPy, on a torch stream
    cuda_kernel.py       3  the kernel's CUDA C++ source (YUV/BGR -> letterboxed RGB CHW)
    kernel_plan.py       3  one launch's host-side plan: frame descriptors, axis tables, grid
    kernel_reference.py  3  numpy emulation of the kernel, which CI checks against the CPU path
    backends/cuda_graphs.py 4  one CUDA graph per batch size for the torch backend, eager fallback
    batch_nms.py         5  whole-batch NMS in one pass and one device-to-host copy (CUDA predictions)
    cuda_runtime.py      -  CudaRuntime: streams, events, copies, the kernel launch (TorchCudaRuntime)
    cuda_emulation.py    -  EmulatedCuda: the same calls on the CPU, streams as threads with delays
"""
