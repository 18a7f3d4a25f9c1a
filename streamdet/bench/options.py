"""Options of ``streamdet bench``: the argparse arguments and the settings they resolve to.

Kept free of heavy imports, because ``streamdet.cli`` builds its parser from here. Every option
defaults to ``None`` in argparse so that ``--quick`` can supply tiny settings while any option
given explicitly still wins.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

SKIPPABLE = ("naive", "unpaced", "capacity")
DESCRIPTION = (
    "Measure streamdet and a naive single-process detection loop (round-robin OpenCV reads, torch, NMS) on "
    "the same synthetic clips, model and machine: unpaced frames/s and frames lost, the most 25 fps cameras "
    "each holds at each detection rate (< 1 % dropped, p99 latency under the bound), and the daemon's "
    "per-stage costs. Progress on stderr, a table on stdout."
)
DEMO_WEIGHTS = Path(__file__).resolve().parents[2] / "configs" / "demo" / "shapes_yolov5n.pt"


@dataclass(frozen=True)
class BenchSettings:
    """Everything one benchmark run needs."""

    weights: Path = DEMO_WEIGHTS
    img_size: int = 416
    device: str = "cpu"
    backend: str | None = None
    cameras: int = 4
    width: int = 1280
    height: int = 720
    frames: int = 250
    seconds: float = 10.0
    warmup_s: float = 3.0
    max_cameras: int = 16
    latency_ms: float = 200.0
    max_drop_pct: float = 1.0
    rates: tuple[float, ...] = (5.0, 25.0)
    tracking: tuple[int, ...] = ()  # detect_every values measured with tracking on (none: tracking not measured)
    budget_s: float = 300.0
    stats_interval_s: float = 2.0
    skip: frozenset[str] = frozenset()
    workdir: Path = Path(tempfile.gettempdir()) / "streamdet-bench"
    json_path: Path | None = None
    plot_path: Path | None = None
    quick: bool = False

    def validate(self) -> None:
        """Raise ConfigError for settings that cannot work (before anything slow starts)."""
        from streamdet.errors import ConfigError

        problems = []
        if self.width % 2 or self.height % 2:
            problems.append(f"--width/--height must be even (H.264 yuv420p clips), got {self.width}x{self.height}")
        if self.img_size % 32:
            problems.append(f"--img-size must be a multiple of 32, got {self.img_size}")
        if not Path(self.weights).is_file():
            problems.append(f"--weights: file not found: {self.weights}")
        if self.plot_path is not None and "capacity" in self.skip:
            problems.append("--plot draws the capacity curves; it cannot be used with --skip capacity")
        if problems:
            raise ConfigError("; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        d = asdict(self)
        d["skip"] = sorted(self.skip)
        d["rates"] = list(self.rates)
        d["tracking"] = list(self.tracking)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


#: what ``--quick`` changes (a smoke run: 2 tiny cameras, capacity capped at 2, one rate, and the
#: daemon on the torch backend, which skips the one-time ONNX export of a fresh machine)
QUICK: dict[str, Any] = {
    "backend": "torch", "cameras": 2, "width": 320, "height": 240, "frames": 20, "img_size": 256, "seconds": 2.0,
    "warmup_s": 1.0, "max_cameras": 2, "rates": (5.0,), "budget_s": 60.0, "stats_interval_s": 0.5,
}


def _rates(text: str) -> tuple[float, ...]:
    try:
        rates = tuple(float(r) for r in text.split(",") if r.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated rates like 5,25, got {text!r}") from None
    if not rates or any(r <= 0 for r in rates):
        raise argparse.ArgumentTypeError(f"rates must be > 0, got {text!r}")
    return rates


def _detect_every(text: str) -> tuple[int, ...]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected detect_every values like 1,3, got {text!r}") from None
    if not values or any(not 1 <= v <= 100 for v in values):
        raise argparse.ArgumentTypeError(f"detect_every values must be in 1..100, got {text!r}")
    return tuple(sorted(set(values)))


def _skip(text: str) -> list[str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in parts if p not in SKIPPABLE]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown part {', '.join(bad)} (choose from {', '.join(SKIPPABLE)})")
    return parts


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    return parse


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``bench`` options to a (sub)parser."""
    d = BenchSettings()
    p.add_argument("--weights", type=Path, help=f"YOLOv5 checkpoint (default: the demo model {DEMO_WEIGHTS.name})")
    p.add_argument("--img-size", type=_positive(int), help=f"model input long side (default: {d.img_size})")
    p.add_argument("--device", help=f"cpu or cuda:N, for both systems (default: {d.device})")
    p.add_argument("--backend", help="daemon model.backend (auto|torch|onnxruntime|openvino; default: the daemon's)")
    p.add_argument("--cameras", type=_positive(int), help=f"cameras of the unpaced runs (default: {d.cameras})")
    p.add_argument("--width", type=_positive(int), help=f"clip width (default: {d.width})")
    p.add_argument("--height", type=_positive(int), help=f"clip height (default: {d.height})")
    p.add_argument("--frames", type=_positive(int), help=f"frames per clip (default: {d.frames})")
    p.add_argument("--seconds", type=_positive(float),
                   help=f"measured seconds per capacity trial (default: {d.seconds:g})")
    p.add_argument("--max-cameras", type=_positive(int), help=f"capacity search cap (default: {d.max_cameras})")
    p.add_argument("--latency-ms", type=_positive(float),
                   help=f"p99 capture-to-publish bound of a held camera (default: {d.latency_ms:g})")
    p.add_argument("--rates", type=_rates, help="detection rates per camera for the capacity search (default: 5,25)")
    p.add_argument("--tracking", type=_detect_every, metavar="N[,N...]",
                   help="also measure streamdet with tracking on, at each of these detect_every values (e.g. 1,3): "
                        "unpaced frames/s, capacity at each rate and the tracker's cost per frame (default: off)")
    p.add_argument("--budget", type=_positive(float), dest="budget_s",
                   help=f"seconds at most per capacity search (system x rate) (default: {d.budget_s:g})")
    p.add_argument("--skip", type=_skip, action="append", default=[],
                   help="leave out parts: naive, unpaced (streamdet's), capacity; comma-separated or repeated")
    p.add_argument("--workdir", type=Path, help=f"clips, configs and daemon logs (default: {d.workdir})")
    p.add_argument("--json", type=Path, dest="json_path", metavar="PATH", help="write the results as JSON")
    p.add_argument("--plot", type=Path, dest="plot_path", metavar="PATH.png",
                   help="draw the capacity curves (needs matplotlib: pip install 'streamdet[bench]')")
    p.add_argument("--quick", action="store_true", help="tiny settings for a smoke test (explicit options still win)")


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    """Resolve parsed arguments: explicit option > ``--quick`` value > default."""
    settings = replace(BenchSettings(), **QUICK) if args.quick else BenchSettings()
    given: dict[str, Any] = {}
    for name in ("weights", "img_size", "device", "backend", "cameras", "width", "height", "frames", "seconds",
                 "max_cameras", "latency_ms", "rates", "tracking", "budget_s", "workdir", "json_path", "plot_path"):
        value = getattr(args, name, None)
        if value is not None:
            given[name] = value
    skip = frozenset(p for group in (args.skip or []) for p in group)
    return replace(settings, **given, skip=skip, quick=bool(args.quick))
