"""Stage ``e2e`` of tools/gpu_verify.py: the daemon end to end with N paced, looping 1080p30 file cameras.

Each run starts ``streamdet run`` on ``cuda:0`` with N cameras on one clip, waits until every
camera publishes (at most ``Profile.warmup_s``), lets it settle, then measures a window of
``Profile.window_s``: published frames per camera, drops, capture-to-publish latency (from the
detection messages, and the daemon's own latency histogram and drop counts from its stats
messages), CPU cores of the daemon's process tree, GPU and decoder utilisation, each ring's
decode mode, and per worker what its stats say about the data path (``preprocess``, ``pinned``,
``graphs``, ``torn``). Which run comes next is :func:`gpu_verify_search.plan_next`: grow N with
the device feed and NVDEC until a run fails (p99 > 200 ms or drops > 1 %), bisect, then the
same N with the host feed (``model.preprocess: cpu``), then, if time allows, one mixed run with
extra CPU-decoded cameras. A resumed stage continues from the runs its earlier, cut-off call
recorded (``StageContext.prior``).

``model.preprocess`` is written only when the profile names a value (never in the CPU smoke
profile) and only when this tree's configuration schema has the key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from gpu_verify_common import StageContext, not_in_dry_run, require_cuda
from gpu_verify_media import Profile, ensure_clip, profile_of
from gpu_verify_search import COMPARE, GROW, MIXED, Ladder, Limits, Step, best_passing, plan_next, verdict

REPO = Path(__file__).resolve().parents[1]
LIMITS = Limits()
WORKER_KEYS = ("device", "backend", "preprocess", "pinned", "graphs", "torn", "lanes", "batch_size_mean",
               "batch_size_max", "stage_ms", "queue_depth", "gpu_memory_bytes")
"""What a run records of each worker's last stats message (a key the worker does not send is None)."""


def preprocess_key_known() -> bool:
    """Whether this tree's configuration has ``model.preprocess`` (unknown keys are rejected)."""
    from streamdet.config.schema import ModelConfig

    return "preprocess" in ModelConfig.model_fields


def camera_ids(n: int) -> list[str]:
    return [f"cam{i:03d}" for i in range(n)]


def daemon_config(p: Profile, weights: Path, clip: Path, step: Step, endpoint: str) -> dict[str, Any]:
    """The daemon's configuration for one run: ``step.cameras`` cameras on ``clip``, the last
    ``step.cpu_decoded`` of them decoded on the CPU, ``model.preprocess`` only when ``step`` names it."""
    model: dict[str, Any] = {"weights": str(weights), "img_size": p.img_size, "half": p.half, "conf_thres": 0.5,
                             "backend": "torch"}
    if step.preprocess is not None:
        model["preprocess"] = step.preprocess
    first_cpu = step.cameras - step.cpu_decoded
    return {
        "model": model,
        "devices": [p.device],
        "publish": {"endpoint": endpoint, "hwm": 100000, "stats_interval_s": p.stats_interval_s},
        "batching": {"max_batch": p.max_batch, "max_wait_ms": 5},
        "ring": {"slots": 3, "max_width": p.width, "max_height": p.height},
        "decode": {"cameras_per_process": 8},
        "supervisor": {"startup_timeout_s": 300},
        "cameras": [{"id": cam, "url": str(clip), "loop": True, "realtime": True,
                     "decode": "cpu" if i >= first_cpu else p.decode}
                    for i, cam in enumerate(camera_ids(step.cameras))],
    }


# -- what a window of messages says (pure) -------------------------------------------------------


def in_window(msg: Mapping[str, Any], start_wall: float) -> bool:
    """Whether a stats message's interval began inside the window (not in the warm-up)."""
    return float(msg.get("ts", 0.0)) - float(msg.get("interval_s", 0.0)) >= start_wall - 0.5


