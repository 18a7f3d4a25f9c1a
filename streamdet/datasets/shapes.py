"""Synthetic "shapes" data made to ``shared/specs/shapes-v1.md``: clips and still images.

Classes 0 circle, 1 square, 2 triangle (:data:`CLASS_NAMES`). Everything is deterministic per seed
(numpy ``Generator`` s seeded from ``SeedSequence(seed, spawn_key=...)``).

Choices the spec leaves open, fixed here:

- Anti-aliasing: each object's coverage ``alpha`` of a pixel is ``clip(0.5 - d, 0, 1)`` where ``d``
  is the signed distance (pixels) from the pixel centre to the shape's outline (negative inside);
  the colour is blended with it. A pixel is **covered** (part of the object's mask) when
  ``alpha > 0.5``, i.e. when its centre lies strictly inside the geometric shape. The ground-truth
  box is the tight box of the covered pixels, ``x2``/``y2`` one past the last covered column/row,
  taken over the object's whole mask even where later objects cover it. Edge pixels with
  ``0 < alpha <= 0.5`` are tinted but lie outside the box (at most one pixel).
- Geometry: the circumscribed-circle diameter ``d`` is uniform in [0.04, 0.30] x height; a circle
  has diameter ``d``, a square side ``d / sqrt(2)``, a triangle circumradius ``d / 2``. Angle 0 is
  an axis-aligned square and a triangle with a vertex pointing up; angles turn counter-clockwise
  on screen. Objects are kept fully inside the frame by keeping their circumscribed circle at
  least one pixel inside the frame, whatever the rotation.
- Background: a single-channel uniform noise grid at 1/16 to 1/64 of the frame size (the factor
  is drawn per background), bicubically upsampled, normalised to zero mean and peak 1; scaled to a random
  contrast and added to a mean brightness ``T`` uniform in [60, min(200, 250 / g_max)], then
  multiplied by a tint colour (hue uniform, saturation in [0, 0.5], gains normalised to mean 1,
  ``g_max`` the largest gain, so nothing clips). The mean of all B, G, R background values is ``T``.
  Gaussian pixel noise (independent per channel and frame, sigma drawn once per clip or still
  image, uniform in [0, 6]) is part of the background: it is added before the objects are drawn.
- Visibility: an object is in the ground truth only if at least 60 % of its covered pixels are
  not covered by any later object.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from streamdet.datasets.groundtruth import GroundTruthFrame, groundtruth_path, write_groundtruth
from streamdet.datasets.shapes_look import (
    BRIGHTNESS_RANGE,
    NOISE_SIGMA_MAX,
    Variation,
    h264_roundtrip,
    hsv_to_bgr,
    make_background,
    varied_background,
)
from streamdet.datasets.yolo import write_label_file

__all__ = [
    "BRIGHTNESS_RANGE",
    "CLASS_NAMES",
    "DEFAULT_SIZES",
    "MAX_OBJECTS",
    "MIN_VISIBLE",
    "NOISE_SIGMA_MAX",
    "RenderedFrame",
    "Shape",
    "ShapesClip",
    "Variation",
    "hsv_to_bgr",
    "gaussian_table",
    "image_seed_sequence",
    "make_background",
    "random_frame",
    "random_shape",
    "render_frame",
    "render_image",
    "shape_alpha",
    "write_clip",
    "write_image",
    "write_images",
]

CLASS_NAMES: tuple[str, ...] = ("circle", "square", "triangle")
CIRCLE, SQUARE, TRIANGLE = 0, 1, 2
DEFAULT_SIZES: tuple[tuple[int, int], ...] = ((1280, 720), (1920, 1080), (640, 480))
SIZE_RANGE = (0.04, 0.30)  # circumscribed-circle diameter, fraction of frame height
MAX_OBJECTS = 8
MIN_VISIBLE = 0.60
MAX_SPEED = 0.01  # fraction of frame width per frame
MAX_SPIN = 3.0  # degrees per frame
EDGE_MARGIN = 1.0  # pixels between the circumscribed circle and the frame edge
MIN_FRAME_SIDE = 32

_ROTATION_PERIOD = {CIRCLE: 360.0, SQUARE: 90.0, TRIANGLE: 120.0}
_SIDES = {SQUARE: 4, TRIANGLE: 3}
_FIRST_VERTEX = {SQUARE: 45.0, TRIANGLE: 90.0}  # screen angle (deg, counter-clockwise) at rotation 0

# spawn_key roots of the seed sequences, so that clip parameters, clip frame noise and still images
# drawn from the same base seed never share a stream.
_KEY_CLIP, _KEY_CLIP_FRAME, _KEY_IMAGE = 0, 1, 2


@dataclass(frozen=True)
class Shape:
    """One object: class, centre (pixels, continuous), circumscribed-circle diameter, angle (deg), BGR colour."""

    cls: int
    cx: float
    cy: float
    diameter: float
    angle: float
    color: tuple[float, float, float]


@dataclass(frozen=True)
class RenderedFrame:
    """A rendered frame.

    ``image`` HxWx3 BGR uint8; ``boxes`` (k, 5) int32 ground truth [x1, y1, x2, y2, cls] of the
    objects that pass the visibility rule, in drawing order; ``all_boxes`` (n, 5) the boxes of all
    ``n`` drawn objects; ``visible`` (n,) float64 the visible fraction of each object's mask;
    ``in_gt`` (n,) bool which drawn objects are in ``boxes``; ``shapes`` the drawn objects.
    """

    image: np.ndarray
    boxes: np.ndarray
    all_boxes: np.ndarray
    visible: np.ndarray
    in_gt: np.ndarray
    shapes: tuple[Shape, ...]

    @property
    def ids(self) -> np.ndarray:
        """(k,) int64 each box's object: its index in the drawing order (shapes-v1 tracking ground truth)."""
        return np.flatnonzero(self.in_gt).astype(np.int64)


