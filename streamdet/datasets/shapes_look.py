"""How a shapes-v1 picture looks: colours, background textures, and the optional look variation.

The fixed generator (:func:`make_background`, used when no :class:`Variation` is given) is the
one the original demo data were made with and stays byte-identical. A :class:`Variation` widens
every choice the specification leaves open, so that a model trained on it does not learn one
generator's habits:

- background texture: the noise-grid factor (spec: 1/16 to 1/64 of the frame; wider ranges
  allowed), the upsampling (bicubic, bilinear), several octaves of noise, or Gaussian-blurred
  noise; a smooth linear brightness gradient mixed in; tint saturation; contrast; brightness;
- anti-aliased object edges on or off (probability per picture);
- per-picture Gaussian pixel noise sigma;
- H.264 compression: the finished picture is encoded by libx264 at a constant quality drawn from
  ``crf`` and decoded again (:func:`h264_roundtrip`), so training sees the codec's artefacts.

Named presets are in :data:`VARIATIONS`: ``wide`` is what the demo model trains on, ``heldout``
is for the evaluation set and uses a texture kind and ranges that ``wide`` never draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import av
import cv2
import numpy as np

__all__ = [
    "BRIGHTNESS_RANGE",
    "NOISE_SIGMA_MAX",
    "TEXTURES",
    "VARIATIONS",
    "Variation",
    "h264_roundtrip",
    "hsv_to_bgr",
    "make_background",
    "varied_background",
]

NOISE_SIGMA_MAX = 6.0
BRIGHTNESS_RANGE = (60.0, 200.0)
TEXTURES = ("bicubic", "bilinear", "octaves", "blur")


@dataclass(frozen=True)
class Variation:
    """Ranges one picture (or clip) draws its look from; each range is ``(low, high)``, uniform.

    ``noise_grid``: frame size over noise-grid size (spec 16-64). ``textures``: kinds drawn from
    (:data:`TEXTURES`). ``gradient``: weight of a linear ramp mixed into the texture (0 = none).
    ``tint_saturation``: saturation of the background tint. ``contrast``: texture amplitude as a
    fraction of the headroom. ``brightness``: mean background level (spec 60-200).
    ``antialias``: probability that object edges are anti-aliased. ``noise_sigma``: pixel noise
    sigma (spec 0-6). ``crf``: libx264 constant quality range, or None for no compression.
    """

    noise_grid: tuple[float, float] = (16.0, 64.0)
    textures: tuple[str, ...] = ("bicubic",)
    gradient: tuple[float, float] = (0.0, 0.0)
    tint_saturation: tuple[float, float] = (0.0, 0.5)
    contrast: tuple[float, float] = (0.15, 1.0)
    brightness: tuple[float, float] = BRIGHTNESS_RANGE
    antialias: float = 1.0
    noise_sigma: tuple[float, float] = (0.0, NOISE_SIGMA_MAX)
    crf: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        for name in ("noise_grid", "gradient", "tint_saturation", "contrast", "brightness", "noise_sigma"):
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ValueError(f"variation {name}: low {lo} > high {hi}")
        if not self.textures or any(t not in TEXTURES for t in self.textures):
            raise ValueError(f"variation textures must be a non-empty subset of {TEXTURES}, got {self.textures}")
        if self.noise_grid[0] < 2:
            raise ValueError(f"variation noise_grid must be >= 2, got {self.noise_grid}")
        if not (self.gradient[0] >= 0 and self.gradient[1] <= 1):
            raise ValueError(f"variation gradient must lie in [0, 1], got {self.gradient}")
        if not (self.tint_saturation[0] >= 0 and self.tint_saturation[1] <= 1):
            raise ValueError(f"variation tint_saturation must lie in [0, 1], got {self.tint_saturation}")
        if not (self.contrast[0] >= 0 and self.contrast[1] <= 1):
            raise ValueError(f"variation contrast must lie in [0, 1], got {self.contrast}")
        if not (BRIGHTNESS_RANGE[0] <= self.brightness[0] and self.brightness[1] <= BRIGHTNESS_RANGE[1]):
            raise ValueError(f"variation brightness must lie in {BRIGHTNESS_RANGE} (shapes-v1), got {self.brightness}")
        if not 0 <= self.antialias <= 1:
            raise ValueError(f"variation antialias is a probability, got {self.antialias}")
        if self.noise_sigma[0] < 0:
            raise ValueError(f"variation noise_sigma must be >= 0, got {self.noise_sigma}")
        if self.crf is not None and not (0 <= self.crf[0] <= self.crf[1] <= 51):
            raise ValueError(f"variation crf must be a range within [0, 51], got {self.crf}")


VARIATIONS: dict[str, Variation] = {
    # Training: every spec range and beyond (grid 1/8-1/96, tint saturation up to 0.9), three texture
    # kinds, gradients, edges with and without anti-aliasing, H.264 at the spec's CRF 20-28.
    "wide": Variation(
        noise_grid=(8.0, 96.0),
        textures=("bicubic", "bilinear", "octaves"),
        gradient=(0.0, 0.6),
        tint_saturation=(0.0, 0.9),
        contrast=(0.0, 1.0),
        antialias=0.5,
        crf=(20, 28),
    ),
    # Evaluation: a texture kind training never draws (blurred noise), stronger gradients and tints.
    "heldout": Variation(
        noise_grid=(12.0, 80.0),
        textures=("blur",),
        gradient=(0.2, 0.8),
        tint_saturation=(0.3, 1.0),
        contrast=(0.1, 1.0),
        antialias=0.5,
        crf=(20, 28),
    ),
}


def hsv_to_bgr(h: float, s: float, v: float) -> tuple[float, float, float]:
    """HSV (hue degrees, s and v in [0, 1]) to BGR floats in [0, 255], without quantising the hue."""
    h6 = (h % 360.0) / 60.0
    c = v * s
    x = c * (1 - abs(h6 % 2 - 1))
    m = v - c
    r, g, b = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][int(h6) % 6]
    return ((b + m) * 255.0, (g + m) * 255.0, (r + m) * 255.0)


def make_background(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth tinted random texture, HxWx3 float32 in [0, 255] with mean brightness in [60, 200].

    The fixed generator. Bicubic upsampling is linear, so the per-channel affine map (normalise,
    contrast, brightness, tint) is applied to the small noise grid and the result upsampled once.
    """
    factor = rng.uniform(16.0, 64.0)
    gw, gh = max(2, math.ceil(width / factor)), max(2, math.ceil(height / factor))
    grid = rng.random((gh, gw), dtype=np.float32)
    tex = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    mean = float(tex.mean(dtype=np.float64))
    lo, hi, _, _ = cv2.minMaxLoc(tex)
    peak = max(hi - mean, mean - lo, 1e-6)  # the upsampled texture, normalised, lies in [-1, 1]
    tint = np.asarray(hsv_to_bgr(rng.uniform(0, 360), rng.uniform(0.0, 0.5), 1.0), np.float64)
    gains = tint / tint.mean()
    g_max = float(gains.max())
    brightness = rng.uniform(BRIGHTNESS_RANGE[0], min(BRIGHTNESS_RANGE[1], 250.0 / g_max))
    amplitude = rng.uniform(0.15, 1.0) * min(brightness, 255.0 / g_max - brightness)
    base = brightness + (amplitude / peak) * (grid.astype(np.float64) - mean)  # mean brightness, no clipping
    small = (base[:, :, None] * gains[None, None, :]).astype(np.float32)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def _noise_texture(width: int, height: int, kind: str, factor: float, rng: np.random.Generator) -> np.ndarray:
    """A single-channel smooth random texture at full size (float32, arbitrary scale)."""

    def upsampled(f: float, interpolation: int) -> np.ndarray:
        gw, gh = max(2, math.ceil(width / f)), max(2, math.ceil(height / f))
        grid = rng.random((gh, gw), dtype=np.float32)
        return cv2.resize(grid, (width, height), interpolation=interpolation)

    if kind == "bicubic":
        return upsampled(factor, cv2.INTER_CUBIC)
    if kind == "bilinear":
        return upsampled(factor, cv2.INTER_LINEAR)
    if kind == "octaves":  # coarse noise plus finer, weaker detail
        fine = max(2.0, factor / 3.0)
        return upsampled(factor, cv2.INTER_CUBIC) + 0.35 * upsampled(fine, cv2.INTER_CUBIC)
    if kind == "blur":  # noise four times finer than the grid, Gaussian-blurred, upsampled bilinearly
        f = max(2.0, factor / 4.0)
        gw, gh = max(2, math.ceil(width / f)), max(2, math.ceil(height / f))
        blurred = cv2.GaussianBlur(rng.random((gh, gw), dtype=np.float32), (0, 0), sigmaX=2.0)
        # Blurred noise is near-Gaussian: its peak is ~4 standard deviations out, so normalising by the
        # peak would leave it almost flat. A soft saturation (tanh of the standard score) keeps it visible.
        z = (blurred - blurred.mean()) / max(float(blurred.std()), 1e-6)
        return cv2.resize(np.tanh(z / 1.5), (width, height), interpolation=cv2.INTER_LINEAR)
    raise ValueError(f"unknown texture kind {kind!r} (one of {TEXTURES})")