def stats_figures(stats: Iterable[Mapping[str, Any]], start_wall: float, limit_ms: float) -> dict[str, Any]:
    """The daemon's own count over the stats intervals inside the window: published, dropped, the
    drop fraction and the share of frames slower than ``limit_ms`` (its cumulative histogram)."""
    published = dropped = total = under = intervals = 0
    for msg in stats:
        if not in_window(msg, start_wall):
            continue
        intervals += 1
        for cam in (msg.get("cameras") or {}).values():
            published += int(cam.get("published", 0))
            dropped += int(cam.get("dropped", 0))
            hist = cam.get("latency_hist_ms") or {}
            edges = list(hist.get("le") or [])
            if limit_ms in edges and hist.get("count"):
                total += int(hist["count"])
                under += int(hist["counts"][edges.index(limit_ms)])
    seen = published + dropped
    return {"stats_intervals": intervals, "stats_published": published, "stats_dropped": dropped,
            "stats_drop_fraction": round(dropped / seen, 5) if seen else None,
            "share_over_p99_limit": round(1.0 - under / total, 5) if total else None}


def worker_figures(stats: Iterable[Mapping[str, Any]], start_wall: float) -> dict[str, dict[str, Any]]:
    """Per worker (stats source): ``WORKER_KEYS`` of its last stats message in the window, and
    ``torn_sum``, the ``torn`` counts of its window intervals added up."""
    out: dict[str, dict[str, Any]] = {}
    for msg in stats:
        worker = msg.get("worker")
        if not isinstance(worker, Mapping) or not in_window(msg, start_wall):
            continue
        entry = out.setdefault(str(msg.get("source")), {"torn_sum": 0})
        entry.update({k: worker.get(k) for k in WORKER_KEYS})
        torn = worker.get("torn")
        if isinstance(torn, int | float) and not isinstance(torn, bool):
            entry["torn_sum"] += torn
    return out


def window_figures(counts: Mapping[str, int], dropped: int, latency_ms: Sequence[float], elapsed_s: float,
                   target_fps: float) -> dict[str, Any]:
    """What the detection messages of one window say: rates per camera, drops, latency percentiles."""
    fps = [c / elapsed_s for c in counts.values()] or [0.0]
    received = sum(counts.values())
    lat = np.asarray(latency_ms, dtype=np.float64)

    def pct(q: float) -> float | None:
        return round(float(np.percentile(lat, q)), 1) if lat.size else None

    return {"window_s": round(elapsed_s, 1), "fps_per_camera_mean": round(statistics.mean(fps), 2),
            "fps_per_camera_min": round(min(fps), 2), "fps_total": round(sum(fps), 1), "target_fps": target_fps,
            "cameras_below_90pct": sum(1 for f in fps if f < 0.9 * target_fps), "received": received,
            "dropped": dropped, "msg_drop_fraction": round(dropped / (received + dropped), 5) if received else None,
            "latency_ms": {"p50": pct(50), "p99": pct(99), "max": pct(100)}}


# -- one run -----------------------------------------------------------------------------------------