def _check_size(width: int, height: int) -> None:
    if width < MIN_FRAME_SIDE or height < MIN_FRAME_SIDE:
        raise ValueError(f"frame size {width}x{height} is too small (each side >= {MIN_FRAME_SIDE})")
    if width < SIZE_RANGE[1] * height + 2 * EDGE_MARGIN:
        raise ValueError(f"frame size {width}x{height}: width too small for the largest object")


_ACKLAM_A = (
    -3.969683028665376e01,
    2.209460984245205e02,
    -2.759285104469687e02,
    1.383577518672690e02,
    -3.066479806614716e01,
    2.506628277459239e00,
)
_ACKLAM_B = (
    -5.447609879822406e01,
    1.615858368580409e02,
    -1.556989798598866e02,
    6.680131188771972e01,
    -1.328068155288572e01,
    1.0,
)
_ACKLAM_C = (
    -7.784894002430293e-03,
    -3.223964580411365e-01,
    -2.400758277161838e00,
    -2.549732539343734e00,
    4.374664141464968e00,
    2.938163982698783e00,
)
_ACKLAM_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00, 1.0)


def gaussian_table(bits: int = 16) -> np.ndarray:
    """Standard normal quantiles at ``(k + 0.5) / 2**bits``, float32 (2**bits,): a Gaussian by table lookup.

    Indexing it with uniform random integers gives Gaussian noise (2**16 equiprobable levels,
    tails to +-4.3 sigma) about four times faster than ``Generator.standard_normal``; the frame
    is rounded to uint8 afterwards, so the quantisation is invisible. Quantiles by Acklam's
    rational approximation (relative error < 1.2e-9).
    """
    p = (np.arange(2**bits, dtype=np.float64) + 0.5) / 2**bits
    half = np.minimum(p, 1.0 - p)  # symmetric: compute the lower half, mirror the sign
    out = np.empty_like(p)
    tail = half < 0.02425
    q = np.sqrt(-2.0 * np.log(half[tail]))
    out[tail] = np.polyval(_ACKLAM_C, q) / np.polyval(_ACKLAM_D, q)
    q = half[~tail] - 0.5
    r = q * q
    out[~tail] = np.polyval(_ACKLAM_A, r) * q / np.polyval(_ACKLAM_B, r)
    out = np.where(p > 0.5, -out, out)
    return out.astype(np.float32)


