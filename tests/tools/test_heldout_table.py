"""tools/heldout_table.py: the targets it checks and the table it prints, and one real cell."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"
DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo" / "shapes_yolov5n.pt"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


table = _load("heldout_table")


def _cell(name: str, size: int, m50: float, m5095: float) -> dict:
    return {"set": name, "img_size": size, "map50": m50, "map50_95": m5095, "images": 10}


def test_targets_apply_per_size() -> None:
    good = [_cell("720", 416, 0.96, 0.81), _cell("720", 320, 0.91, 0.5), _cell("720", 640, 0.90, 0.5)]
    assert table.misses(good, 416) == []
    bad = [_cell("720", 416, 0.949, 0.81), _cell("720", 320, 0.899, 0.9), _cell("1080", 416, 0.99, 0.79)]
    missed = table.misses(bad, 416)
    assert len(missed) == 3
    assert "720 at 416: mAP@0.5 0.9490" in missed[0] and "720 at 320" in missed[1] and "0.5:0.95" in missed[2]
    # the configured size decides which target a cell is held to
    assert table.misses([_cell("720", 320, 0.93, 0.5)], 320) != []


def test_markdown_has_one_row_per_set_and_a_column_per_size() -> None:
    cells = [_cell("480", 320, 0.9, 0.7), _cell("480", 640, 0.95, 0.8), _cell("1080", 320, 0.5, 0.25)]
    text = table.markdown(cells, [320, 640]).splitlines()
    assert len(text) == 4
    assert text[2] == "| 480 | 10 | 0.9000 / 0.7000 | 0.9500 / 0.8000 |"
    assert text[3] == "| 1080 | 10 | 0.5000 / 0.2500 | - |"


def test_set_argument_is_name_equals_path() -> None:
    assert table._named_set("720=data/x") == ("720", Path("data/x"))
    with pytest.raises(Exception, match="NAME=PATH"):
        table._named_set("data/x")


def test_one_real_cell_scores_the_demo_model(tmp_path: Path) -> None:
    from streamdet.datasets.shapes import write_images
    from streamdet.datasets.shapes_look import VARIATIONS

    write_images(tmp_path / "set", 6, seed=77, sizes=(640, 480), variation=VARIATIONS["heldout"])
    out = tmp_path / "t.json"
    rc = table.main(["--weights", str(DEMO), "--set", f"480={tmp_path / 'set'}", "--sizes", "416",
                     "--json", str(out), "--backend", "torch"])  # fmt: skip
    assert rc == 0
    data = json.loads(out.read_text())
    (cell,) = data["cells"]
    assert cell["set"] == "480" and cell["img_size"] == 416 and cell["images"] == 6
    assert 0.5 < cell["map50"] <= 1.0  # the demo model finds shapes on held-out pictures
    assert data["missed"] == table.misses(data["cells"], 416)
