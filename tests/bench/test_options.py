"""`streamdet bench` options: --quick defaults, explicit options win, --skip, validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamdet.bench.options import QUICK, BenchSettings, settings_from_args
from streamdet.cli import build_parser, main
from streamdet.errors import ConfigError


def parse(*argv: str) -> BenchSettings:
    return settings_from_args(build_parser().parse_args(["bench", *argv]))


def test_defaults() -> None:
    s = parse()
    assert (s.cameras, s.width, s.height, s.img_size, s.rates, s.latency_ms) == (4, 1280, 720, 416, (5.0, 25.0), 200.0)
    assert s.weights.name == "shapes_yolov5n.pt" and s.weights.is_file()
    assert s.backend is None and not s.skip and not s.quick


def test_quick_and_explicit_options() -> None:
    s = parse("--quick")
    assert s.quick and (s.cameras, s.width, s.height, s.max_cameras) == (2, 320, 240, 2)
    assert s.rates == QUICK["rates"]
    s = parse("--quick", "--cameras", "3", "--rates", "5,25", "--backend", "onnxruntime", "--img-size", "320")
    assert (s.cameras, s.rates, s.backend, s.img_size, s.width) == (3, (5.0, 25.0), "onnxruntime", 320, 320)


def test_skip_parts() -> None:
    assert parse("--skip", "naive,capacity").skip == {"naive", "capacity"}
    assert parse("--skip", "naive", "--skip", "unpaced").skip == {"naive", "unpaced"}
    with pytest.raises(SystemExit):
        parse("--skip", "everything")
    with pytest.raises(SystemExit):
        parse("--rates", "5,-1")


@pytest.mark.parametrize("argv", [["--width", "321"], ["--img-size", "300"], ["--weights", "/nonexistent.pt"],
                                  ["--skip", "capacity", "--plot", "x.png"]])
def test_impossible_settings_are_usage_errors(argv: list[str], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError):
        parse(*argv).validate()
    assert main(["bench", "--workdir", str(tmp_path), *argv]) == 2
    assert "configuration error" in capsys.readouterr().err
    assert not (tmp_path / "clips").exists()  # rejected before any work


def test_settings_json_form() -> None:
    d = parse("--quick", "--skip", "naive").to_dict()
    assert d["skip"] == ["naive"] and isinstance(d["weights"], str) and d["rates"] == [5.0]


def test_tracking_option() -> None:
    assert parse().tracking == ()  # off unless asked for: existing runs are unchanged
    assert parse("--tracking", "3,1,3").tracking == (1, 3)  # sorted, once each
    assert parse("--quick", "--tracking", "2").tracking == (2,)
    assert parse("--tracking", "1,3").to_dict()["tracking"] == [1, 3]
    for bad in ("0", "1,x", "", "101"):
        with pytest.raises(SystemExit):
            parse("--tracking", bad)
