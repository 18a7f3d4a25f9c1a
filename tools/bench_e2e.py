"""End-to-end throughput of the daemon: N file cameras, measured by a subscriber.

Makes N synthetic shapes clips (once, cached in --workdir), runs `streamdet run` on them as
paced file cameras (25 fps each, like live cameras), and subscribes for --seconds after a
warm-up. Reports published frames/s in total and per camera, frames dropped because the worker
was behind, and capture-to-publish latency. Absolute numbers depend on the machine; compare
runs only on the same machine.

    python tools/bench_e2e.py --weights configs/demo/shapes_yolov5n.pt --cameras 4 --img-size 416
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from streamdet.client import Subscriber
from streamdet.datasets.shapes import write_clip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", required=True)
    p.add_argument("--cameras", type=int, default=4)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--img-size", type=int, default=416)
    p.add_argument("--max-batch", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--warmup", type=float, default=10.0)
    p.add_argument("--workdir", default="/tmp/streamdet-bench")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    clips = []
    for i in range(args.cameras):
        clip = work / f"cam{i}_{args.width}x{args.height}.mp4"
        if not clip.exists():
            write_clip(clip, width=args.width, height=args.height, frames=250, seed=8100 + i)
        clips.append(clip)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    cams = "\n".join(f'  - {{id: cam{i}, url: "{c}", loop: true}}' for i, c in enumerate(clips))
    config = work / "bench.yaml"
    config.write_text(
        f'model: {{weights: "{Path(args.weights).resolve()}", img_size: {args.img_size}}}\n'
        f"devices: [{args.device}]\n"
        f'publish: {{endpoint: "{endpoint}", stats_interval_s: 2}}\n'
        f"batching: {{max_batch: {args.max_batch}, max_wait_ms: 10}}\ncameras:\n{cams}\n"
    )
    proc = subprocess.Popen([sys.executable, "-m", "streamdet", "run", str(config)], stderr=subprocess.DEVNULL)
    sub = Subscriber(endpoint)
    try:
        deadline = time.monotonic() + 120
        while sub.recv(timeout=1.0) is None:
            if time.monotonic() > deadline or proc.poll() is not None:
                print("the daemon published nothing", file=sys.stderr)
                return 1
        t_warm = time.monotonic() + args.warmup
        while time.monotonic() < t_warm:
            sub.recv(timeout=0.2)
        counts: dict[str, int] = defaultdict(int)
        dropped: dict[str, int] = defaultdict(int)
        latency: list[float] = []
        t0 = time.monotonic()
        while (elapsed := time.monotonic() - t0) < args.seconds:
            msg = sub.recv(timeout=0.2)
            if msg is None:
                continue
            counts[msg["camera"]] += 1
            dropped[msg["camera"]] += msg["dropped"]
            latency.append((msg["ts_publish"] - msg["ts_capture"]) * 1000)
        elapsed = time.monotonic() - t0
    finally:
        sub.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    lat = np.asarray(latency)
    result = {
        "cameras": args.cameras,
        "resolution": f"{args.width}x{args.height}",
        "img_size": args.img_size,
        "device": args.device,
        "seconds": round(elapsed, 1),
        "fps_total": round(sum(counts.values()) / elapsed, 2),
        "fps_per_camera": {c: round(n / elapsed, 2) for c, n in sorted(counts.items())},
        "offered_fps_total": 25.0 * args.cameras,
        "dropped_total": int(sum(dropped.values())),
        "latency_ms_p50": round(float(np.percentile(lat, 50)), 1) if lat.size else None,
        "latency_ms_p95": round(float(np.percentile(lat, 95)), 1) if lat.size else None,
    }
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>18}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
