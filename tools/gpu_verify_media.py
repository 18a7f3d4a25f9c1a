"""Stage ``nvdec`` of tools/gpu_verify.py, and the media profile and clip the ``e2e`` and ``kernel`` stages share.

``nvdec``: streamdet's own decoder (CameraReader, ``decode: nvdec``) on a 1080p30 H.264 clip
(made here with the av wheel's libx264), NVDEC frames against CPU frames (pixels and colour
tags), then the aggregate decode rate of 1, 16, 64 concurrent NVDEC sessions (threads in 8
processes) against CPU decoding, and one session keeping frames on the GPU (no download).

``--cpu-smoke`` (a developer's check of this harness on a machine without a GPU) runs it on a
small clip with the CPU profile: CPU decoding only.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from gpu_verify_common import Skip, StageContext, not_in_dry_run
from gpu_verify_search import Ladder

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Profile:
    """What the media stages run: the GPU profile, or the CPU smoke check of the harness."""

    width: int = 1920
    height: int = 1080
    fps: int = 30
    seconds: int = 10
    sessions: tuple[int, ...] = (1, 16, 64)
    device: str = "cuda:0"
    weights: Path | None = None  # None: yolov5s with random weights, made here
    img_size: int = 640
    half: bool = True
    decode: str = "nvdec"  # the cameras' decoder in the e2e runs (the mixed run puts some on "cpu")
    fast_preprocess: str | None = "cuda"  # model.preprocess of the grow runs (None: key left out)
    compare_preprocess: str | None = "cpu"  # ... of the compare run
    compare: bool = True  # the compare run (same N, compare_preprocess)
    mixed: bool = True  # one run with extra CPU-decoded cameras when NVDEC-only fails
    ladder: Ladder = Ladder()
    max_batch: int = 64
    warmup_s: float = 75.0  # at most, waiting for every camera to publish
    settle_s: float = 3.0  # after that, before the window
    window_s: float = 16.0
    stats_interval_s: float = 4.0
    run_estimate_s: float = 60.0  # one daemon run (start, warm-up, window, stop) before one is timed


GPU = Profile()
CPU_SMOKE = Profile(width=320, height=240, fps=10, seconds=4, sessions=(1, 2), device="cpu",
                    weights=REPO / "configs" / "demo" / "shapes_yolov5n.pt", img_size=320, half=False,
                    decode="cpu", fast_preprocess=None, compare_preprocess=None, mixed=False,
                    ladder=Ladder(start=1, step=1, max_cameras=2, resolution=1), max_batch=8, warmup_s=60.0,
                    settle_s=1.0, window_s=6.0, stats_interval_s=2.0, run_estimate_s=20.0)


def profile_of(ctx: StageContext) -> Profile:
    return CPU_SMOKE if getattr(ctx, "cpu_smoke", False) else GPU


# -- the clip ------------------------------------------------------------------------------------------


def ensure_clip(work: Path, p: Profile) -> Path:
    """A looping-friendly H.264 (High, yuv420p, GOP 1 s, no B-frames) clip of moving texture, made once."""
    import av

    path = work / f"clip_{p.width}x{p.height}_{p.fps}fps_{p.seconds}s.mp4"
    if path.exists():
        return path
    rng = np.random.default_rng(0)
    texture = rng.integers(16, 236, (p.height * 2, p.width * 2), dtype=np.uint8)
    chroma = np.full((p.height // 2, p.width), 128, np.uint8)
    chroma[:, : p.width // 2] = np.linspace(60, 200, p.width // 2, dtype=np.uint8)
    tmp = path.with_name(path.stem + ".tmp.mp4")
    with av.open(str(tmp), mode="w") as out:
        stream = out.add_stream("libx264", rate=Fraction(p.fps))
        stream.width, stream.height, stream.pix_fmt = p.width, p.height, "yuv420p"
        stream.options = {"preset": "superfast", "crf": "26", "g": str(p.fps), "bf": "0"}
        for i in range(p.fps * p.seconds):
            dy, dx = (3 * i) % p.height, (5 * i) % p.width
            yuv = np.concatenate([texture[dy:dy + p.height, dx:dx + p.width], chroma])
            for packet in stream.encode(av.VideoFrame.from_ndarray(yuv, format="yuv420p")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    tmp.replace(path)
    return path


# -- NVDEC -------------------------------------------------------------------------------------------


def _decode_all(path: str, hw: str | None, owned: bool = False) -> tuple[int, float]:
    """Decode every frame of ``path`` (``hw``: NVDEC device index, or None for the CPU, 1 thread)."""
    import av

    from streamdet.pipeline.decode.nvdec import NVDEC_THREADS, nvdec_hwaccel

    kwargs: dict[str, Any] = {}
    if hw is not None:
        accel = nvdec_hwaccel(hw)
        if owned:
            from av.codec.hwaccel import HWAccel

            accel = HWAccel("cuda", device=hw, allow_software_fallback=False, is_hw_owned=True)
        kwargs["hwaccel"] = accel
    t0 = time.perf_counter()
    n = 0
    with av.open(path, **kwargs) as c:
        s = c.streams.video[0]
        s.codec_context.thread_count = NVDEC_THREADS if hw is not None else 1
        for _ in c.decode(s):
            n += 1
    return n, time.perf_counter() - t0


def _session_group(path: str, hw: str | None, threads: int, start_at: float, queue: Any) -> None:
    """One process of a session sweep: ``threads`` concurrent decodes starting at ``start_at`` (wall);
    puts its frames, errors, end time and CPU seconds on ``queue``."""
    results: list[tuple[int, float] | str] = []
    lock = threading.Lock()

    def one() -> None:
        try:
            r: tuple[int, float] | str = _decode_all(path, hw)
        except Exception as exc:
            r = f"{type(exc).__name__}: {exc}"
        with lock:
            results.append(r)

    import av  # noqa: F401  (imported before the start: not timed)

    time.sleep(max(0.0, start_at - time.time()))
    cpu0 = sum(os.times()[:2])
    workers = [threading.Thread(target=one) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    ok = [r for r in results if not isinstance(r, str)]
    queue.put({"frames": sum(n for n, _ in ok), "errors": [r for r in results if isinstance(r, str)][:3],
               "end": time.time(), "cpu_s": sum(os.times()[:2]) - cpu0})


def _sweep(path: Path, hw: str | None, sessions: int) -> dict[str, Any]:
    """``sessions`` concurrent decodes of the clip in up to 8 processes: aggregate frames/s, CPU per frame."""
    procs = min(8, sessions)
    per = [sessions // procs + (1 if i < sessions % procs else 0) for i in range(procs)]
    start_at = time.time() + 4.0  # every process started, imported and waiting
    mp = get_context("spawn")
    queue = mp.Queue()
    group_procs = [mp.Process(target=_session_group, args=(str(path), hw, k, start_at, queue)) for k in per]
    for proc in group_procs:
        proc.start()
    groups = [queue.get(timeout=300) for _ in group_procs]
    for proc in group_procs:
        proc.join(10)
    wall = max(g["end"] for g in groups) - start_at
    frames = sum(g["frames"] for g in groups)
    errors = [e for g in groups for e in g["errors"]]
    cpu = sum(g["cpu_s"] for g in groups)
    return {"sessions": sessions, "frames": frames, "wall_s": round(wall, 2), "fps": round(frames / wall, 1),
            "fps_per_session": round(frames / wall / sessions, 1), "cpu_ms_per_frame": round(cpu / max(1, frames) * 1e3,
                                                                                              3),
            "errors": errors}


def _parity(path: Path, frames: int = 30) -> dict[str, Any]:
    """NVDEC frames (downloaded NV12) against CPU frames: formats, colour tags, identical pixels."""
    import av

    from streamdet.pipeline.decode.nvdec import nvdec_hwaccel

    def take(**kw: Any) -> list[Any]:
        with av.open(str(path), **kw) as c:
            s = c.streams.video[0]
            hw = s.codec_context.is_hwaccel
            out = []
            for f in c.decode(s):
                out.append(f)
                if len(out) == frames:
                    break
            return [hw, out]

    hw_on, gpu = take(hwaccel=nvdec_hwaccel("0"))
    _, cpu = take()
    mismatched = 0
    for g, c in zip(gpu, cpu, strict=False):
        gy = g.to_ndarray()  # nv12: (H * 3 / 2, W), Y then interleaved UV
        ref = c.to_ndarray()  # yuv420p: (H * 3 / 2, W), Y, U, V
        h, w = c.height, c.width
        u = ref[h:h + h // 4].reshape(h // 2, w // 2)
        v = ref[h + h // 4:].reshape(h // 2, w // 2)
        nv12 = np.concatenate([ref[:h], np.stack([u, v], axis=-1).reshape(h // 2, w)])
        mismatched += int(not np.array_equal(gy, nv12))
    return {"is_hwaccel": bool(hw_on), "frames": len(gpu), "gpu_format": gpu[0].format.name if gpu else None,
            "cpu_format": cpu[0].format.name if cpu else None, "frames_not_identical": mismatched,
            "colour_tags_equal": all((g.colorspace, g.color_range) == (c.colorspace, c.color_range)
                                     for g, c in zip(gpu, cpu, strict=False))}


def _reader_check(path: Path, p: Profile, decode: str) -> dict[str, Any]:
    """streamdet's CameraReader with ``decode`` for 60 frames: the ring's decode mode and frames."""
    from streamdet.pipeline.decode.reader import CameraReader, CameraSource
    from streamdet.pipeline.ring.buffer import FrameRing
    from streamdet.pipeline.ring.layout import slot_bytes_for

    ring = FrameRing.create(f"sdverify_{os.getpid()}", "verify", 3, slot_bytes_for(p.width, p.height, "yuv420p"))
    stop = threading.Event()
    source = CameraSource.of("verify", str(path), realtime=False, loop=True, decode=decode,
                          nvdec_device="0" if decode != "cpu" else None, max_width=p.width, max_height=p.height)
    reader = CameraReader(source, ring, stop)
    thread = threading.Thread(target=reader.run, daemon=True)
    thread.start()
    seq, got, fmts = 0, 0, set()
    deadline = time.monotonic() + 20
    try:
        while got < 60 and time.monotonic() < deadline:
            frame = ring.read_next(seq)
            if frame is None:
                time.sleep(0.002)
                continue
            seq, got = frame.seq, got + 1
            fmts.add(frame.pix_fmt)
        st = ring.status()
        return {"frames": got, "pix_fmts": sorted(fmts), "decode_mode": st.decode_mode, "hw_fallbacks": st.hw_fallbacks,
                "last_error": st.last_error, "nvdec_failure": reader.nvdec.failure}
    finally:
        stop.set()
        thread.join(5)
        ring.close()
        ring.unlink()


def nvdec_stage(ctx: StageContext) -> dict[str, Any]:
    p = profile_of(ctx)
    from streamdet.pipeline.decode.nvdec import nvdec_problem

    hw = p.device != "cpu"
    if hw:
        problem = nvdec_problem("0")
        if problem is not None:
            raise Skip(f"NVDEC unavailable: {problem}")
    not_in_dry_run(ctx)
    t0 = time.perf_counter()
    clip = ensure_clip(ctx.work, p)
    result: dict[str, Any] = {"clip": clip.name, "clip_make_s": round(time.perf_counter() - t0, 1)}
    result["reader"] = _reader_check(clip, p, "nvdec" if hw else "cpu")
    if hw:
        result["parity"] = _parity(clip)
    ctx.partial(**result)
    rows: dict[str, Any] = {}
    for mode, counts in (("nvdec", p.sessions if hw else ()), ("cpu", (1, 16) if hw else p.sessions)):
        for k in counts:
            if ctx.left() < 15:
                rows[f"{mode}_{k}"] = {"skipped": "out of time"}
                continue
            rows[f"{mode}_{k}"] = _sweep(clip, "0" if mode == "nvdec" else None, k)
            ctx.partial(**result, sessions=rows)
    result["sessions"] = rows
    if hw and ctx.left() > 10:
        n, s = _decode_all(str(clip), "0", owned=True)
        result["one_session_frames_on_gpu_fps"] = round(n / s, 1)
    best = max((r.get("fps", 0) for k, r in rows.items() if k.startswith("nvdec")), default=None)
    result["headline"] = (f"reader mode {result['reader']['decode_mode']}; NVDEC best {best} fps aggregate; "
                          f"parity: {result.get('parity', {}).get('frames_not_identical')} frames differ")
    return result
