#!/usr/bin/env python3
"""Score a model on held-out sets at several input sizes: the demo model's accuracy table.

    python tools/heldout_table.py --weights configs/demo/shapes_yolov5n.pt \\
        --set 640x480=data/heldout/480 --set 1280x720=data/heldout/720 --set 1920x1080=data/heldout/1080 \\
        --sizes 320 416 640 --json heldout.json

Every cell is ``streamdet val`` (the daemon's own preprocessing, model and postprocessing, conf
0.001, NMS IoU 0.6) of one set at one ``img_size``. Prints a Markdown table of mAP@0.5 and
mAP@0.5:0.95 and, with ``--targets``, checks the demo model's targets: mAP@0.5 >= 0.95 at the
configured size and >= 0.90 at every other size, mAP@0.5:0.95 >= 0.80 at the configured size.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streamdet.pipeline.settings import InferenceOptions
from streamdet.val import VAL_NMS, run_val

TARGET_MAP50_CONFIGURED = 0.95
TARGET_MAP50_OTHER = 0.90
TARGET_MAP50_95_CONFIGURED = 0.80


def _named_set(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"a set is NAME=PATH, got {text!r}")
    return name, Path(path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", required=True)
    p.add_argument("--set", dest="sets", type=_named_set, action="append", required=True, metavar="NAME=PATH")
    p.add_argument("--sizes", type=int, nargs="+", default=[320, 416, 640])
    p.add_argument("--configured", type=int, default=416, help="the configured size (targets; default 416)")
    p.add_argument("--backend", default="auto")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--json", type=Path, help="write every cell (with per-class APs) here")
    p.add_argument("--targets", action="store_true", help="exit 1 when a target is missed")
    return p


def misses(cells: Sequence[dict[str, Any]], configured: int) -> list[str]:
    """The targets a table misses, one line each (empty when all are met)."""
    out = []
    for c in cells:
        where = f"{c['set']} at {c['img_size']}"
        if c["img_size"] == configured:
            if c["map50"] < TARGET_MAP50_CONFIGURED:
                out.append(f"{where}: mAP@0.5 {c['map50']:.4f} < {TARGET_MAP50_CONFIGURED}")
            if c["map50_95"] < TARGET_MAP50_95_CONFIGURED:
                out.append(f"{where}: mAP@0.5:0.95 {c['map50_95']:.4f} < {TARGET_MAP50_95_CONFIGURED}")
        elif c["map50"] < TARGET_MAP50_OTHER:
            out.append(f"{where}: mAP@0.5 {c['map50']:.4f} < {TARGET_MAP50_OTHER}")
    return out


def markdown(cells: Sequence[dict[str, Any]], sizes: Sequence[int]) -> str:
    """One row per set, one ``mAP@0.5 / mAP@0.5:0.95`` column per size."""
    sets = list(dict.fromkeys(c["set"] for c in cells))
    head = "| set | images | " + " | ".join(f"img {s}: mAP@0.5 / @0.5:0.95" for s in sizes) + " |"
    rule = "|---|---|" + "---|" * len(sizes)
    rows = [head, rule]
    for name in sets:
        mine = {c["img_size"]: c for c in cells if c["set"] == name}
        images = next(iter(mine.values()))["images"]
        vals = [f"{mine[s]['map50']:.4f} / {mine[s]['map50_95']:.4f}" if s in mine else "-" for s in sizes]
        rows.append(f"| {name} | {images} | " + " | ".join(vals) + " |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    cells: list[dict[str, Any]] = []
    for name, path in a.sets:
        for size in a.sizes:
            t0 = time.perf_counter()
            options = InferenceOptions(a.weights, img_size=size, backend=a.backend, nms=VAL_NMS)
            r = run_val(options, path, batch_size=a.batch, progress=False)
            cell = {"set": name, "path": str(path), "img_size": size, **r.to_dict()}
            cells.append(cell)
            print(
                f"{name} img {size}: mAP@0.5 {r.map50:.4f} mAP@0.5:0.95 {r.map50_95:.4f} "
                f"({r.images} images, {time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    print()
    print(markdown(cells, a.sizes))
    missed = misses(cells, a.configured)
    if a.json:
        a.json.write_text(json.dumps({"weights": a.weights, "cells": cells, "missed": missed}, indent=1) + "\n")
    for line in missed:
        print(f"target missed: {line}")
    return 1 if (a.targets and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
