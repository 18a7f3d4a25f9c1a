"""tools/web_cost.py: its daemon configuration is valid, unpaced and has the live view on; the table
shows every phase and the mean of each side."""

from __future__ import annotations

import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[2] / "tools"
sys.path.insert(0, str(TOOLS))

import web_cost  # noqa: E402

from streamdet.config.loader import parse_config  # noqa: E402


def test_config_is_valid_unpaced_with_the_live_view(tmp_path: Path) -> None:
    clips = {cam: tmp_path / f"{cam}.mp4" for cam in web_cost.CAMERAS}
    for path in clips.values():
        path.write_bytes(b"v")
    cfg = parse_config(web_cost.config(clips, f"ipc://{tmp_path}/p.sock", 3.0), tmp_path, env={})
    assert cfg.web is not None and cfg.web.max_fps == 3.0 and cfg.web.port == 0
    assert [c.id for c in cfg.cameras] == list(web_cost.CAMERAS)
    assert all(not c.realtime and c.loop for c in cfg.cameras)


def test_table_lists_phases_and_means() -> None:
    phase = {"fps": {"a": 10.0, "b": 12.0}, "supervisor_cpu_pct": 1.0, "pictures_per_viewer_s": 0.0}
    result = {"phases": [
        {**phase, "viewers_per_camera": 0, "fps_total": 22.0},
        {**phase, "viewers_per_camera": 2, "fps_total": 20.0, "supervisor_cpu_pct": 9.0},
        {**phase, "viewers_per_camera": 0, "fps_total": 24.0},
        {**phase, "viewers_per_camera": 2, "fps_total": 18.0, "supervisor_cpu_pct": 7.0},
    ]}
    lines = web_cost.table(result).splitlines()
    assert len(lines) == 2 + 4 + 2
    assert lines[-2] == "| mean | 0 | 23.0 | | 1.0 % | |"
    assert lines[-1] == "| mean | 2 | 19.0 | | 8.0 % | |"
