"""Stage 5, in the worker: NMS and boxes back in source pixels.

    postprocessor.py  Postprocessor: per-image NMS (official semantics), rescale
    batch_nms.py      whole-batch NMS in one pass (the GPU path: one device-to-host copy)
    nms_primitives.py what both NMS paths share: the overlap test, the greedy kernel, checks
"""
