#!/usr/bin/env python3
"""Soak test: `streamdet run` on CPU for a long time with periodic reloads, checked for leaks and drift.

    python3 tools/soak.py --minutes 30 --reload-every 300 --cameras 4 --json out.json [--workdir DIR]

Plays ``--cameras`` looping paced clips (tools/make_shapes.py, cached in the workdir) at
``--fps`` detections per second each, subscribes to every camera and to stats, and every
``--sample-every`` seconds records the resident memory and open fds of the supervisor and each
child (/proc), the supervisor's /dev/shm rings and a /metrics scrape. Every ``--reload-every``
seconds it rewrites the configuration, alternating between two that differ only in live settings
(conf_thres, cam0's max_fps), sends a reload and checks the daemon's "reloaded" line. At the end it
sends SIGTERM and judges the run (tools/soak_report.py: windows scale to 1/6 of runs shorter than
30 minutes). Exit status: 0 every criterion passed, 1 one failed, 2 the soak could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import soak_report as report  # tools/ is on sys.path: this file runs as a script
from soak_probe import machine_busy_s, own_cpu_s, sample_processes, shm_usage
from soak_workload import CONF, Workload, daemon_config, ensure_clips, write_config

from streamdet.bench.daemon import DaemonProcess
from streamdet.bench.workload import free_port
from streamdet.client import Subscriber
from streamdet.errors import StreamdetError
from streamdet.supervisor.runtime import segments_of, send_reload

STARTUP_TIMEOUT_S = 300.0
RELOAD_CONFIRM_S = 60.0
CHILDREN_GONE_S = 10.0  # multiprocessing's resource tracker exits shortly after the supervisor
THRESHOLD_SETTLE_S = 3.0  # frames in flight when a reload lands were filtered with the old threshold


def _wait_gone(procs: set[tuple[int, str]], timeout_s: float) -> list[str]:
    """``name[pid]`` of the processes still alive (same pid and name) after waiting up to ``timeout_s``."""
    def alive() -> list[str]:
        out = []
        for pid, name in sorted(procs):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            if stat[stat.index("(") + 1 : stat.rindex(")")] == name:
                out.append(f"{name}[{pid}]")
        return out

    deadline = time.monotonic() + timeout_s
    while (left := alive()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


class LogTail:
    """New complete lines of a growing log file."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.partial = path, 0, ""

    def lines(self) -> list[str]:
        try:
            with open(self.path, errors="replace") as f:
                f.seek(self.offset)
                data = f.read()
                self.offset = f.tell()
        except OSError:
            return []
        parts = (self.partial + data).split("\n")
        self.partial = parts.pop()
        return parts


