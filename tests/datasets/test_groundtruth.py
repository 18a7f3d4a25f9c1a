"""JSON Lines ground truth: round trip, and validation errors that name the line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from streamdet.datasets.groundtruth import (
    DatasetError,
    GroundTruthFrame,
    format_groundtruth_line,
    groundtruth_path,
    read_groundtruth,
    write_groundtruth,
)


def test_round_trip(tmp_path: Path) -> None:
    frames = [
        GroundTruthFrame(0, 0.0, np.array([[1, 2, 30, 40, 2], [5, 6, 7.5, 8, 0]], np.float64)),
        GroundTruthFrame(1, 0.04, np.zeros((0, 5))),
    ]
    path = write_groundtruth(tmp_path / "c.jsonl", frames)
    lines = path.read_text().splitlines()
    assert json.loads(lines[0]) == {"frame": 0, "pts": 0.0, "boxes": [[1, 2, 30, 40, 2], [5, 6, 7.5, 8, 0]]}
    assert lines[0] == '{"frame": 0, "pts": 0.0, "boxes": [[1, 2, 30, 40, 2], [5, 6, 7.5, 8, 0]]}'
    back = read_groundtruth(path)
    assert [(g.frame, g.pts) for g in back] == [(0, 0.0), (1, 0.04)]
    assert np.array_equal(back[0].boxes, frames[0].boxes) and back[1].boxes.shape == (0, 5)
    assert groundtruth_path(tmp_path / "clip.mp4") == tmp_path / "clip.jsonl"


def test_ids_round_trip_and_files_without_ids(tmp_path: Path) -> None:
    frames = [
        GroundTruthFrame(0, 0.0, np.array([[1, 2, 30, 40, 2], [5, 6, 8, 9, 0]], np.float64), np.array([3, 0])),
        GroundTruthFrame(1, 0.04, np.zeros((0, 5)), np.zeros(0, np.int64)),
        GroundTruthFrame(2, 0.08, np.array([[1, 2, 30, 40, 2]], np.float64), np.array([3])),
    ]
    path = write_groundtruth(tmp_path / "t.jsonl", frames)
    assert json.loads(path.read_text().splitlines()[0])["ids"] == [3, 0]
    back = read_groundtruth(path)
    assert [g.ids.tolist() if g.ids is not None else None for g in back] == [[3, 0], [], [3]]
    assert all(g.ids is not None and g.ids.dtype == np.int64 for g in back)
    # files written before tracking ground truth have no ids, and neither does a frame given none
    old = write_groundtruth(tmp_path / "o.jsonl", [GroundTruthFrame(0, 0.0, frames[0].boxes)])
    assert "ids" not in old.read_text()
    assert read_groundtruth(old)[0].ids is None


def test_ids_must_match_the_boxes() -> None:
    with pytest.raises(ValueError, match="1 ids for 2 boxes"):
        format_groundtruth_line(0, 0.0, [[1, 1, 5, 5, 0], [2, 2, 6, 6, 1]], [4])


def test_blank_lines_and_extra_keys_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "g.jsonl"
    path.write_text('{"frame": 0, "pts": 0, "boxes": [], "note": "x"}\n\n{"frame": 1, "pts": 0.5, "boxes": []}\n\n')
    assert [g.frame for g in read_groundtruth(path)] == [0, 1]


GOOD = format_groundtruth_line(0, 0.0, [[1, 1, 5, 5, 0]])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"frame": 1, "pts": 0.1}', "missing key 'boxes'"),
        ('{"frame": 2, "pts": 0.1, "boxes": []}', "expected 1"),
        ('{"frame": true, "pts": 0.1, "boxes": []}', "must be an integer"),
        ('{"frame": 1, "pts": 0.0, "boxes": []}', "not after"),
        ('{"frame": 1, "pts": "0.1", "boxes": []}', "finite number"),
        ('{"frame": 1, "pts": 0.1, "boxes": {}}', "must be a list"),
        ('{"frame": 1, "pts": 0.1, "boxes": [[1, 2, 3, 4]]}', "box 0 must be"),
        ('{"frame": 1, "pts": 0.1, "boxes": [[1, 2, 3, 4, "a"]]}', "box 0 must be"),
        ('{"frame": 1, "pts": 0.1, "boxes": [[1, 1, 5, 5, 0], [5, 2, 5, 4, 0]]}', "box 1 .* is empty"),
        ('{"frame": 1, "pts": 0.1, "boxes": [[1, 2, 3, 4, 1.5]]}', "not a non-negative integer"),
        ('{"frame": 1, "pts": 0.1, "boxes": [[1, 2, 3, 4, -1]]}', "not a non-negative integer"),
        ('{"frame": 1, "pts": 0.1, "boxes": [[1, 2, 3, 4, 0]], "ids": 3}', "'ids' must be a list"),
        ('{"frame": 1, "pts": 0.1, "boxes": [[1, 2, 3, 4, 0]], "ids": []}', "'ids' has 0 entries for 1 boxes"),
        ('{"frame": 1, "pts": 0.1, "boxes": [[1, 2, 3, 4, 0]], "ids": [-1]}', "id 0 must be a non-negative integer"),
        ('{"frame": 1, "pts": 0.1, "boxes": [[1, 2, 3, 4, 0]], "ids": [1.5]}', "id 0 must be a non-negative integer"),
        ('{"frame": 1, "pts": 0.1, "boxes": [[1, 2, 3, 4, 0]], "ids": [true]}', "id 0 must be a non-negative integer"),
        ('{"frame": 1, "pts": 0.1, "boxes": [[1, 2, 3, 4, 0], [1, 2, 3, 4, 1]], "ids": [2, 2]}', "distinct"),
    ],
)
def test_errors_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "g.jsonl"
    path.write_text(f"{GOOD}\n\n{line}\n")
    with pytest.raises(DatasetError, match=message) as info:
        read_groundtruth(path)
    assert f"{path}:3:" in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        read_groundtruth(tmp_path / "none.jsonl")
