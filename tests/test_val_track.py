"""`streamdet val --track`: the daemon's detector and tracking step scored with CLEAR MOT / IDF1 on clips with ids."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from streamdet.cli import main
from streamdet.config.tracking import TrackingConfig
from streamdet.datasets import shapes
from streamdet.datasets.groundtruth import DatasetError, read_groundtruth
from streamdet.pipeline.settings import InferenceOptions
from streamdet.val_track import (
    MAX_DETECT_EVERY,
    TRACK_CONF,
    TRACK_IOU,
    find_clips,
    gt_detections,
    parse_detect_every,
    read_track_truth,
    run_val_track,
    track_clip,
    val_track_main,
)

REPO = Path(__file__).resolve().parents[1]
DEMO_WEIGHTS = REPO / "configs" / "demo" / "shapes_yolov5n.pt"
W, H, FRAMES, SEED = 320, 240, 40, 34  # seed 34: eight objects, crossings and occlusions in 40 frames
SETTINGS = TrackingConfig().tracker_settings()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shapes.write_clip(tmp_path_factory.mktemp("track") / "c.mp4", width=W, height=H, frames=FRAMES, seed=SEED)


def _objects(clip: Path) -> int:
    return len({int(i) for gt in read_track_truth(clip) for i in gt.ids})  # type: ignore[union-attr]


def test_defaults_are_the_daemons() -> None:
    from streamdet.config.schema import ModelConfig

    model = ModelConfig(weights=DEMO_WEIGHTS)
    assert (model.conf_thres, model.iou_thres) == (TRACK_CONF, TRACK_IOU)


def test_parse_detect_every() -> None:
    assert parse_detect_every("1,2,3") == (1, 2, 3)
    assert parse_detect_every(" 3, 1 ,3") == (3, 1)  # order kept, repeats dropped
    assert parse_detect_every(str(MAX_DETECT_EVERY)) == (MAX_DETECT_EVERY,)
    for bad in ("0", "1,x", "", "2,,3", str(MAX_DETECT_EVERY + 1), "-1", "1.5"):
        with pytest.raises(ValueError, match="--detect-every"):
            parse_detect_every(bad)


def test_perfect_detections_track_perfectly(clip: Path) -> None:
    """Ground truth fed as detections through CameraTracks: the tracker's ceiling on this clip."""
    truth = read_track_truth(clip)
    assert _objects(clip) >= 4  # enough objects for identity to be at stake
    s1 = track_clip(gt_detections(truth), truth, 1, SETTINGS, (W, H))
    assert s1.num_gt == sum(len(gt.boxes) for gt in truth) and s1.frames == FRAMES
    assert (s1.mota, s1.idf1, s1.id_switches, s1.fp, s1.fn) == (1.0, 1.0, 0, 0, 0)
    s3 = track_clip(gt_detections(truth), truth, 3, SETTINGS, (W, H))
    assert s3.mota >= 0.95 and s3.idf1 >= 0.95 and s3.id_switches == 0


def test_skipped_frames_detections_are_not_used(clip: Path) -> None:
    """With detect_every 3 only frames 0, 3, 6, ... reach the tracker, as in the worker; the others are predicted."""
    truth = read_track_truth(clip)
    perfect = gt_detections(truth)
    junk = [d if i % 3 == 0 else np.array([[0, 0, W, H, 0.99, 0]], np.float32) for i, d in enumerate(perfect)]
    assert track_clip(junk, truth, 3, SETTINGS, (W, H)) == track_clip(perfect, truth, 3, SETTINGS, (W, H))
    assert track_clip(junk, truth, 1, SETTINGS, (W, H)).fp >= FRAMES * 2 // 3  # at 1 the junk is tracked


