#!/usr/bin/env python3
"""Make synthetic "shapes" data (shared/specs/shapes-v1.md): a clip with ground truth, or still images.

    python tools/make_shapes.py clip OUT.mp4 [--width 1280 --height 720 --frames 250 --fps 25 --seed 0 --crf 23]
    python tools/make_shapes.py images OUT_DIR --count N [--seed 0] [--size WxH ...] [--workers K]

``--variation wide|heldout`` (both commands) draws each picture's look from a preset of
:data:`streamdet.datasets.shapes_look.VARIATIONS` (textures, gradients, tints, hard or soft edges,
and for stills H.264 compression); without it the fixed generator runs, byte-identical to the
original demo data.

A thin wrapper over :mod:`streamdet.datasets.shapes`. Output is deterministic per seed: still image
``i`` is seeded by ``(seed, i)``, so the number of workers does not change a single byte.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from streamdet.datasets import shapes
from streamdet.datasets.shapes_look import VARIATIONS
from streamdet.progress import Progress

CHUNK = 16  # images per worker task


def parse_size(text: str) -> tuple[int, int]:
    """``"1280x720"`` -> ``(1280, 720)``."""
    try:
        w, h = text.lower().split("x")
        size = int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, got {text!r}") from None
    if min(size) <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return size


def _write_chunk(
    out_dir: str, start: int, n: int, seed: int, sizes: list[tuple[int, int]], variation: str | None
) -> int:
    look = VARIATIONS[variation] if variation else None
    shapes.write_images(out_dir, n, seed=seed, sizes=sizes, start=start, variation=look)
    return n


def make_images(
    out_dir: Path,
    count: int,
    *,
    seed: int,
    sizes: list[tuple[int, int]],
    workers: int,
    progress: bool,
    variation: str | None = None,
) -> None:
    """Write ``count`` still images with ``workers`` processes (1 = in this process)."""
    bar = Progress(count, "images") if progress else None
    done = 0
    try:
        if workers <= 1:
            look = VARIATIONS[variation] if variation else None
            shapes.write_images(
                out_dir, count, seed=seed, sizes=sizes, progress=bar.set if bar else None, variation=look
            )
            return
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [
                pool.submit(_write_chunk, str(out_dir), s, min(CHUNK, count - s), seed, sizes, variation)
                for s in range(0, count, CHUNK)
            ]
            for fut in as_completed(futures):
                done += fut.result()
                if bar is not None:
                    bar.set(done)
    finally:
        if bar is not None:
            bar.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("clip", help="an H.264 clip and its ground truth (OUT.jsonl beside it)")
    p.add_argument("out", type=Path, help="output .mp4")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--frames", type=int, default=250)
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--crf", type=int, default=23, help="x264 constant quality, 20-28 (default 23)")
    p.add_argument("--variation", choices=sorted(VARIATIONS), help="draw the clip's look from this preset")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("images", help="still images in YOLO layout (OUT_DIR/images, OUT_DIR/labels)")
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--size",
        type=parse_size,
        action="append",
        metavar="WxH",
        help="image size (repeatable; drawn uniformly per image). Default: 1280x720, 1920x1080, 640x480",
    )
    p.add_argument("--workers", type=int, default=1, help=f"processes (default 1; this machine has {os.cpu_count()})")
    p.add_argument("--variation", choices=sorted(VARIATIONS), help="draw each image's look from this preset")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "clip":
            args.out.parent.mkdir(parents=True, exist_ok=True)
            bar = None if args.quiet else Progress(args.frames, "clip")
            try:
                path = shapes.write_clip(
                    args.out,
                    width=args.width,
                    height=args.height,
                    frames=args.frames,
                    fps=args.fps,
                    seed=args.seed,
                    crf=args.crf,
                    progress=bar.set if bar else None,
                    variation=VARIATIONS[args.variation] if args.variation else None,
                )
            finally:
                if bar is not None:
                    bar.close()
            print(f"wrote {path} and {path.with_suffix('.jsonl')}")
        else:
            if args.count < 1:
                raise ValueError(f"--count must be >= 1, got {args.count}")
            sizes = args.size or list(shapes.DEFAULT_SIZES)
            make_images(
                args.out,
                args.count,
                seed=args.seed,
                sizes=sizes,
                workers=args.workers,
                progress=not args.quiet,
                variation=args.variation,
            )
            print(f"wrote {args.count} images to {args.out / 'images'} and labels to {args.out / 'labels'}")
    except (ValueError, OSError) as exc:
        print(f"make_shapes: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ValueError) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
