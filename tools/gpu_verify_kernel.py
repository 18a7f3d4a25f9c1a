"""Stage ``kernel`` of tools/gpu_verify.py: the CUDA preprocessing kernel, exact first, then fast.

Exactness on real decoded frames: the first frames of the 1080p30 H.264 clip (the one the media
stages use), decoded by FFmpeg on the CPU (yuv420p) and, where NVDEC opens, by NVDEC (NV12), as
streamdet's decoder packs them (``frame_to_image``), with their own colour tags and re-tagged to
each of BT.601/BT.709 x limited/full. For each set, ``CudaPreprocessor`` against the CPU path
on the same frames: its uint8 output against ``CpuPreprocessor`` byte for byte, its FP16 and
FP32 outputs against the host feed's model input (``to_model_input`` of the CPU bytes on the
GPU) bit for bit.

Rate: launches on 1080p NV12 frames already on the device (batches 1/8/32/64 -> 384x640 FP16;
the goal is 20,000 frames/s), and one batch of 32 pageable host frames (staging copy + H2D +
kernel).
"""

from __future__ import annotations

import functools
import time
from typing import Any

import numpy as np
from gpu_verify_common import Skip, StageContext, cuda_times_ms, not_in_dry_run, require_cuda, require_cupy, summary_ms
from gpu_verify_media import GPU, ensure_clip

DEV = "cuda:0"
FRAME_1080P_NV12 = 1920 * 1080 * 3 // 2
BATCHES = (1, 8, 32, 64)
INPUT_HW = (384, 640)  # a 16:9 frame letterboxed to 640
TAGS = (("bt601", "limited"), ("bt601", "full"), ("bt709", "limited"), ("bt709", "full"))
GOAL_FRAMES_PER_S = 20_000


def decoded_images(clip: Any, n: int, nvdec: bool) -> list[Any]:
    """The first ``n`` frames of ``clip`` as streamdet's decoder writes them into a ring."""
    import av

    from streamdet.pipeline.decode.frames import frame_to_image
    from streamdet.pipeline.decode.nvdec import nvdec_hwaccel

    kwargs: dict[str, Any] = {"hwaccel": nvdec_hwaccel("0")} if nvdec else {}
    images = []
    with av.open(str(clip), **kwargs) as container:
        for frame in container.decode(video=0):
            images.append(frame_to_image(frame)[0])
            if len(images) == n:
                break
    return images


