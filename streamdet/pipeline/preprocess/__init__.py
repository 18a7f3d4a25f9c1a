"""Stage 3, in the worker: decoded frames to the model's uint8 (or device) input batch.

    letterbox.py       the Preprocessor seam, official letterbox geometry, CpuPreprocessor (OpenCV)
                       and the integer reference a GPU kernel must equal
    colour.py          YUV 4:2:0 -> RGB with OpenCV's Q20 arithmetic
    cuda.py            CudaPreprocessor: the fused kernel through CuPy on a torch stream
    cuda_kernel.py     the kernel's CUDA C++ source
    kernel_plan.py     one launch's host-side plan: frame descriptors, axis tables, grid
    kernel_reference.py  the kernel's numpy twin, run in CI
"""