def random_shape(width: int, height: int, rng: np.random.Generator) -> Shape:
    """One object with spec-distributed class, size, angle and colour, placed uniformly fully inside."""
    cls = int(rng.integers(0, len(CLASS_NAMES)))
    diameter = float(rng.uniform(*SIZE_RANGE) * height)
    angle = float(rng.uniform(0.0, _ROTATION_PERIOD[cls]))
    color = hsv_to_bgr(rng.uniform(0.0, 360.0), rng.uniform(0.5, 1.0), rng.uniform(0.5, 1.0))
    lo = diameter / 2 + EDGE_MARGIN
    cx = float(rng.uniform(lo, width - lo))
    cy = float(rng.uniform(lo, height - lo))
    return Shape(cls=cls, cx=cx, cy=cy, diameter=diameter, angle=angle, color=color)


def shape_alpha(shape: Shape, width: int, height: int) -> tuple[int, int, np.ndarray]:
    """Anti-aliased coverage of ``shape`` in a local patch: ``(x0, y0, alpha)``, alpha (h, w) float32.

    The patch covers every pixel with ``alpha > 0`` (clipped to the frame); ``alpha > 0.5`` is the
    object's mask (pixel centre strictly inside the shape).
    """
    r = shape.diameter / 2
    x0 = max(math.floor(shape.cx - r - 1), 0)
    y0 = max(math.floor(shape.cy - r - 1), 0)
    x1 = min(math.ceil(shape.cx + r + 1), width)
    y1 = min(math.ceil(shape.cy + r + 1), height)
    xs = (np.arange(x0, x1, dtype=np.float32) + np.float32(0.5 - shape.cx))[None, :]
    ys = (np.arange(y0, y1, dtype=np.float32) + np.float32(0.5 - shape.cy))[:, None]
    if shape.cls == CIRCLE:
        dist = np.sqrt(xs * xs + ys * ys) - np.float32(r)
    else:
        k = _SIDES[shape.cls]
        apothem = np.float32(r * math.cos(math.pi / k))
        dist = None
        for j in range(k):
            phi = math.radians(shape.angle + _FIRST_VERTEX[shape.cls] + 180.0 / k + 360.0 * j / k)
            # outward edge normal: screen angle phi counter-clockwise, image y points down
            d = xs * np.float32(math.cos(phi)) - ys * np.float32(math.sin(phi))
            dist = d if dist is None else np.maximum(dist, d)
        dist = dist - apothem
    alpha = np.clip(np.float32(0.5) - dist, 0.0, 1.0)
    return x0, y0, alpha