def mismatches(torch: Any, a: Any, b: Any) -> int:
    """Elements whose bits differ (floats compared as their integer bit patterns)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        raise ValueError(f"shapes/dtypes differ: {tuple(a.shape)} {a.dtype} vs {tuple(b.shape)} {b.dtype}")
    as_int = {torch.float16: torch.int16, torch.float32: torch.int32}
    if a.dtype in as_int:
        a, b = a.view(as_int[a.dtype]), b.view(as_int[b.dtype])
    return int((a != b).sum().item())


def exactness(torch: Any, pre: Any, images: list[Any]) -> dict[str, Any]:
    """``pre`` (a CudaPreprocessor) against the CPU path on ``images``: uint8, FP16, FP32 mismatches."""
    from streamdet.pipeline.backends.model_input import to_model_input
    from streamdet.pipeline.preprocess.letterbox import CpuPreprocessor

    cpu_u8 = CpuPreprocessor()(images, INPUT_HW)
    gpu_u8 = pre(images, INPUT_HW, np.empty((len(images), 3, *INPUT_HW), np.uint8))
    row: dict[str, Any] = {"uint8_mismatches": int(np.count_nonzero(gpu_u8 != cpu_u8))}
    for name, half in (("fp16", True), ("fp32", False)):
        ref = to_model_input(cpu_u8, DEV, half=half)  # the host feed's model input
        got = pre(images, INPUT_HW, dtype="float16" if half else "float32")
        row[f"{name}_mismatches"] = mismatches(torch, got, ref)  # .item() waits for the kernel
    row["identical"] = not any(row.values())
    return row


def _exactness_on_clip(torch: Any, pre: Any, ctx: StageContext) -> dict[str, Any]:
    from streamdet.pipeline.decode.nvdec import nvdec_problem
    from streamdet.pipeline.types import Image

    t0 = time.perf_counter()
    clip = ensure_clip(ctx.work, GPU)
    out: dict[str, Any] = {"clip": clip.name, "clip_s": round(time.perf_counter() - t0, 1)}
    problem = nvdec_problem("0")
    sources = {"cpu_decoded": False, **({"nvdec_decoded": True} if problem is None else {})}
    if problem is not None:
        out["nvdec_decoded"] = {"skipped": f"NVDEC unavailable: {problem}"}
    for name, nvdec in sources.items():
        images = decoded_images(clip, 8, nvdec)
        rows: dict[str, Any] = {"frames": len(images), "pix_fmt": images[0].pix_fmt,
                                "as_decoded": {"tags": [images[0].color_matrix, images[0].color_range],
                                               **exactness(torch, pre, images)}}
        for matrix, rng in TAGS:
            retagged = [Image(im.data, im.pix_fmt, matrix, rng) for im in images]
            rows[f"{matrix}_{rng}"] = exactness(torch, pre, retagged)
        out[name] = rows
        ctx.partial(exactness=out)
    sets = [row for src in sources for key, row in out[src].items() if isinstance(row, dict)]
    out["all_identical"] = bool(sets) and all(row["identical"] for row in sets)
    return out


def kernel_stage(ctx: StageContext) -> dict[str, Any]:
    torch = require_cuda()
    require_cupy()
    try:
        from streamdet.pipeline.preprocess.cuda import CudaPreprocessor
        from streamdet.pipeline.preprocess.kernel_plan import DeviceFrame
        from streamdet.pipeline.types import Image
    except ImportError as exc:
        raise Skip(f"the CUDA preprocessor is not in this tree ({exc})") from None
    not_in_dry_run(ctx)
    result: dict[str, Any] = {}
    t0 = time.perf_counter()
    pre = CudaPreprocessor(DEV, dtype="float16")
    pre.compile()
    result["compile_s"] = round(time.perf_counter() - t0, 3)
    try:
        result["exactness"] = _exactness_on_clip(torch, pre, ctx)
    except Exception as exc:  # the rate below stands on its own
        result["exactness"] = {"error": f"{type(exc).__name__}: {exc}"}
    ctx.partial(**result)
    frames_dev = torch.randint(0, 256, (max(BATCHES), FRAME_1080P_NV12), dtype=torch.uint8, device=DEV)
    frames = [DeviceFrame(frames_dev[i].data_ptr(), "nv12", 1920, 1080) for i in range(max(BATCHES))]
    out = torch.empty((max(BATCHES), 3, *INPUT_HW), dtype=torch.float16, device=DEV)
    rows = {}
    for i, b in enumerate(BATCHES):
        until = time.monotonic() + max(1.0, (ctx.left() - 5) / (len(BATCHES) + 1 - i))
        launch = functools.partial(pre.launch, frames[:b], INPUT_HW, out)
        t = summary_ms(cuda_times_ms(torch, launch, warmup=3, iters=50, until=until))
        rows[f"b{b}"] = {**t, "frames_per_s": round(b / (t["median_ms"] / 1e3)) if t["n"] else None,
                         "read_GB_s": round(b * FRAME_1080P_NV12 / (t["median_ms"] / 1e3) / 1e9, 2) if t["n"] else None}
        ctx.partial(**result, device_frames=rows)
    result["device_frames"] = rows
    rng = np.random.default_rng(0)
    host_images = [Image(rng.integers(0, 256, (1080 * 3 // 2, 1920), dtype=np.uint8), "nv12") for _ in range(32)]
    t = summary_ms(cuda_times_ms(torch, lambda: pre(host_images, INPUT_HW, out), warmup=2, iters=10,
                                 until=time.monotonic() + max(1.0, ctx.left() - 3)))
    result["host_images_b32"] = {**t, "note": "pageable host frames: CPU copy to staging + H2D + kernel"}
    best = max((r["frames_per_s"] or 0 for r in rows.values()), default=0)
    result["goal_frames_per_s"] = GOAL_FRAMES_PER_S
    result["headline"] = (f"exact on real frames: {result['exactness'].get('all_identical')}; best "
                          f"{best} frames/s (goal {GOAL_FRAMES_PER_S}; b64 {rows.get('b64', {}).get('median_ms')} ms); "
                          f"compile {result['compile_s']} s")
    return result
