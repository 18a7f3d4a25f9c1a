"""The CUDA layer the worker's device feed runs on, and its emulation for CI.

    runtime.py           CudaRuntime (streams, events, copies, the kernel launch) and TorchCudaRuntime
    emulation.py         EmulatedCuda: the same calls on the CPU, streams as threads with delays
    emulation_memory.py  the emulation's device memory: an address map of host buffers
"""