def _ramp(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A linear ramp in a random direction, float32 (H, W), values in about [-1, 1]."""
    theta = rng.uniform(0.0, 2 * math.pi)
    xs = (np.arange(width, dtype=np.float32) - width / 2) * np.float32(math.cos(theta))
    ys = (np.arange(height, dtype=np.float32) - height / 2) * np.float32(math.sin(theta))
    return (xs[None, :] + ys[:, None]) / np.float32(math.hypot(width, height) / 2)


def varied_background(width: int, height: int, rng: np.random.Generator, variation: Variation) -> np.ndarray:
    """A background drawn from ``variation``: HxWx3 float32 in [0, 255], mean brightness as drawn, no clipping."""
    kind = variation.textures[int(rng.integers(0, len(variation.textures)))]
    tex = _noise_texture(width, height, kind, rng.uniform(*variation.noise_grid), rng).astype(np.float64)
    tex -= tex.mean()
    tex /= max(float(np.abs(tex).max()), 1e-6)
    weight = rng.uniform(*variation.gradient)
    if weight > 0:
        tex = (1 - weight) * tex + weight * _ramp(width, height, rng)
        tex -= tex.mean()
        tex /= max(float(np.abs(tex).max()), 1e-6)
    tint = np.asarray(hsv_to_bgr(rng.uniform(0, 360), rng.uniform(*variation.tint_saturation), 1.0), np.float64)
    gains = tint / tint.mean()
    g_max = float(gains.max())
    lo, hi = variation.brightness
    brightness = rng.uniform(lo, max(lo, min(hi, 250.0 / g_max)))
    amplitude = rng.uniform(*variation.contrast) * max(0.0, min(brightness, 255.0 / g_max - brightness))
    base = (brightness + amplitude * tex).astype(np.float32)
    return base[:, :, None] * gains.astype(np.float32)[None, None, :]


def h264_roundtrip(image: np.ndarray, crf: int) -> np.ndarray:
    """``image`` (HxWx3 BGR uint8, even sides) encoded as one H.264 frame by libx264 and decoded again.

    yuv420p, constant quality ``crf``, the encoder's default preset: what a shapes-v1 clip's
    keyframe goes through, so the picture carries real chroma subsampling and codec artefacts.
    """
    height, width = image.shape[:2]
    if width % 2 or height % 2:
        raise ValueError(f"H.264 (yuv420p) needs even sides, got {width}x{height}")
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
    encoder.time_base = Fraction(1, 25)
    encoder.options = {"crf": str(int(crf))}
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24").reformat(format="yuv420p")
    frame.pts = 0
    packets = list(encoder.encode(frame)) + list(encoder.encode(None))
    decoder = av.CodecContext.create("h264", "r")
    frames = [f for p in packets for f in decoder.decode(p)]
    frames += decoder.decode(None)
    if len(frames) != 1:
        raise RuntimeError(f"H.264 round trip returned {len(frames)} frames, expected 1")
    out: np.ndarray = frames[0].to_ndarray(format="bgr24")
    return out
