"""Tracking through the running daemon: what it publishes scores as `streamdet val --track` says.

`streamdet run` with `tracking: {enabled: true}` serves one generated clip with object ids as two
unpaced file cameras (`realtime: false`: every frame, in order): one at detect_every 1, one at 3.
Every message is collected and matched to the ground truth by its frame index; the published boxes
with their track ids are scored with streamdet.mot_metrics. IDF1 must be >= 0.9 at detect_every 1,
and both cameras must score what `streamdet val --track` measures on the same clip (within 0.02):
val replays the daemon's own tracking step, so the two may only differ by batching noise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamdet.datasets.shapes import write_clip
from streamdet.mot_metrics import MotAccumulator
from streamdet.pipeline.settings import InferenceOptions
from streamdet.val_track import read_track_truth, run_val_track
from tests.e2e.test_daemon import free_port
from tests.helpers.daemon import run_until_published

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
DEMO_WEIGHTS = REPO / "configs" / "demo" / "shapes_yolov5n.pt"
W, H, FRAMES, SEED, IMG_SIZE = 320, 240, 60, 34, 320  # seed 34: eight objects that cross and hide each other
CAMERAS = {"every1": 1, "every3": 3}


def collect(tmp_path: Path, clip: Path) -> dict[str, list[dict]]:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    cams = "\n".join(f'  - {{id: {cam}, url: "{clip}", realtime: false, detect_every: {n}}}'
                     for cam, n in CAMERAS.items())
    config = tmp_path / "track.yaml"
    config.write_text(
        f'model: {{weights: "{DEMO_WEIGHTS}", img_size: {IMG_SIZE}}}\ntracking: {{enabled: true}}\n'
        f'publish: {{endpoint: "{endpoint}"}}\nbatching: {{max_batch: 2, max_wait_ms: 20}}\ncameras:\n{cams}\n'
    )
    return run_until_published(config, endpoint, FRAMES * len(CAMERAS), 120)


def test_daemon_tracking_accuracy(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", width=W, height=H, frames=FRAMES, seed=SEED)
    truth = read_track_truth(clip)
    got = collect(tmp_path, clip)
    val = run_val_track(InferenceOptions(DEMO_WEIGHTS, img_size=IMG_SIZE), [clip], detect_every=tuple(CAMERAS.values()),
                        progress=False)
    for (cam, every), cell in zip(CAMERAS.items(), val.cells, strict=True):
        msgs = got[cam]
        assert [m["frame"] for m in msgs] == list(range(FRAMES)), f"{cam}: frames lost or repeated"
        assert [m["inferred"] for m in msgs] == [i % every == 0 for i in range(FRAMES)], cam
        acc = MotAccumulator()
        for m in msgs:
            gt = truth[m["frame"]]
            assert abs(m["pts"] - gt.pts) < 1e-3
            boxes = np.asarray([d["box"] for d in m["detections"]], np.float64).reshape(-1, 4)
            ids = np.asarray([d["track_id"] for d in m["detections"]], np.int64)
            acc.update(gt.boxes[:, :4], gt.ids, boxes, ids)
        s = acc.scores()
        print(f"{cam}: daemon MOTA {s.mota:.4f} IDF1 {s.idf1:.4f} IDsw {s.id_switches}; "
              f"val --track MOTA {cell.scores.mota:.4f} IDF1 {cell.scores.idf1:.4f} IDsw {cell.scores.id_switches}")
        assert s.num_gt == cell.scores.num_gt == sum(len(gt.boxes) for gt in truth)
        if every == 1:
            assert s.idf1 >= 0.9, s
        assert abs(s.idf1 - cell.scores.idf1) <= 0.02 and abs(s.mota - cell.scores.mota) <= 0.02, (cam, s, cell)
