"""Accuracy through the daemon equals `streamdet val` accuracy on the same frames.

`streamdet run` serves three generated shapes clips (640x480, 1280x720, 1920x1080) as unpaced
file cameras (`realtime: false`: lossless) with the bundled demo model. Every frame must be
published exactly once, in order, start-up included (file cameras wait for the worker). The
messages are matched to the ground truth by `pts` and scored; the same frames then go through
the Detector that `streamdet val` uses (the same YUV frames, the same backend), one at a time as
val does. mAP@0.5 must agree within 0.02 per resolution: proof that boxes are mapped back to each
frame's own pixels correctly, also when frames of different sizes share one batch in the worker.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamdet.datasets.groundtruth import read_groundtruth
from streamdet.datasets.shapes import write_clip
from streamdet.detector import Detector
from streamdet.evaluation import evaluate
from streamdet.val import iter_clip
from tests.e2e.test_daemon import free_port
from tests.helpers.daemon import run_until_published

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
DEMO_WEIGHTS = REPO / "configs" / "demo" / "shapes_yolov5n.pt"
RESOLUTIONS = {"vga": (640, 480), "hd": (1280, 720), "fhd": (1920, 1080)}
FRAMES = 90
CONF, IOU = 0.001, 0.6


def demo_img_size() -> int:
    import yaml

    return int(yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())["model"].get("img_size", 640))


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("acc")
    return {
        cam: write_clip(d / f"{cam}.mp4", width=w, height=h, frames=FRAMES, seed=7000 + i)
        for i, (cam, (w, h)) in enumerate(RESOLUTIONS.items())
    }


def collect_daemon_messages(tmp_path: Path, clips: dict[str, Path], img_size: int) -> dict[str, list[dict]]:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    cams = "\n".join(f'  - {{id: {cam}, url: "{path}", realtime: false}}' for cam, path in clips.items())
    config = tmp_path / "acc.yaml"
    config.write_text(
        f'model: {{weights: "{DEMO_WEIGHTS}", img_size: {img_size}, conf_thres: {CONF}, iou_thres: {IOU}}}\n'
        f'publish: {{endpoint: "{endpoint}"}}\nbatching: {{max_batch: 3, max_wait_ms: 20}}\ncameras:\n{cams}\n'
    )
    return run_until_published(config, endpoint, FRAMES * len(clips), 300)


def test_daemon_accuracy_matches_val(tmp_path: Path, clips: dict[str, Path]) -> None:
    img_size = demo_img_size()
    got = collect_daemon_messages(tmp_path, clips, img_size)
    detector = Detector(DEMO_WEIGHTS, img_size=img_size, conf_thres=CONF, iou_thres=IOU, backend="auto")
    nc = len(detector.names)
    for cam, (w, h) in RESOLUTIONS.items():
        msgs = got[cam]
        assert [m["frame"] for m in msgs] == list(range(FRAMES)), f"{cam}: frames lost or repeated"
        assert all(m["dropped"] == 0 for m in msgs)
        truth = read_groundtruth(clips[cam].with_suffix(".jsonl"))
        by_pts = {round(t.pts, 3): t for t in truth}
        daemon_preds, gts, frame_ids = [], [], []
        for m in msgs:
            assert (m["width"], m["height"]) == (w, h)
            t = by_pts[round(m["pts"], 3)]  # KeyError = a pts the clip does not have
            frame_ids.append(t.frame)
            gts.append(t.boxes)
            dets = [[*d["box"], d["score"], d["class_id"]] for d in m["detections"]]
            daemon_preds.append(np.asarray(dets, np.float32).reshape(-1, 6))
        daemon = evaluate(daemon_preds, gts, nc)

        wanted = set(frame_ids)
        _, frames = iter_clip(clips[cam])
        val_preds = {}
        for i, (image, _gt) in enumerate(frames):
            if i in wanted:
                (val_preds[i],) = detector([image])
        val = evaluate([val_preds[i] for i in frame_ids], gts, nc)

        print(f"{cam} {w}x{h}: {len(msgs)} frames, mAP@0.5 daemon {daemon.map50:.4f} val {val.map50:.4f}; "
              f"mAP@0.5:0.95 daemon {daemon.map50_95:.4f} val {val.map50_95:.4f}")
        assert daemon.map50 > 0.8, f"{cam}: the demo model should detect shapes (mAP@0.5 {daemon.map50:.3f})"
        assert abs(daemon.map50 - val.map50) <= 0.02, (cam, daemon.map50, val.map50)
