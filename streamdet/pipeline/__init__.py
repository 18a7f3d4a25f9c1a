"""The daemon's data flow, one module per stage, in this order.

    decode.py      1  decoder process: PyAV open/read/reconnect, pacing -> ring slot
    ring.py        2  per-camera shared-memory ring of frames (latest wins)
    preprocess.py  3  worker: letterbox, BGR->RGB, CHW, normalise (numpy/cv2; CuPy on GPU)
    worker.py      4  worker process per device: batch newest frames, infer
    postprocess.py 5  worker: NMS, scale boxes back to source pixels, Detections
    publish.py     6  worker: ZeroMQ PUB of wire messages (see streamdet.wire)
"""
