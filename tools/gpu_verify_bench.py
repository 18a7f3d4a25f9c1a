"""Stages ``bandwidth``, ``inference`` and ``nms`` of tools/gpu_verify.py (torch on the GPU).

Every time is the median of CUDA-event intervals after a warm-up, on random data (never zeros);
each stage reports what it measured so far (``ctx.partial``) as it goes, so a stage cut off at
its time limit still returns its first rows.
"""

from __future__ import annotations

import functools
import time
from multiprocessing import shared_memory
from typing import Any

import numpy as np
from gpu_verify_common import StageContext, cuda_times_ms, not_in_dry_run, require_cuda, summary_ms

DEV = "cuda:0"  # the device measured (a constant, so a harness check can point it elsewhere)
FRAME_1080P_NV12 = 1920 * 1080 * 3 // 2
INPUT_HW = (384, 640)  # a 16:9 frame letterboxed to 640
MODEL_HW = (640, 640)  # the inference sweep's input (the "640")


def _gbps(nbytes: int, ms: float | None) -> float | None:
    return round(nbytes / (ms / 1e3) / 1e9, 2) if ms else None


# -- bandwidth -------------------------------------------------------------------------------------


def _register(ptr: int, nbytes: int) -> tuple[Any, str]:
    """Page-lock ``nbytes`` at ``ptr`` (cudaHostRegister): (unregister callable, which API did it)."""
    try:
        import cupy

        cupy.cuda.runtime.hostRegister(ptr, nbytes, 0)
        return (lambda: cupy.cuda.runtime.hostUnregister(ptr)), "cupy.cuda.runtime.hostRegister"
    except ImportError:
        pass
    import torch

    rt = torch.cuda.cudart()
    err = rt.cudaHostRegister(ptr, nbytes, 0)
    if int(err) != 0:
        raise RuntimeError(f"cudaHostRegister failed: {err}")
    return (lambda: rt.cudaHostUnregister(ptr)), "torch.cuda.cudart().cudaHostRegister"


def _copy_rates(torch: Any, host: Any, dev: Any, until: float) -> dict[str, Any]:
    """H2D of 32 separate 1080p NV12 frames (a batch's slots) and of one 64 MiB chunk from ``host``."""
    rows: dict[str, Any] = {}
    frames = host[: 32 * FRAME_1080P_NV12].view(32, FRAME_1080P_NV12)
    dst = dev[: 32 * FRAME_1080P_NV12].view(32, FRAME_1080P_NV12)

    def batch() -> None:
        for i in range(32):
            dst[i].copy_(frames[i], non_blocking=True)

    t = summary_ms(cuda_times_ms(torch, batch, warmup=2, iters=20, until=until))
    rows["32_frames_3.1MB"] = {**t, "GB_s": _gbps(32 * FRAME_1080P_NV12, t["median_ms"])}
    chunk = 64 << 20
    t = summary_ms(cuda_times_ms(torch, lambda: dev[:chunk].copy_(host[:chunk], non_blocking=True), warmup=2,
                                 iters=20, until=until))
    rows["chunk_64MiB"] = {**t, "GB_s": _gbps(chunk, t["median_ms"])}
    return rows