def test_demo_model_scores_and_determinism(clip: Path) -> None:
    kwargs = dict(detect_every=(1, 3), progress=False)
    first = run_val_track(InferenceOptions(DEMO_WEIGHTS, img_size=W), [clip], **kwargs).to_dict()
    again = run_val_track(InferenceOptions(DEMO_WEIGHTS, img_size=W), [clip], **kwargs).to_dict()
    first.pop("seconds"), again.pop("seconds")
    assert first == again
    n_gt = sum(len(gt.boxes) for gt in read_track_truth(clip))
    one, three = first["cells"]
    assert (one["detect_every"], three["detect_every"]) == (1, 3)
    assert one["num_gt"] == three["num_gt"] == n_gt and one["frames"] == FRAMES
    assert first["tracker"] == SETTINGS and first["conf_thres"] == TRACK_CONF
    assert one["idf1"] >= 0.9 and one["mota"] >= 0.85 and one["id_switches"] <= 3, one
    assert three["idf1"] >= 0.8 and three["mota"] >= 0.75, three
    assert one["mota"] == pytest.approx(1 - (one["fp"] + one["fn"] + one["id_switches"]) / n_gt)


def test_cli_track_json_equals_run_val_track(clip: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["val", str(clip), "--track", "--weights", str(DEMO_WEIGHTS), "--img-size", str(W),
                 "--detect-every", "2", "--json"])
    assert code == 0
    got = json.loads(capsys.readouterr().out)
    options = InferenceOptions(DEMO_WEIGHTS, img_size=W)
    want = run_val_track(options, [clip], detect_every=(2,), progress=False).to_dict()
    got.pop("seconds"), want.pop("seconds")
    assert got == want


def test_table_names_every_cell(clip: Path) -> None:
    out = io.StringIO()
    assert val_track_main(InferenceOptions(DEMO_WEIGHTS, img_size=W), [clip], out=out, detect_every=(1, 2),
                          progress=False) == 0
    rows = [line for line in out.getvalue().splitlines() if line.startswith(str(clip)[-28:])]
    assert [int(r.split()[2]) for r in rows] == [1, 2]


def test_clip_without_ids_is_an_error_naming_it(clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bare = tmp_path / "bare.mp4"
    bare.write_bytes(clip.read_bytes())
    lines = [json.loads(line) for line in clip.with_suffix(".jsonl").read_text().splitlines()]
    bare.with_suffix(".jsonl").write_text("".join(json.dumps({k: v for k, v in d.items() if k != "ids"}) + "\n"
                                                  for d in lines))
    assert read_groundtruth(bare.with_suffix(".jsonl"))[0].ids is None
    with pytest.raises(DatasetError, match=r"bare\.mp4.*no tracking ground truth.*bare\.jsonl"):
        run_val_track(InferenceOptions(DEMO_WEIGHTS), [clip, bare], progress=False)
    assert main(["val", "--track", "--weights", str(DEMO_WEIGHTS), str(bare)]) == 1
    assert "bare.mp4" in capsys.readouterr().err


def test_folders_stand_for_their_clips(clip: Path, tmp_path: Path) -> None:
    for name in ("b.mp4", "a.mkv", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert find_clips([tmp_path, clip]) == [tmp_path / "a.mkv", tmp_path / "b.mp4", clip]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no video clips"):
        find_clips([empty])
    with pytest.raises(DatasetError, match="clip not found"):
        find_clips([tmp_path / "missing.mp4"])


@pytest.mark.parametrize("args, message", [
    (["--track", "--devices", "cpu,cpu"], "--devices"),
    (["--detect-every", "2"], "needs --track"),
    (["--track", "--detect-every", "0"], "--detect-every"),
])
def test_cli_usage_errors(clip: Path, args: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["val", "--weights", str(DEMO_WEIGHTS), str(clip), *args]) == 2
    assert message in capsys.readouterr().err


def test_cli_val_without_track_takes_one_positional_or_data(capsys: pytest.CaptureFixture, clip: Path) -> None:
    assert main(["val", "--weights", str(DEMO_WEIGHTS)]) == 2
    assert main(["val", "--weights", str(DEMO_WEIGHTS), str(clip), "--data", str(clip)]) == 2
    assert "several clips need --track" in capsys.readouterr().err