def _gpu_util() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,utilization.decoder,memory.used",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"<{type(exc).__name__}>"


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds of ``pid`` and its live descendants."""
    from soak_probe import descendants

    own = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu for _, _, cpu in descendants(pid).values())


def _rings(pid: int, cams: Sequence[str]) -> dict[str, Any]:
    from streamdet.pipeline.ring.buffer import FrameRing
    from streamdet.supervisor.runtime import ring_name

    modes: dict[str, int] = {}
    fallbacks = 0
    for cam in cams:
        with contextlib.suppress(OSError, ValueError):
            ring = FrameRing.attach(ring_name(pid, cam))
            st = ring.status()
            modes[st.decode_mode] = modes.get(st.decode_mode, 0) + 1
            fallbacks += st.hw_fallbacks
            ring.close()
    return {"decode_modes": modes, "hw_fallbacks": fallbacks}


def _weights(ctx: StageContext, p: Profile) -> Path:
    if p.weights is not None:
        return p.weights
    from streamdet.model.checkpoint import save_checkpoint
    from streamdet.model.yolov5 import ARCHITECTURES, YOLOv5

    weights = ctx.work / "yolov5s_random.pt"
    if not weights.exists():
        save_checkpoint(YOLOv5(ARCHITECTURES["yolov5s"]), weights)
    return weights


def _stop(daemon: subprocess.Popen[bytes]) -> None:
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(20)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(5)


def run_daemon(ctx: StageContext, p: Profile, clip: Path, step: Step) -> dict[str, Any]:
    """One daemon run as ``step`` says; its record (see the module docstring), with ``error`` when the
    daemon exited early or the harness failed."""
    import yaml

    from streamdet.client.subscriber import Subscriber

    endpoint = f"ipc://{ctx.work}/e2e.sock"
    cfg = ctx.work / f"e2e_{step.phase}_{step.cameras}.yaml"
    cfg.write_text(yaml.safe_dump(daemon_config(p, _weights(ctx, p), clip, step, endpoint), sort_keys=False))
    log = cfg.with_suffix(".log")
    (ctx.work / "runtime").mkdir(exist_ok=True)
    env = {**os.environ, "RUNTIME_DIRECTORY": str(ctx.work / "runtime"), "PYTHONUNBUFFERED": "1"}
    cams = camera_ids(step.cameras)
    result: dict[str, Any] = {"phase": step.phase, "cameras": step.cameras, "cpu_decoded": step.cpu_decoded,
                              "preprocess": step.preprocess, "decode": p.decode}
    t_start = time.monotonic()
    sub = Subscriber(endpoint, stats=True, rcvhwm=200_000)
    with log.open("w") as logf:
        daemon = subprocess.Popen([sys.executable, "-m", "streamdet", "run", str(cfg)], stdout=logf,
                                  stderr=subprocess.STDOUT, env=env, cwd=REPO)
    try:
        seen: set[str] = set()
        warm_until = t_start + max(5.0, min(p.warmup_s, ctx.left() - p.window_s - p.settle_s - 25))
        while len(seen) < len(cams) and time.monotonic() < warm_until and daemon.poll() is None:
            msg = sub.recv(0.5)
            if msg is not None and msg.get("type") == "detections":
                seen.add(msg["camera"])
        result["warmup_s"] = round(time.monotonic() - t_start, 1)
        result["cameras_publishing"] = len(seen)
        if daemon.poll() is not None:
            raise RuntimeError(f"the daemon exited {daemon.returncode} during warm-up (log {log.name})")
        settle_until = time.monotonic() + p.settle_s
        while time.monotonic() < settle_until:
            sub.recv(0.1)
        window = max(3.0, min(p.window_s if len(seen) == len(cams) else 6.0, ctx.left() - 20))
        counts = dict.fromkeys(cams, 0)
        dropped = 0
        latency: list[float] = []
        stats: list[dict[str, Any]] = []
        util: list[str] = []
        lost0 = sub.lost
        cpu0, w0, w0_wall = _tree_cpu_s(daemon.pid), time.monotonic(), time.time()
        while time.monotonic() - w0 < window:
            if len(util) < 3 and time.monotonic() - w0 > window * len(util) / 3:
                util.append(_gpu_util())
            msg = sub.recv(0.2)
            if msg is None:
                continue
            if msg.get("type") == "stats":
                stats.append(msg)
                continue
            counts[msg["camera"]] = counts.get(msg["camera"], 0) + 1
            dropped += int(msg.get("dropped", 0))
            latency.append((msg["ts_publish"] - msg["ts_capture"]) * 1e3)
        elapsed = time.monotonic() - w0
        cores = (_tree_cpu_s(daemon.pid) - cpu0) / elapsed
        result.update(window_figures(counts, dropped, latency, elapsed, p.fps))
        result.update(stats_figures(stats, w0_wall, LIMITS.p99_ms))
        fractions = [f for f in (result["msg_drop_fraction"], result["stats_drop_fraction"]) if f is not None]
        result["drop_fraction"] = max(fractions) if fractions else None
        result.update(daemon_cores=round(cores, 2), gpu_util_decoder_mem=util, workers=worker_figures(stats, w0_wall),
                      rings=_rings(daemon.pid, cams), lost_seq=sub.lost - lost0)
    except Exception as exc:  # a daemon or harness failure: this run's record says so, with the log's tail
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        sub.close()
        _stop(daemon)
        result["exit_status"] = daemon.returncode
        result["run_s"] = round(time.monotonic() - t_start, 1)
        result["log_tail"] = log.read_text(errors="replace")[-1200:]
    return result


# -- the stage ---------------------------------------------------------------------------------------


def _prior_runs(ctx: StageContext) -> list[dict[str, Any]]:
    """The runs an earlier call of this stage recorded before it was cut off (none after an ok)."""
    prior = ctx.prior or {}
    if prior.get("status") == "ok":
        return []
    return [{**r, "earlier_call": True} for r in prior.get("runs") or [] if isinstance(r, dict) and "cameras" in r]


def _brief(r: Mapping[str, Any] | None) -> str:
    if not r:
        return "-"
    return (f"N={r['cameras']}{' (' + str(r['cpu_decoded']) + ' CPU-decoded)' if r.get('cpu_decoded') else ''}: "
            f"p99 {(r.get('latency_ms') or {}).get('p99')} ms, drops {r.get('drop_fraction')}, "
            f"{r.get('fps_per_camera_mean')} fps/camera, {r.get('daemon_cores')} cores -> {r.get('verdict')}")


def summarise(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The stage's figures over its runs: the largest passing N, the compare run, ratios, headline."""
    best = best_passing(runs, LIMITS)
    best_run = next((r for r in reversed(runs) if r.get("phase", GROW) == GROW and r.get("cameras") == best
                     and verdict(r, LIMITS) is None), None)
    cmp_run = next((r for r in runs if r.get("phase") == COMPARE), None)
    mixed = next((r for r in runs if r.get("phase") == MIXED), None)
    ratios: dict[str, float | None] = {}
    base = next((r for r in reversed(runs) if r.get("phase", GROW) == GROW and cmp_run is not None
                 and r.get("cameras") == cmp_run.get("cameras")), None)
    if base is not None and cmp_run is not None:
        def ratio(a: Any, b: Any) -> float | None:
            return round(a / b, 3) if isinstance(a, int | float) and isinstance(b, int | float) and b else None

        ratios = {"fps_total_device_over_host": ratio(base.get("fps_total"), cmp_run.get("fps_total")),
                  "cores_host_over_device": ratio(cmp_run.get("daemon_cores"), base.get("daemon_cores")),
                  "p99_host_over_device": ratio((cmp_run.get("latency_ms") or {}).get("p99"),
                                                (base.get("latency_ms") or {}).get("p99"))}
    head = (f"largest passing N {best} (goal >= 160): {_brief(best_run)}; host feed at the same N: {_brief(cmp_run)}"
            + (f"; mixed: {_brief(mixed)}" if mixed else ""))
    return {"largest_passing_cameras": best, "ratios": ratios, "headline": head}


