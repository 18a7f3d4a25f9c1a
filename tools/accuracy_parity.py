"""Accuracy does not move: mAP of the old BGR path, of `streamdet val` and of the daemon, per backend.

On shapes-v1 clips at 640x480, 1280x720 and 1920x1080 (made once in --workdir), with the demo
model, this scores:

- the BGR path the daemon used before YUV frames: PyAV's own bgr24 conversion of every frame
  (swscale), through ``Detector(backend="torch")``;
- ``streamdet val`` (the daemon's YUV frames and stages) with each installed backend;
- the daemon itself (``streamdet run``, the clips as lossless ``realtime: false`` cameras, every
  message matched to the ground truth by frame index) with each installed backend.

    python tools/accuracy_parity.py --img-size 416 --frames 150 --json accuracy.json
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np

from streamdet.bench.workload import free_port
from streamdet.client import Subscriber
from streamdet.datasets.groundtruth import read_groundtruth
from streamdet.datasets.shapes import write_clip
from streamdet.detector import Detector
from streamdet.evaluation import evaluate
from streamdet.pipeline.backends import available_backends
from streamdet.pipeline.settings import InferenceOptions, NmsSettings
from streamdet.val import run_val

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo" / "shapes_yolov5n.pt"
SIZES = {"vga": (640, 480), "hd": (1280, 720), "fhd": (1920, 1080)}
CONF, IOU = 0.001, 0.6


def bgr_path_map(clip: Path, img_size: int) -> float:
    """mAP@0.5 of PyAV's bgr24 frames through the torch backend (the pre-YUV daemon path)."""
    det = Detector(DEMO, img_size=img_size, conf_thres=CONF, iou_thres=IOU, backend="torch")
    truth = read_groundtruth(clip.with_suffix(".jsonl"))
    preds = []
    with av.open(str(clip)) as container:
        for frame in container.decode(video=0):
            preds.append(det([frame.to_ndarray(format="bgr24")])[0])
    return evaluate(preds, [t.boxes for t in truth], len(det.names)).map50


def daemon_maps(clips: dict[str, Path], img_size: int, backend: str, workdir: Path) -> dict[str, float]:
    """mAP@0.5 per clip of the daemon's messages (lossless file cameras, every frame once)."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    cams = "\n".join(f'  - {{id: {cam}, url: "{path}", realtime: false}}' for cam, path in clips.items())
    config = workdir / f"parity-{backend}.yaml"
    config.write_text(
        f'model: {{weights: "{DEMO}", img_size: {img_size}, conf_thres: {CONF}, iou_thres: {IOU}, '
        f'backend: {backend}}}\npublish: {{endpoint: "{endpoint}", hwm: 100000}}\n'
        f"batching: {{max_batch: 3, max_wait_ms: 20}}\ncameras:\n{cams}\n"
    )
    truths = {cam: read_groundtruth(path.with_suffix(".jsonl")) for cam, path in clips.items()}
    expected = sum(len(t) for t in truths.values())
    got: dict[str, dict[int, np.ndarray]] = {cam: {} for cam in clips}
    sub = Subscriber(endpoint)
    log = (workdir / f"parity-{backend}.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "streamdet", "run", str(config)], stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 600
        while sum(map(len, got.values())) < expected and time.monotonic() < deadline:
            msg = sub.recv(timeout=1.0)
            if msg is not None:
                dets = [[*d["box"], d["score"], d["class_id"]] for d in msg["detections"]]
                got[msg["camera"]][msg["frame"]] = np.asarray(dets, np.float32).reshape(-1, 6)
    finally:
        sub.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        log.close()
    out = {}
    for cam, truth in truths.items():
        if len(got[cam]) != len(truth):
            raise SystemExit(f"daemon ({backend}) published {len(got[cam])} of {len(truth)} frames of {cam}")
        preds = [got[cam][t.frame] for t in truth]
        out[cam] = evaluate(preds, [t.boxes for t in truth], 3).map50
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--img-size", type=int, default=416)
    p.add_argument("--frames", type=int, default=150)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/streamdet-parity"))
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    clips = {}
    for i, (cam, (w, h)) in enumerate(SIZES.items()):
        clip = args.workdir / f"{cam}_{w}x{h}_{args.frames}f.mp4"
        if not clip.exists():
            write_clip(clip, width=w, height=h, frames=args.frames, seed=9300 + i)
        clips[cam] = clip
    results: dict[str, dict[str, float]] = {"bgr_torch": {}}
    for cam, clip in clips.items():
        results["bgr_torch"][cam] = bgr_path_map(clip, args.img_size)
    for backend in available_backends("cpu"):
        options = InferenceOptions(DEMO, img_size=args.img_size, backend=backend, nms=NmsSettings(CONF, IOU))
        results[f"val_{backend}"] = {cam: run_val(options, clip, progress=False).map50 for cam, clip in clips.items()}
        results[f"daemon_{backend}"] = daemon_maps(clips, args.img_size, backend, args.workdir)
    ref = results["bgr_torch"]
    print(f"mAP@0.5 at img_size {args.img_size}, {args.frames} frames per clip; largest |difference| from bgr_torch")
    print(f"{'path':<22}" + "".join(f"{cam:>10}" for cam in clips) + f"{'max diff':>10}")
    for name, maps in results.items():
        diff = max(abs(maps[c] - ref[c]) for c in clips)
        print(f"{name:<22}" + "".join(f"{maps[c]:>10.4f}" for c in clips) + f"{diff:>10.4f}")
    if args.json:
        args.json.write_text(json.dumps({"img_size": args.img_size, "frames": args.frames, "map50": results},
                                        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
