"""The daemon's data flow, one module per stage, in this order.

    decode.py      1  decoder process: PyAV open/read/reconnect, pacing; copies the decoded
                      YUV 4:2:0 planes into the ring (no colour conversion on decoding cores)
    ring.py        2  per-camera shared-memory ring of frames: latest wins (live, paced), or
                      lossless in order (files with realtime: false)
    preprocess.py  3  worker: YUV/BGR -> letterboxed RGB uint8 batch (CpuPreprocessor);
                      colour.py holds the YUV->RGB arithmetic, transform.py the frame geometry
    backends/      4  worker: the model (torch, onnxruntime, openvino), chosen by name
    postprocess.py 5  worker: NMS, Transform inverse to source pixels, wire records
    publish.py     6  worker: ZeroMQ PUB of wire messages (see streamdet.wire)

stages.py puts 3-5 together (the one inference path, also behind ``streamdet.Detector``);
worker.py runs them per batch, pipelined in three threads; registry.py picks implementations
by name; image.py is the picture type passed between stages.
"""