class Soak:
    """One soak run; ``run()`` returns everything measured (the JSON report)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.load = Workload(cameras=args.cameras, fps=args.fps)
        self.win = report.Windows.for_duration(args.minutes * 60.0)
        self.rundir = Path(args.workdir) / "runs" / time.strftime("%Y%m%d-%H%M%S")
        self.config_path = self.rundir / "soak.yaml"
        self.runtime = self.rundir / "runtime"
        self.endpoint = f"ipc://{self.rundir / 'pub.sock'}"
        self.metrics_port = free_port()
        self.t0 = 0.0
        self.samples: list[dict[str, Any]] = []
        self.latencies: list[tuple[float, float]] = []  # (t, ms)
        self.pending_lat: list[float] = []
        self.tracks: dict[str, report.CameraTrack] = {}
        self.drops = report.DropTotals()
        self.reloads: list[dict[str, Any]] = []
        self.variant = 0
        self.strict_since: float | None = None  # conf 0.3 in force (after settling) since this t
        self.below_strict = 0  # detections scored under 0.3 while 0.3 was in force
        self.between_loose = 0  # detections scored 0.25-0.3 while 0.25 was in force
        self.scrapes = {"ok": 0, "total": 0, "errors": []}
        self.log_notes: dict[str, list[str]] = {"warnings": [], "errors": []}
        self.worker_stats: dict[str, Any] | None = None  # the latest stats message's worker figures
        self.prev_clocks: Any = None  # ((monotonic, machine busy s, own CPU s), {pid: CPU s}) at the last sample

    # -- set-up --------------------------------------------------------------------------------
    def _prepare(self) -> list[Path]:
        clips = ensure_clips(Path(self.args.workdir), self.load)
        self.runtime.mkdir(parents=True, exist_ok=True)
        self.configs = [daemon_config(self.load, clips, variant=v, endpoint=self.endpoint,
                                      metrics_port=self.metrics_port) for v in (0, 1)]
        write_config(self.config_path, self.configs[0])
        return clips

    # -- per message ---------------------------------------------------------------------------
    def _on_message(self, msg: dict[str, Any], t: float) -> None:
        if msg["type"] == "stats":
            if t >= self.win.warmup_s:
                self.drops.add(msg)
            if isinstance(msg.get("worker"), dict):
                self.worker_stats = msg["worker"]
            return
        if t < 0:
            return
        self.tracks.setdefault(msg["camera"], report.CameraTrack()).add(t)
        ms = 1000.0 * (msg["ts_publish"] - msg["ts_capture"])
        self.latencies.append((t, ms))
        self.pending_lat.append(ms)
        between = sum(1 for d in msg["detections"] if d["score"] < CONF[1])
        if self.strict_since is not None and t >= self.strict_since:
            self.below_strict += between
        elif self.variant == 0:
            self.between_loose += between  # shows that the check above could see such detections

    def _on_log(self, line: str, t: float) -> None:
        for level, key in ((" WARNING ", "warnings"), (" ERROR ", "errors")):
            if level in line and len(self.log_notes[key]) < 50:
                self.log_notes[key].append(line)
        pending = self.reloads[-1] if self.reloads and self.reloads[-1]["summary"] is None else None
        if pending is None or ("reloaded " not in line and "reload rejected" not in line):
            return
        summary = line.split("reloaded ", 1)[-1]
        pending.update(summary=summary, confirmed_after_s=round(t - pending["t"], 2))
        live = "max_fps live: cam0" in summary or self.load.fps <= 1
        pending["ok"] = ("reloaded " in line and " restarted 0 " in summary and "workers restarted" not in summary
                         and "workers updated live" in summary and live)
        self.strict_since = t + THRESHOLD_SETTLE_S if self.variant == 1 else None

    # -- periodic ------------------------------------------------------------------------------
    def _sample(self, pid: int, t: float) -> None:
        procs = [p.as_dict() for p in sample_processes(pid)]
        clocks = (time.monotonic(), machine_busy_s(), own_cpu_s())
        segs, nbytes = shm_usage(pid)
        ok = self._scrape()
        self.samples.append({"t": round(t, 2), "processes": procs, "rss_kb": report.role_rss(procs),
                             "fds_total": sum(p["fds"] for p in procs), "shm_segments": segs, "shm_bytes": nbytes,
                             "latency_ms": report.latency_summary(self.pending_lat), "metrics_ok": ok,
                             "cpu_cores": self._cpu_cores(procs, clocks), "loadavg_1m": os.getloadavg()[0],
                             "worker_stats": self.worker_stats})
        self.pending_lat = []

    def _cpu_cores(self, procs: list[dict[str, Any]], clocks: tuple[float, float, float]) -> dict[str, float] | None:
        """CPU cores used since the previous sample by each role, this tool and every other process."""
        prev, self.prev_clocks = self.prev_clocks, (clocks, {p["pid"]: p["cpu_s"] for p in procs})
        if prev is None:
            return None
        (t0, busy0, own0), cpu0 = prev
        dt = clocks[0] - t0
        if dt <= 0:
            return None
        out = dict.fromkeys(report.ROLES, 0.0)
        for p in procs:
            out[p["role"]] += (p["cpu_s"] - cpu0.get(p["pid"], 0.0)) / dt
        daemon = sum(out.values())
        soak, machine = (clocks[2] - own0) / dt, (clocks[1] - busy0) / dt
        out.update(daemon=daemon, soak=soak, machine=machine, other_processes=max(0.0, machine - daemon - soak))
        return {k: round(v, 3) for k, v in out.items()}

    def _scrape(self) -> bool:
        self.scrapes["total"] += 1
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
                ok = resp.status == 200 and b"streamdet_" in resp.read()
        except OSError as exc:
            ok = False
            if len(self.scrapes["errors"]) < 10:
                self.scrapes["errors"].append(str(exc))
        self.scrapes["ok"] += ok
        return ok

    def _reload(self, t: float) -> None:
        self.variant = 1 - self.variant
        self.strict_since = None
        write_config(self.config_path, self.configs[self.variant])
        send_reload(self.runtime)
        self.reloads.append({"t": round(t, 2), "to_variant": self.variant, "summary": None, "ok": False,
                             "confirmed_after_s": None})

    # -- the run -------------------------------------------------------------------------------
    def _wait_ready(self, daemon: DaemonProcess, sub: Subscriber) -> float:
        want = {f"cam{i}" for i in range(self.load.cameras)}
        seen: set[str] = set()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while seen != want:
            if time.monotonic() > deadline:
                raise RuntimeError(f"cameras {sorted(want - seen)} published nothing in {STARTUP_TIMEOUT_S:g} s")
            daemon.check_alive()
            msg = sub.recv(timeout=0.5)
            if msg is not None and msg["type"] == "detections":
                seen.add(msg["camera"])
        return time.time()

    def run(self) -> dict[str, Any]:
        self._prepare()
        env_runtime = os.environ.get("RUNTIME_DIRECTORY")
        os.environ["RUNTIME_DIRECTORY"] = str(self.runtime)  # inherited by the daemon
        log_path = self.rundir / "daemon.log"
        daemon = DaemonProcess(self.config_path, log_path, stop_timeout_s=60.0)
        sub = Subscriber(self.endpoint, stats=True, rcvhwm=200000)
        started = time.time()
        try:
            daemon.start()
            self.t0 = self._wait_ready(daemon, sub)
            self._loop(daemon, sub, LogTail(log_path))
            last_kids = {(p["pid"], p["name"]) for p in self.samples[-1]["processes"] if p["pid"] != daemon.proc.pid}
            status = daemon.stop()
            left = _wait_gone(last_kids, CHILDREN_GONE_S)
        finally:
            daemon.stop()
            sub.close()
            if env_runtime is None:
                os.environ.pop("RUNTIME_DIRECTORY", None)
            else:
                os.environ["RUNTIME_DIRECTORY"] = env_runtime
        pid = daemon.proc.pid
        return self._result(started, log_path, {"status": status, "segments_left": segments_of(pid),
                                                "children_left": left}, sub)

    def _loop(self, daemon: DaemonProcess, sub: Subscriber, log: LogTail) -> None:
        total, pid = self.win.total_s, daemon.proc.pid
        next_sample, next_reload, next_check = 0.0, float(self.args.reload_every), 0.0
        while True:
            t = time.time() - self.t0
            if t >= next_check:
                daemon.check_alive()
                for line in log.lines():
                    self._on_log(line, t)
                next_check = t + 0.5
            if t >= next_sample:
                self._sample(pid, t)
                if t >= total:
                    return
                next_sample = min(next_sample + self.args.sample_every, total)
            if t >= next_reload:
                if next_reload < total - 1.0:
                    self._reload(t)
                next_reload += self.args.reload_every
            if self.reloads and self.reloads[-1]["summary"] is None and t - self.reloads[-1]["t"] > RELOAD_CONFIRM_S:
                self.reloads[-1]["summary"] = "(no reloaded line within 60 s)"
            msg = sub.recv(timeout=0.1)
            while msg is not None:
                self._on_message(msg, time.time() - self.t0)
                msg = sub.recv(timeout=0)

    def _result(self, started: float, log_path: Path, exit_info: dict[str, Any], sub: Subscriber) -> dict[str, Any]:
        win = self.win
        shm = self.samples
        result: dict[str, Any] = {
            "command": sys.argv, "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
            "startup_s": round(self.t0 - started, 1), "rundir": str(self.rundir), "log": str(log_path),
            "workload": asdict(self.load), "windows": asdict(win), "reload_every_s": self.args.reload_every,
            "rss": report.rss_growth(self.samples, win), "fds": report.fd_growth(self.samples, win),
            "shm": {"segments_min": min(s["shm_segments"] for s in shm),
                    "segments_max": max(s["shm_segments"] for s in shm),
                    "bytes_min": min(s["shm_bytes"] for s in shm),
                    "bytes_max": max(s["shm_bytes"] for s in shm)},
            "latency": {name: report.latency_summary([ms for t, ms in self.latencies if report.in_window(t, w)])
                        for name, w in (("first", win.first), ("last", win.last), ("whole", (0.0, win.total_s)))},
            "cameras": {c: asdict(v) for c, v in sorted(self.tracks.items())},
            "drops": {"after_warmup": self.drops.cameras, "lost_share": self.drops.lost_share()},
            "restarts": report.child_pid_changes(self.samples), "reloads": self.reloads,
            "thresholds": {"detections_below_0.3_while_0.3": self.below_strict,
                           "detections_0.25_to_0.3_while_0.25": self.between_loose},
            "metrics_scrapes": self.scrapes, "exit": exit_info, "log_notes": self.log_notes,
            "subscriber": {"seq_lost": sub.lost, "invalid": sub.invalid},
            "cpu_cores": report.cpu_by_window(self.samples, win),
        }
        crit = report.judge(result, rss_limit_pct=self.args.rss_limit, p99_tolerance_pct=self.args.p99_tolerance,
                            max_gap_s=self.args.max_gap, max_lost_pct=self.args.max_lost)
        crit.append(report.Criterion("thresholds applied live", f"{self.below_strict} detections < 0.3 under 0.3 "
                                     f"({self.between_loose} in 0.25-0.3 under 0.25)", "0", self.below_strict == 0))
        result["criteria"] = report.criteria_dicts(crit)
        result["passed"] = all(c.ok for c in crit)
        result["samples"] = self.samples
        return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=30.0, help="run length after the daemon is ready (default 30)")
    p.add_argument("--reload-every", type=float, default=300.0, help="seconds between reloads (default 300)")
    p.add_argument("--cameras", type=int, default=4)
    p.add_argument("--fps", type=float, default=5.0, help="max_fps of every camera (default 5)")
    p.add_argument("--sample-every", type=float, default=10.0, help="seconds between resource samples (default 10)")
    p.add_argument("--json", type=Path, help="write the whole report, time series included, here")
    p.add_argument("--workdir", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                   / "streamdet" / "soak", help="clips (reused) and one runs/<time> folder per run")
    p.add_argument("--rss-limit", type=float, default=5.0, help="max RSS growth, percent (default 5)")
    p.add_argument("--p99-tolerance", type=float, default=10.0,
                   help="last-window p99 may exceed the first by this much, percent (default 10: machine noise)")
    p.add_argument("--max-gap", type=float, default=3.0, help="max seconds between two messages of a camera")
    p.add_argument("--max-lost", type=float, default=1.0, help="max percent of frames behind/overwritten")
    return p


def _summary_lines(result: dict[str, Any]) -> list[str]:
    lat = result["latency"]
    win = result["windows"]
    lines = [f"run {result['rundir']} (startup {result['startup_s']} s, windows: warm-up "
             f"{win['warmup_s']:g} s, first {win['first']}, last {win['last']})"]
    for role, g in result["rss"].items():
        lines.append(f"  RSS {role:<10} first {g['first_mean_kb'] / 1024:8.1f} MiB  last "
                     f"{(g['last_mean_kb'] or 0) / 1024:8.1f} MiB  growth {g['growth_pct']:+.2f} %")
    for name in ("first", "last", "whole"):
        lines.append(f"  latency {name:<6} {lat[name]}")
    for cam, c in result["cameras"].items():
        drops = result["drops"]["after_warmup"].get(cam, {})
        lines.append(f"  {cam}: {c['messages']} messages, max gap {c['max_gap_s']:.2f} s, drops after warm-up {drops}")
    cpu = result["cpu_cores"]
    for name in ("first", "last"):
        lines.append(f"  CPU cores, {name} window: daemon {cpu[name]['daemon']}, other processes on the machine "
                     f"{cpu[name]['other_processes']}")
    if not cpu["quiet"]:
        lines.append(f"  NOTE: {cpu['note']}")
    for r in result["reloads"]:
        lines.append(f"  reload t={r['t']:.0f}s -> variant {r['to_variant']}: {'ok' if r['ok'] else 'FAIL'}: "
                     f"{r['summary']}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.minutes <= 0 or args.reload_every <= 0 or args.cameras < 1 or args.fps <= 0 or args.sample_every <= 0:
        print("soak: --minutes, --reload-every, --cameras, --fps and --sample-every must be positive", file=sys.stderr)
        return 2
    try:
        result = Soak(args).run()
    except (RuntimeError, OSError, ValueError, StreamdetError) as exc:
        print(f"soak: error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(_summary_lines(result)))
    print(report.table([report.Criterion(**c) for c in result["criteria"]]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    print("PASS" if result["passed"] else "FAIL")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