def render_frame(
    background: np.ndarray,
    shapes: Sequence[Shape],
    *,
    noise_sigma: float = 0.0,
    rng: np.random.Generator | None = None,
    antialias: bool = True,
) -> RenderedFrame:
    """Draw ``shapes`` in order over ``background`` (HxWx3 float) plus Gaussian noise; see the module doc.

    ``rng`` supplies the noise and is required when ``noise_sigma > 0``. ``antialias=False`` draws
    hard edges: exactly the covered pixels (the mask and the boxes do not change).
    """
    height, width = background.shape[:2]
    if noise_sigma > 0:
        if rng is None:
            raise ValueError("render_frame: noise_sigma > 0 needs an rng")
        table = gaussian_table() * np.float32(noise_sigma)
        img = table[rng.integers(0, table.size, (height, width, 3), dtype=np.uint16)]
        img += background
    else:
        img = background.astype(np.float32, copy=True)
    n = len(shapes)
    owner = np.full((height, width), -1, dtype=np.int16)
    all_boxes = np.zeros((n, 5), np.int32)
    areas = np.zeros(n, np.int64)
    patches: list[tuple[int, int, int, int]] = []
    for i, shape in enumerate(shapes):
        x0, y0, alpha = shape_alpha(shape, width, height)
        h, w = alpha.shape
        covered = alpha > 0.5
        if not antialias:
            alpha = covered.astype(np.float32)
        rows, cols = np.flatnonzero(covered.any(axis=1)), np.flatnonzero(covered.any(axis=0))
        if rows.size == 0:
            raise ValueError(f"shape {i} covers no pixel centre: {shape}")
        all_boxes[i] = (x0 + cols[0], y0 + rows[0], x0 + cols[-1] + 1, y0 + rows[-1] + 1, shape.cls)
        areas[i] = int(np.count_nonzero(covered))
        patches.append((x0, y0, x0 + w, y0 + h))
        region = img[y0 : y0 + h, x0 : x0 + w]
        a = alpha[:, :, None]
        region += a * (np.asarray(shape.color, np.float32) - region)
        owner[y0 : y0 + h, x0 : x0 + w][covered] = i
    visible = np.array(
        [np.count_nonzero(owner[py0:py1, px0:px1] == i) / areas[i] for i, (px0, py0, px1, py1) in enumerate(patches)],
        dtype=np.float64,
    )
    in_gt = visible >= MIN_VISIBLE
    np.clip(img, 0.0, 255.0, out=img)
    img += 0.5
    image = img.astype(np.uint8)
    return RenderedFrame(
        image=image,
        boxes=all_boxes[in_gt],
        all_boxes=all_boxes,
        visible=visible,
        in_gt=in_gt,
        shapes=tuple(shapes),
    )


def random_frame(
    width: int, height: int, rng: np.random.Generator, variation: Variation | None = None
) -> RenderedFrame:
    """An independent frame: its own background, noise level and 1-8 objects.

    Without ``variation`` the fixed generator (reproducible since the first demo data); with one,
    the look is drawn from it (see :mod:`streamdet.datasets.shapes_look`), H.264 compression included.
    """
    _check_size(width, height)
    if variation is None:
        background = make_background(width, height, rng)
        sigma = float(rng.uniform(0.0, NOISE_SIGMA_MAX))
        n = int(rng.integers(1, MAX_OBJECTS + 1))
        shapes = [random_shape(width, height, rng) for _ in range(n)]
        return render_frame(background, shapes, noise_sigma=sigma, rng=rng)
    background = varied_background(width, height, rng, variation)
    sigma = float(rng.uniform(*variation.noise_sigma))
    antialias = bool(rng.random() < variation.antialias)
    n = int(rng.integers(1, MAX_OBJECTS + 1))
    shapes = [random_shape(width, height, rng) for _ in range(n)]
    frame = render_frame(background, shapes, noise_sigma=sigma, rng=rng, antialias=antialias)
    if variation.crf is None:
        return frame
    crf = int(rng.integers(variation.crf[0], variation.crf[1] + 1))
    return replace(frame, image=h264_roundtrip(frame.image, crf))


def _fold(p: float, lo: float, hi: float) -> float:
    """Position after bouncing between ``lo`` and ``hi`` (a triangle wave), for unbounded ``p``."""
    span = hi - lo
    if span <= 0:
        return lo
    q = (p - lo) % (2 * span)
    return lo + (q if q <= span else 2 * span - q)


@dataclass(frozen=True)
class _Motion:
    vx: float
    vy: float
    spin: float


