"""Stage 1, the decoder processes: cameras and files decoded into the per-camera frame rings.

    contract.py    the decoder process's contract with the supervisor (DecoderSpec, exit codes;
                   no PyAV: the supervisor imports it)
    source.py      one camera or file as the decoder reads it (its configuration sections)
    process.py     the process entry point: one reader thread per camera (decoder_main)
    reader.py      CameraReader: start gate, open, read, reconnect with backoff, write the ring
    frame_pass.py  one pass over an open input with the read and stall timeouts
    frames.py      decoded PyAV frames as ring pixels (planes, colour tags)
    pacing.py      real-time pacing and max_fps for files
    faults.py      which failures are permanent (state ``failed``) and which are retried
    nvdec.py       NVDEC through PyAV's CUDA hwaccel, with the fall-back to the CPU
"""
