"""What the live view costs the daemon: throughput with no viewer and with viewers, in one run.

    .venv/bin/python tools/web_cost.py [--phase-s 20] [--rounds 2] [--viewers 2] [--json out.json]

Starts ``streamdet run`` on two unpaced looping file cameras (``realtime: false``: the worker
runs flat out, so published frames per second is the daemon's throughput), the live view on,
and alternates phases: no viewer, then ``--viewers`` MJPEG viewers on every camera, and again
(``--rounds`` times), so that drift on a shared machine affects both sides alike. Per phase:
frames published per second (from the stats topic alone, which makes the workers send nothing
else), the supervisor's CPU use, and the pictures each viewer received per second. The clips
are the demo's two looks (``streamdet.datasets.shapes``, 1280x720), rendered into a temporary
directory. Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "configs" / "demo" / "shapes_yolov5n.pt"
CAMERAS = ("shapes-a", "shapes-b")


def config(clips: dict[str, Path], endpoint: str, max_fps: float) -> str:
    cams = "".join(f'  - {{id: {c}, url: "{p}", loop: true, realtime: false}}\n' for c, p in clips.items())
    return (f'model: {{weights: "{WEIGHTS}", img_size: 416, conf_thres: 0.4}}\n'
            f'devices: [cpu]\npublish: {{endpoint: "{endpoint}", stats_interval_s: 1.0}}\n'
            f"batching: {{max_batch: 2, max_wait_ms: 10}}\nweb: {{port: 0, max_fps: {max_fps}}}\ncameras:\n{cams}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Viewer(threading.Thread):
    """One MJPEG viewer of one camera, counting the pictures it receives."""

    def __init__(self, port: int, camera: str) -> None:
        super().__init__(daemon=True)
        self.port, self.camera = port, camera
        self.pictures = 0
        self.stop = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", f"/cameras/{self.camera}/stream.mjpeg")
            resp = conn.getresponse()
            if resp.status != 200:
                raise RuntimeError(f"{self.camera}: stream answered {resp.status}")
            while not self.stop.is_set():
                line = resp.readline()
                if not line:
                    return
                if line.lower().startswith(b"content-length:"):
                    resp.readline()  # X-Picture
                    resp.readline()  # blank line
                    resp.read(int(line.split(b":")[1]))
                    self.pictures += 1
        finally:
            conn.close()


def measure(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(REPO))
    from streamdet.client import Subscriber
    from streamdet.datasets.shapes import write_clip

    work = Path(tempfile.mkdtemp(prefix="sd-webcost-"))
    clips = {cam: write_clip(work / f"{cam}.mp4", width=1280, height=720, frames=100, seed=seed)
             for cam, seed in zip(CAMERAS, (9101, 9102), strict=True)}
    endpoint = f"ipc://{work}/pub.sock"
    (work / "cfg.yaml").write_text(config(clips, endpoint, args.max_fps))
    log_path = work / "daemon.log"
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", RUNTIME_DIRECTORY=str(work))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "streamdet", "run", str(work / "cfg.yaml")], stderr=log, env=env)
    stats: list[tuple[float, dict[str, Any]]] = []
    sub_stop = threading.Event()

    def collect() -> None:
        with Subscriber(endpoint, cameras=[], stats=True) as sub:
            while not sub_stop.is_set():
                msg = sub.recv(timeout=0.2)
                if msg is not None:
                    stats.append((time.monotonic(), msg))

    try:
        deadline = time.monotonic() + 300
        port = None
        while time.monotonic() < deadline and proc.poll() is None:
            text = log_path.read_text(errors="replace")
            m = re.search(r"live view on http://[^ ]+:(\d+)/", text)
            if m and "supervisor: ready" in text:
                port = int(m.group(1))
                break
            time.sleep(0.5)
        if port is None:
            raise RuntimeError(f"the daemon did not get ready:\n{log_path.read_text()[-3000:]}")
        collector = threading.Thread(target=collect, daemon=True)
        collector.start()
        time.sleep(args.warmup_s)
        phases = []
        for _ in range(args.rounds):
            for viewers_per_camera in (0, args.viewers):
                viewers = [Viewer(port, cam) for cam in CAMERAS for _ in range(viewers_per_camera)]
                for v in viewers:
                    v.start()
                time.sleep(2.0)  # settle: streams open, the sampler running
                t0, cpu0 = time.monotonic(), cpu_seconds(proc.pid)
                pics0 = [v.pictures for v in viewers]
                time.sleep(args.phase_s)
                t1, cpu1 = time.monotonic(), cpu_seconds(proc.pid)
                pics = [v.pictures - p for v, p in zip(viewers, pics0, strict=True)]
                for v in viewers:
                    v.stop.set()
                published = {cam: 0 for cam in CAMERAS}
                seconds = 0.0
                for t, msg in stats:
                    if t0 + 1.0 <= t <= t1:  # messages covering intervals inside the phase
                        seconds += float(msg["interval_s"]) if msg["source"] == stats[0][1]["source"] else 0.0
                        for cam, entry in msg["cameras"].items():
                            published[cam] += int(entry["published"])
                phases.append({
                    "viewers_per_camera": viewers_per_camera,
                    "seconds": round(seconds, 1),
                    "fps": {cam: round(n / seconds, 2) if seconds else None for cam, n in published.items()},
                    "fps_total": round(sum(published.values()) / seconds, 2) if seconds else None,
                    "supervisor_cpu_pct": round(100 * (cpu1 - cpu0) / (t1 - t0), 1),
                    "pictures_per_viewer_s": round(sum(pics) / len(pics) / (t1 - t0), 2) if pics else 0.0,
                })
                for v in viewers:
                    v.join(5)
        return {"phase_s": args.phase_s, "max_fps": args.max_fps, "viewers": args.viewers, "phases": phases,
                "cpus": os.cpu_count()}
    finally:
        sub_stop.set()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)


def table(result: dict[str, Any]) -> str:
    lines = ["| phase | viewers per camera | frames/s (both cameras) | per camera | supervisor CPU "
             "| pictures/s per viewer |", "|---|---|---|---|---|---|"]
    for i, p in enumerate(result["phases"], 1):
        per = ", ".join(f"{c} {v}" for c, v in p["fps"].items())
        lines.append(f"| {i} | {p['viewers_per_camera']} | {p['fps_total']} | {per} | {p['supervisor_cpu_pct']} % "
                     f"| {p['pictures_per_viewer_s']} |")
    for viewers in sorted({p["viewers_per_camera"] for p in result["phases"]}):
        same = [p for p in result["phases"] if p["viewers_per_camera"] == viewers and p["fps_total"]]
        if same:
            fps = sum(p["fps_total"] for p in same) / len(same)
            cpu = sum(p["supervisor_cpu_pct"] for p in same) / len(same)
            lines.append(f"| mean | {viewers} | {fps:.1f} | | {cpu:.1f} % | |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phase-s", type=float, default=20.0, help="seconds measured per phase")
    ap.add_argument("--rounds", type=int, default=2, help="no-viewer/viewer pairs")
    ap.add_argument("--viewers", type=int, default=2, help="MJPEG viewers per camera in the viewer phases")
    ap.add_argument("--max-fps", type=float, default=5.0, help="web.max_fps")
    ap.add_argument("--warmup-s", type=float, default=5.0, help="seconds after ready before measuring")
    ap.add_argument("--json", type=Path, help="write the result here")
    args = ap.parse_args()
    result = measure(args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