class ShapesClip:
    """A synthetic clip: one background and 1-8 moving, spinning, bouncing objects.

    ``frame(i)`` renders frame ``i`` directly (motion is in closed form; frame noise is seeded per
    frame), ``frames()`` yields ``(image BGR uint8, boxes (n, 5) int32 [x1, y1, x2, y2, cls])``.
    """

    def __init__(
        self,
        width: int = 1280,
        height: int = 720,
        seed: int = 0,
        *,
        num_frames: int = 250,
        variation: Variation | None = None,
    ) -> None:
        _check_size(width, height)
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        self.width, self.height, self.seed, self.num_frames = width, height, seed, num_frames
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_KEY_CLIP,)))
        self.antialias = True
        if variation is None:
            self.background = make_background(width, height, rng)
            self.noise_sigma = float(rng.uniform(0.0, NOISE_SIGMA_MAX))
        else:  # the clip's look drawn once; compression is the clip encoder's (write_clip's crf)
            self.background = varied_background(width, height, rng, variation)
            self.noise_sigma = float(rng.uniform(*variation.noise_sigma))
            self.antialias = bool(rng.random() < variation.antialias)
        n = int(rng.integers(1, MAX_OBJECTS + 1))
        self.shapes: tuple[Shape, ...] = tuple(random_shape(width, height, rng) for _ in range(n))
        motions = []
        for _ in range(n):
            speed = rng.uniform(0.0, MAX_SPEED * width)
            direction = rng.uniform(0.0, 2 * math.pi)
            motions.append(
                _Motion(speed * math.cos(direction), speed * math.sin(direction), rng.uniform(-MAX_SPIN, MAX_SPIN))
            )
        self._motions = tuple(motions)

    def __len__(self) -> int:
        return self.num_frames

    def shapes_at(self, index: int) -> list[Shape]:
        """The objects' state in frame ``index`` (frame 0 is the initial state)."""
        out = []
        for shape, m in zip(self.shapes, self._motions, strict=True):
            lo = shape.diameter / 2 + EDGE_MARGIN
            cx = _fold(shape.cx + m.vx * index, lo, self.width - lo)
            cy = _fold(shape.cy + m.vy * index, lo, self.height - lo)
            angle = (shape.angle + m.spin * index) % 360.0
            out.append(replace(shape, cx=cx, cy=cy, angle=angle))
        return out

    def render(self, index: int) -> RenderedFrame:
        """Render frame ``index`` with all details (see :class:`RenderedFrame`)."""
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(_KEY_CLIP_FRAME, index)))
        return render_frame(
            self.background, self.shapes_at(index), noise_sigma=self.noise_sigma, rng=rng, antialias=self.antialias
        )

    def frame(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame ``index``: (image, ground-truth boxes)."""
        r = self.render(index)
        return r.image, r.boxes

    def frames(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """All ``num_frames`` frames in order, as (image, boxes)."""
        for i in range(self.num_frames):
            yield self.frame(i)


def write_clip(
    path_mp4: str | Path,
    *,
    width: int = 1280,
    height: int = 720,
    frames: int = 250,
    fps: int | Fraction = 25,
    seed: int,
    crf: int = 23,
    progress: Callable[[int], None] | None = None,
    variation: Variation | None = None,
) -> Path:
    """Render a clip and write it as H.264 MP4 plus its ground truth (``<stem>.jsonl``); returns the mp4 path.

    The ground truth carries each box's object id (``ids``: the object's index in the clip's
    drawing order, the same in every frame, also after the object was hidden).

    libx264, yuv420p, constant quality ``crf`` (20-28), a keyframe at least every 2 s. The ``pts``
    written to the ground truth are read back from the muxed file, so they are what a PyAV decoder
    reports. ``progress(n)`` is called after each frame with the number of frames done.
    ``variation`` draws the clip's look (background, noise, edges) from it; see :class:`ShapesClip`.
    """
    if not 20 <= crf <= 28:
        raise ValueError(f"crf must be in [20, 28] (shapes-v1), got {crf}")
    if width % 2 or height % 2:
        raise ValueError(f"yuv420p needs an even width and height, got {width}x{height}")
    rate = Fraction(fps)
    if rate <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    path = Path(path_mp4)
    clip = ShapesClip(width, height, seed, num_frames=frames, variation=variation)
    gop = max(1, math.floor(2 * rate))
    all_boxes: list[np.ndarray] = []
    all_ids: list[np.ndarray] = []
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.options = {"crf": str(crf), "g": str(gop)}
        time_base = Fraction(1, 1) / rate
        for i in range(frames):
            rendered = clip.render(i)
            frame = av.VideoFrame.from_ndarray(rendered.image, format="bgr24")
            frame.pts, frame.time_base = i, time_base
            container.mux(stream.encode(frame))
            all_boxes.append(rendered.boxes)
            all_ids.append(rendered.ids)
            if progress is not None:
                progress(i + 1)
        container.mux(stream.encode(None))
    pts = _presentation_times(path)
    if len(pts) != frames:
        raise RuntimeError(f"{path}: muxed {len(pts)} frames, expected {frames}")
    write_groundtruth(
        groundtruth_path(path),
        (
            GroundTruthFrame(frame=i, pts=t, boxes=b, ids=k)
            for i, (t, b, k) in enumerate(zip(pts, all_boxes, all_ids, strict=True))
        ),
    )
    return path


def _presentation_times(path: Path) -> list[float]:
    """Presentation times (s) of the video frames of ``path``, in display order, from the demuxer."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        tb = stream.time_base
        if tb is None:
            raise RuntimeError(f"{path}: the video stream has no time base")
        pts = sorted(p.pts for p in container.demux(stream) if p.pts is not None and p.size > 0)
    return [float(p * tb) for p in pts]