def bandwidth_stage(ctx: StageContext) -> dict[str, Any]:
    torch = require_cuda()
    not_in_dry_run(ctx)
    size = 1 << 30  # a 1 GiB shared-memory segment, as ~100 cameras' rings would be
    dev = torch.empty(size // 8, dtype=torch.uint8, device=DEV)
    n = 128 << 20
    result: dict[str, Any] = {}
    until = time.monotonic() + ctx.left() / 4
    pageable = torch.from_numpy(np.random.default_rng(0).integers(0, 256, n, dtype=np.uint8))
    result["pageable"] = _copy_rates(torch, pageable, dev, until)
    ctx.partial(**result)
    shm = shared_memory.SharedMemory(create=True, size=size)
    try:
        arr = np.ndarray((size,), np.uint8, buffer=shm.buf)
        arr[:n] = pageable.numpy()
        t0 = time.perf_counter()
        unregister, api = _register(arr.ctypes.data, size)
        register_s = time.perf_counter() - t0
        host = torch.from_numpy(arr)
        result["registered_shm"] = {"register_s_per_GiB": round(register_s, 3), "api": api,
                                    "torch_is_pinned": bool(host.is_pinned()),
                                    **_copy_rates(torch, host, dev, time.monotonic() + ctx.left() / 3)}
        ctx.partial(**result)
        t0 = time.perf_counter()
        unregister()
        result["registered_shm"]["unregister_s"] = round(time.perf_counter() - t0, 3)
        del host, arr
    finally:
        shm.close()
        shm.unlink()
    pinned = torch.empty(n, dtype=torch.uint8, pin_memory=True)
    pinned.copy_(pageable)
    result["pinned"] = _copy_rates(torch, pinned, dev, time.monotonic() + ctx.left() - 2)
    g = {k: v["32_frames_3.1MB"]["GB_s"] for k, v in result.items()}
    result["headline"] = "32 x 3.1 MB H2D GB/s: " + ", ".join(f"{k} {v}" for k, v in g.items())
    return result


# -- inference -------------------------------------------------------------------------------------


def _variant_fn(torch: Any, model: Any, x: Any, graph: bool) -> Any:
    if not graph:
        return lambda: model(x)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            model(x)
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        model(x)
    return g.replay


INFERENCE_VARIANTS = (  # name, FP16, channels_last, CUDA graph, batches; the numbers first
    ("fp16", True, False, False, (32, 64)),
    ("fp16_graph", True, False, True, (32, 64)),
    ("fp16_channels_last", True, True, False, (32, 64)),
    ("fp16_channels_last_graph", True, True, True, (1, 8, 32, 64)),
    ("fp32", False, False, False, (32,)),
)
GOAL_IMG_PER_S, STRETCH_IMG_PER_S = 3000, 8000


def _img_per_s(b: int, t: dict[str, Any]) -> int | None:
    return round(b / (t["median_ms"] / 1e3)) if t["n"] else None


def inference_stage(ctx: StageContext) -> dict[str, Any]:
    torch = require_cuda()
    from streamdet.model.yolov5 import ARCHITECTURES, YOLOv5

    not_in_dry_run(ctx)
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    base = YOLOv5(ARCHITECTURES["yolov5s"]).fuse().eval().to(DEV)
    rows: dict[str, dict[str, Any]] = {}
    configs = sum(len(v[4]) for v in INFERENCE_VARIANTS) + 6  # + the daemon's backend below
    done = 0
    with torch.no_grad():
        for name, half, channels_last, graph, batches in INFERENCE_VARIANTS:
            dtype = torch.float16 if half else torch.float32
            model = base.to(dtype=dtype)
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            model = model.to(memory_format=fmt)  # type: ignore[call-overload]  # documented, not in the stubs
            rows[name] = {}
            for b in batches:
                cap = max(1.0, (ctx.left() - 8) / max(1, configs - done))
                x = torch.rand((b, 3, *MODEL_HW), device=DEV, dtype=dtype).contiguous(memory_format=fmt)
                t0 = time.monotonic()
                try:
                    fn = _variant_fn(torch, model, x, graph)
                    t = summary_ms(cuda_times_ms(torch, fn, warmup=5, iters=50, until=t0 + cap))
                    rows[name][f"b{b}"] = {**t, "img_per_s": _img_per_s(b, t)}
                except Exception as exc:  # one variant failing (e.g. graph capture) must not hide the others
                    rows[name][f"b{b}"] = {"error": f"{type(exc).__name__}: {exc}"}
                done += 1
                ctx.partial(sweep=rows)
    del base, model
    torch.cuda.empty_cache()
    result: dict[str, Any] = {"sweep": rows, "input": list(MODEL_HW), "model": "yolov5s (random weights, fused)",
                              "goal_img_per_s": GOAL_IMG_PER_S, "stretch_img_per_s": STRETCH_IMG_PER_S}
    try:
        result["daemon_backend"] = _daemon_backend(torch, ctx)
    except Exception as exc:  # the sweep above stands on its own
        result["daemon_backend"] = {"error": f"{type(exc).__name__}: {exc}"}

    def ips(variant: str, b: int) -> Any:
        return rows.get(variant, {}).get(f"b{b}", {}).get("img_per_s")

    d = result["daemon_backend"]
    result["headline"] = (
        f"FP16 img/s b32/b64: eager {ips('fp16', 32)}/{ips('fp16', 64)}, graphs {ips('fp16_graph', 32)}/"
        f"{ips('fp16_graph', 64)}, channels_last+graphs {ips('fp16_channels_last_graph', 32)}/"
        f"{ips('fp16_channels_last_graph', 64)} (goal {GOAL_IMG_PER_S}, stretch {STRETCH_IMG_PER_S}); daemon "
        f"backend {d.get('input')}: eager {d.get('eager_b32', {}).get('img_per_s')}/"
        f"{d.get('eager_b64', {}).get('img_per_s')}, runner ({d.get('graph_mode')}) "
        f"{d.get('runner_b32', {}).get('img_per_s')}/{d.get('runner_b64', {}).get('img_per_s')}; fp32 b32 "
        f"{ips('fp32', 32)}")
    return result


def _daemon_backend(torch: Any, ctx: StageContext) -> dict[str, Any]:
    """The daemon's own inference: TorchBackend FP16 on device FP16 batches (the device feed's
    384x640 letterboxed input), eagerly and through its GraphRunner (sizes 32 and 64), then on a
    pageable uint8 host batch (the host feed: H2D and /255 included, wall time)."""
    if ctx.left() < 10:
        return {"skipped": "out of time"}
    from streamdet.model.checkpoint import save_checkpoint
    from streamdet.model.yolov5 import ARCHITECTURES, YOLOv5
    from streamdet.pipeline.backends.cuda_graphs import for_backend
    from streamdet.pipeline.backends.torch_backend import TorchBackend

    weights = ctx.work / "yolov5s_random.pt"
    if not weights.exists():
        save_checkpoint(YOLOv5(ARCHITECTURES["yolov5s"]), weights)
    backend = TorchBackend(weights, device=DEV, half=True)
    out: dict[str, Any] = {"input": list(INPUT_HW)}
    xs = {b: torch.rand((b, 3, *INPUT_HW), device=DEV, dtype=torch.float16) for b in (32, 64)}
    for b, x in xs.items():
        t = summary_ms(cuda_times_ms(torch, functools.partial(backend.infer, x), warmup=5, iters=40,
                                     until=time.monotonic() + max(1.0, (ctx.left() - 8) / 6)))
        out[f"eager_b{b}"] = {**t, "img_per_s": _img_per_s(b, t)}
        ctx.partial(daemon_backend=out)
    t0 = time.perf_counter()
    runner = for_backend(backend, INPUT_HW, 64, sizes=(32, 64))
    out["graph_mode"] = runner.warmup()
    out["graph_warmup_s"] = round(time.perf_counter() - t0, 2)
    for b, x in xs.items():
        t = summary_ms(cuda_times_ms(torch, functools.partial(runner, x), warmup=3, iters=40,
                                     until=time.monotonic() + max(1.0, (ctx.left() - 8) / 4)))
        out[f"runner_b{b}"] = {**t, "img_per_s": _img_per_s(b, t)}
        ctx.partial(daemon_backend=out)
    batch = np.random.default_rng(0).integers(0, 256, (32, 3, *INPUT_HW), dtype=np.uint8)
    times = []
    until = time.monotonic() + max(1.0, min(10.0, ctx.left() - 3))
    for i in range(25):
        torch.cuda.synchronize()
        t1 = time.perf_counter()
        backend.infer(batch)
        torch.cuda.synchronize()
        if i >= 5:
            times.append((time.perf_counter() - t1) * 1e3)
        if time.monotonic() > until:
            break
    backend.close()
    t = summary_ms(times)
    out["host_uint8_b32"] = {**t, "img_per_s": _img_per_s(32, t), "note": "wall time incl. pageable H2D and /255"}
    return out


# -- NMS -------------------------------------------------------------------------------------------


def _predictions(torch: Any, b: int, n: int = 25200, nc: int = 80, candidates: int = 400) -> Any:
    """(b, n, 5 + nc) on the GPU: mostly background, ``candidates`` confident rows per image."""
    g = torch.Generator(device=DEV).manual_seed(0)
    pred = torch.rand((b, n, 5 + nc), generator=g, device=DEV) * 0.05
    pred[..., 0:2] = torch.rand((b, n, 2), generator=g, device=DEV) * 640
    pred[..., 2:4] = 10 + torch.rand((b, n, 2), generator=g, device=DEV) * 190
    rows = torch.randint(0, n, (b, candidates), generator=g, device=DEV)
    obj = 0.3 + 0.7 * torch.rand((b, candidates), generator=g, device=DEV)
    pred[torch.arange(b, device=DEV)[:, None], rows, 4] = obj
    cls = torch.randint(0, nc, (b, candidates), generator=g, device=DEV)
    pred[torch.arange(b, device=DEV)[:, None], rows, 5 + cls] = 0.9
    return pred


def nms_stage(ctx: StageContext) -> dict[str, Any]:
    torch = require_cuda()
    from streamdet.pipeline.postprocess.postprocessor import nms

    not_in_dry_run(ctx)
    pred = _predictions(torch, 32)
    t = summary_ms(cuda_times_ms(torch, lambda: nms(pred, 0.25, 0.45), warmup=3, iters=30,
                                 until=time.monotonic() + max(1.0, ctx.left() / 2)))
    gpu = nms(pred, 0.25, 0.45)
    cpu = nms(pred.cpu(), 0.25, 0.45)
    same_counts = [int(a.shape[0]) == int(b.shape[0]) for a, b in zip(gpu, cpu, strict=True)]
    close = all(s and torch.allclose(a.cpu(), b, atol=1e-3) for s, a, b in zip(same_counts, gpu, cpu, strict=True))
    try:
        import torchvision

        tv = torchvision.__version__
    except ImportError:
        tv = None
    kept = sum(int(d.shape[0]) for d in gpu)
    result = {"b32": t, "kept_boxes": kept, "d2h_bytes": kept * 6 * 4, "parity_with_cpu": close,
              "count_mismatches": same_counts.count(False), "torchvision": tv}
    result["headline"] = f"b32 {t['median_ms']} ms, {kept} boxes kept, GPU == CPU: {close}"
    return result
