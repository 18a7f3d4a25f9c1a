"""``streamdet bench``: streamdet and the naive loop, side by side, in one run on the same machine.

Order: clips (cached), the naive loop unpaced, the daemon unpaced (then once per ``--tracking``
detect_every value with tracking on), then per detection rate the capacity search for each system
(and each tracked daemon), started from the guess their unpaced throughput gives. The naive loop
never tracks: the tracked daemon's figures are set against the same untracked naive loop. Progress
goes to stderr, the table to stdout, the full result to ``--json``, the curves to ``--plot``.
Any daemon started is stopped before this returns, on Ctrl-C and SIGTERM too.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import platform
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from streamdet.bench.accounting import TrialResult
from streamdet.bench.capacity import initial_guess, search_capacity
from streamdet.bench.options import BenchSettings
from streamdet.bench.report import (
    compute_ratios,
    format_table,
    plot_available,
    rate_key,
    tracking_key,
    write_json,
    write_plot,
)
from streamdet.bench.workload import DaemonSettings, ensure_clips


class _Log:
    """Progress lines on stderr, stamped with the seconds since the start."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.start = time.monotonic()

    def __call__(self, text: str) -> None:
        self.stream.write(f"[bench {time.monotonic() - self.start:6.1f}s] {text}\n")
        self.stream.flush()


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt, so cleanup (stopping the daemon) runs; restored on exit."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _environment(settings: BenchSettings) -> dict[str, Any]:
    from streamdet._version import __version__

    env: dict[str, Any] = {"streamdet": __version__, "python": platform.python_version(),
                           "platform": platform.platform(), "cpus": os.cpu_count(), "device": settings.device}
    try:
        import torch

        env["torch"] = torch.__version__
        env["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return env


def _trial_line(system: str, rate: float, log: Callable[[str], None]) -> Callable[[Any], None]:
    def report(t: Any) -> None:
        p99 = t.latency.p99
        log(f"capacity {system} @ {rate:g} fps: N={t.n} drops {t.drop_pct:.2f}% "
            f"({t.dropped}/{t.expected}) p99 {'-' if p99 is None else f'{p99:.0f}'} ms -> "
            f"{'held' if t.passed else 'not held'}")
    return report


def _detector_fps(result: dict[str, Any], detect_every: int) -> float | None:
    """Throughput for the capacity search's first guess with tracking: the tracked unpaced run's,
    else the untracked one's times ``detect_every`` (the detector sees one frame in N)."""
    tracked = result.get("tracking", {}).get(tracking_key(detect_every), {}).get("unpaced", {}).get("fps")
    if tracked:
        return float(tracked)
    plain = result["streamdet"].get("unpaced", {}).get("fps")
    return float(plain) * detect_every if plain else None


def run_bench(settings: BenchSettings, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every part not skipped; return the result dict (see :mod:`streamdet.bench.report`)."""
    from streamdet.bench import daemon, naive

    log = log or _Log()
    workdir = settings.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    clips = ensure_clips(workdir, settings.cameras, settings.width, settings.height, settings.frames, log)
    result: dict[str, Any] = {"settings": settings.to_dict(), "environment": _environment(settings),
                              "streamdet": {}, "naive": {}}
    if settings.tracking:
        result["tracking"] = {tracking_key(n): {"detect_every": n} for n in settings.tracking}
    dsettings = DaemonSettings(weights=settings.weights, img_size=settings.img_size, device=settings.device,
                               backend=settings.backend, stats_interval_s=settings.stats_interval_s,
                               frame_size=(settings.width, settings.height))
    total = settings.cameras * settings.frames
    detector = None
    if "naive" not in settings.skip:
        log(f"naive loop, unpaced: {settings.cameras} x {settings.frames} frames")
        detector = naive.make_detector(settings.weights, settings.device, settings.img_size)
        result["naive"]["unpaced"] = r = naive.run_unpaced(detector, clips)
        log(f"naive loop: {r['frames_processed']}/{total} frames, {r['fps'] or 0:.1f} frames/s")
    if "unpaced" not in settings.skip:
        log(f"streamdet, unpaced: {settings.cameras} x {settings.frames} frames (daemon start-up takes a while)")
        result["streamdet"]["unpaced"] = r = daemon.run_unpaced(dsettings, clips, settings.frames, workdir)
        log(f"streamdet: {r['frames_published']}/{total} frames published, lost {r['frames_lost']}, "
            f"{r['fps'] or 0:.1f} frames/s")
        for n in settings.tracking:
            tracked = dataclasses.replace(dsettings, detect_every=n)
            log(f"streamdet + tracking, detect_every {n}, unpaced: {settings.cameras} x {settings.frames} frames")
            result["tracking"][tracking_key(n)]["unpaced"] = r = daemon.run_unpaced(tracked, clips, settings.frames,
                                                                                   workdir)
            log(f"streamdet + tracking, detect_every {n}: {r['frames_published']}/{total} frames published "
                f"({r['tracked_only']} tracked only), lost {r['frames_lost']}, {r['fps'] or 0:.1f} frames/s")
    if "capacity" not in settings.skip:
        def streamdet_trial(n: int, rate: float, detect_every: int | None = None) -> TrialResult:
            return daemon.run_trial(dataclasses.replace(dsettings, detect_every=detect_every), clips, settings.frames,
                                    n, rate, workdir, seconds=settings.seconds, warmup_s=settings.warmup_s,
                                    latency_ms=settings.latency_ms, max_drop_pct=settings.max_drop_pct)

        def naive_trial(n: int, rate: float) -> TrialResult:
            return naive.run_trial(detector, clips, settings.frames, n, rate, seconds=settings.seconds,
                                   warmup_s=settings.warmup_s, latency_ms=settings.latency_ms,
                                   max_drop_pct=settings.max_drop_pct)

        for rate in settings.rates:
            key = rate_key(rate)
            start = initial_guess(result["streamdet"].get("unpaced", {}).get("fps"), rate, settings.max_cameras)
            cap = search_capacity(
                functools.partial(streamdet_trial, rate=rate),
                settings.max_cameras, settings.budget_s, start=start, on_trial=_trial_line("streamdet", rate, log))
            result["streamdet"].setdefault("capacity", {})[key] = cap.to_dict()
            if "naive" not in settings.skip:
                start = initial_guess(result["naive"].get("unpaced", {}).get("fps"), rate, settings.max_cameras)
                cap = search_capacity(
                    functools.partial(naive_trial, rate=rate),
                    settings.max_cameras, settings.budget_s, start=start, on_trial=_trial_line("naive", rate, log))
                result["naive"].setdefault("capacity", {})[key] = cap.to_dict()
            for every in settings.tracking:
                part = result["tracking"][tracking_key(every)]
                start = initial_guess(_detector_fps(result, every), rate, settings.max_cameras)
                cap = search_capacity(
                    functools.partial(streamdet_trial, rate=rate, detect_every=every),
                    settings.max_cameras, settings.budget_s, start=start,
                    on_trial=_trial_line(f"streamdet + tracking, detect_every {every}", rate, log))
                part.setdefault("capacity", {})[key] = cap.to_dict()
    result["ratios"] = compute_ratios(result)
    return result


def bench_main(settings: BenchSettings, out: TextIO | None = None) -> int:
    """CLI body: validate, run, print the table, write JSON/plot; returns the exit status."""
    from streamdet.bench.daemon import BenchError

    out = out if out is not None else sys.stdout
    settings.validate()
    if settings.plot_path is not None and not plot_available():
        print("streamdet: error: --plot needs matplotlib: pip install 'streamdet[bench]'", file=sys.stderr)
        return 2
    log = _Log()
    try:
        with _sigterm_as_interrupt():
            result = run_bench(settings, log)
    except KeyboardInterrupt:
        log("interrupted; every daemon started was stopped")
        return 1
    except BenchError as exc:
        print(f"streamdet bench: {exc}", file=sys.stderr)
        return 1
    print(format_table(result), file=out)
    if settings.json_path is not None:
        write_json(result, settings.json_path)
        log(f"wrote {settings.json_path}")
    if settings.plot_path is not None:
        write_plot(result, settings.plot_path)
        log(f"wrote {settings.plot_path}")
    return 0