def image_seed_sequence(seed: int, index: int) -> np.random.SeedSequence:
    """The seed sequence of still image ``index`` of a set made with base ``seed`` (index-addressable)."""
    return np.random.SeedSequence(seed, spawn_key=(_KEY_IMAGE, index))


def render_image(
    seed: int,
    index: int,
    sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES,
    variation: Variation | None = None,
) -> RenderedFrame:
    """Still image ``index`` of the set with base ``seed``; its size drawn uniformly from ``sizes``."""
    if not sizes:
        raise ValueError("sizes must not be empty")
    rng = np.random.default_rng(image_seed_sequence(seed, index))
    width, height = sizes[int(rng.integers(0, len(sizes)))] if len(sizes) > 1 else sizes[0]
    return random_frame(int(width), int(height), rng, variation)


def write_image(
    out_dir: str | Path,
    index: int,
    *,
    seed: int,
    sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES,
    variation: Variation | None = None,
) -> Path:
    """Render still image ``index`` and write ``images/NNNNNN.png`` and ``labels/NNNNNN.txt``; returns the png."""
    out_dir = Path(out_dir)
    r = render_image(seed, index, sizes, variation)
    name = f"{index:06d}"
    image_path = out_dir / "images" / f"{name}.png"
    image_path.parent.mkdir(parents=True, exist_ok=True)
    (out_dir / "labels").mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(image_path), r.image):
        raise OSError(f"cannot write {image_path}")
    height, width = r.image.shape[:2]
    write_label_file(out_dir / "labels" / f"{name}.txt", r.boxes, width, height)
    return image_path


def write_images(
    out_dir: str | Path,
    n: int,
    *,
    seed: int,
    sizes: Sequence[tuple[int, int]] | tuple[int, int] = DEFAULT_SIZES,
    start: int = 0,
    progress: Callable[[int], None] | None = None,
    variation: Variation | None = None,
) -> list[Path]:
    """Write still images ``start .. start + n - 1`` in YOLO layout under ``out_dir``; returns the png paths.

    Each image is an independent frame seeded by ``(seed, index)``, so any split of the index range
    (parallel workers) gives the same files. ``sizes`` is one ``(width, height)`` or a list to draw
    from. ``progress(k)`` is called after each image with the number done. ``variation``: see
    :func:`random_frame` (None: the fixed generator).
    """
    if len(sizes) == 2 and all(isinstance(v, (int, np.integer)) for v in sizes):
        sizes = [sizes]  # type: ignore[list-item]
    size_list = [(int(w), int(h)) for w, h in sizes]  # type: ignore[misc]
    for w, h in size_list:
        _check_size(w, h)
    paths = []
    for k, index in enumerate(range(start, start + n)):
        paths.append(write_image(out_dir, index, seed=seed, sizes=size_list, variation=variation))
        if progress is not None:
            progress(k + 1)
    return paths