def e2e_stage(ctx: StageContext) -> dict[str, Any]:
    p = profile_of(ctx)
    if p.device != "cpu":
        require_cuda()
    not_in_dry_run(ctx)
    ladder = Ladder(*ctx.e2e_ladder) if ctx.e2e_ladder else p.ladder
    fast, compare, notes = p.fast_preprocess, p.compare_preprocess, []
    if (fast or compare) and not preprocess_key_known():
        fast = compare = None
        notes.append("this tree's configuration has no model.preprocess: every run uses the worker's default "
                     "feed, and there is no compare run")
    clip = ensure_clip(ctx.work, p)
    runs = _prior_runs(ctx)
    slot = p.width * p.height * 3 // 2 + 4096
    errors = 0
    while errors < 2:
        timed = [float(r["run_s"]) for r in runs if r.get("run_s") and not r.get("earlier_call")]
        run_s = timed[-1] if timed else p.run_estimate_s  # the last run's time (the first pays cold caches)
        step = plan_next(runs, left_s=ctx.left() - 10, run_s=run_s, fast=fast, compare=compare,
                         do_compare=p.compare and (compare is not None or p.compare_preprocess is None),
                         do_mixed=p.mixed and p.device != "cpu", ladder=ladder, limits=LIMITS)
        if step is None:
            break
        free = shutil.disk_usage("/dev/shm").free
        run: dict[str, Any]
        if step.cameras * 3 * slot > free:
            run = {"phase": step.phase, "cameras": step.cameras, "skipped": f"the rings need "
                   f"{step.cameras * 3 * slot / 2**30:.1f} GiB of /dev/shm, {free / 2**30:.1f} GiB free"}
        else:
            run = run_daemon(ctx, p, clip, step)
            errors += int("error" in run)  # two daemon or harness failures end the stage
        run["verdict"] = verdict(run, LIMITS) or "pass"
        runs.append(run)
        ctx.partial(runs=runs, **summarise(runs))
    return {"runs": runs, "limits": {"p99_ms": LIMITS.p99_ms, "drop_fraction": LIMITS.drop_fraction},
            "ladder": dataclasses.asdict(ladder), "notes": notes, **summarise(runs)}
