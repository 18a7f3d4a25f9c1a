"""Training data: YOLO-layout images decoded once into RAM, augmented per sample, batched.

PNG decoding of a 1280x720 frame costs more than the augmentation of a whole sample, so every image
is decoded once and kept resized to the model input (long side = img_size, INTER_LINEAR, the same
resize the inference letterbox does). A sample is a pure function of (seed, epoch, index), so the
data are the same with or without DataLoader workers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from streamdet.training.augment import (
    AugmentConfig,
    augment_hsv,
    flip,
    letterbox_fit,
    mosaic4,
    random_affine,
)


@dataclass
class ImageCache:
    """Decoded images resized for training, and their boxes [cls, x1, y1, x2, y2] in those pixels."""

    images: list[np.ndarray]
    labels: list[np.ndarray]
    source_shapes: list[tuple[int, int]]


def _load_resized(path: Path, gt: np.ndarray, img_size: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Decode, resize so the long side is ``img_size``; boxes [cls, x1, y1, x2, y2] scaled alike."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise OSError(f"cannot read image {path}")
    h0, w0 = img.shape[:2]
    r = img_size / max(h0, w0)
    if r != 1:
        img = cv2.resize(img, (round(w0 * r), round(h0 * r)), interpolation=cv2.INTER_LINEAR)
    h, w = img.shape[:2]
    lab = np.zeros((len(gt), 5), np.float32)
    if len(gt):
        lab[:, 0] = gt[:, 4]
        lab[:, [1, 3]] = gt[:, [0, 2]] * (w / w0)
        lab[:, [2, 4]] = gt[:, [1, 3]] * (h / h0)
    return img, lab, (h0, w0)


def yolo_items(root: str | Path, nc: int | None = None) -> list[tuple[Path, np.ndarray]]:
    """(image path, ground truth (n, 5) [x1, y1, x2, y2, cls] in pixels) of a YOLO-layout directory."""
    from streamdet.datasets.yolo import read_yolo_dir

    return [(s.image, s.ground_truth().astype(np.float32)) for s in read_yolo_dir(root, nc=nc)]


def cache_images(
    root: str | Path, img_size: int, threads: int = 2, limit: int | None = None, nc: int | None = None
) -> ImageCache:
    """Decode and resize every image of a YOLO-layout directory (cv2 releases the GIL: threads help)."""
    items = yolo_items(root, nc)
    if limit is not None:
        items = items[:limit]
    with ThreadPoolExecutor(max(threads, 1)) as pool:
        loaded = list(pool.map(lambda it: _load_resized(it[0], it[1], img_size), items))
    return ImageCache(
        images=[x[0] for x in loaded], labels=[x[1] for x in loaded], source_shapes=[x[2] for x in loaded]
    )


def train_input_shape(cache: ImageCache, stride: int) -> tuple[int, int]:
    """(H, W) training canvas: the largest inference letterbox shape (auto=True) among the images."""
    h = max(math.ceil(im.shape[0] / stride) * stride for im in cache.images)
    w = max(math.ceil(im.shape[1] / stride) * stride for im in cache.images)
    return h, w


def scaled_canvas(canvas_hw: tuple[int, int], size: int, stride: int) -> tuple[int, int]:
    """The training canvas for input size ``size``: ``canvas_hw`` (made for its long side) scaled, on the stride."""
    h, w = canvas_hw
    r = size / max(h, w)
    return math.ceil(h * r / stride) * stride, math.ceil(w * r / stride) * stride


def multi_scale_sizes(low: int, high: int, stride: int) -> list[int]:
    """Input sizes ``low..high`` in stride steps (both ends multiples of the stride)."""
    if low % stride or high % stride or not 0 < low <= high:
        raise ValueError(f"multi-scale range {low}-{high} must be multiples of the stride {stride}, low <= high")
    return list(range(low, high + 1, stride))


class ScaleBatchSampler(Sampler[list[tuple[int, int]]]):
    """Shuffled batches of ``(index, input size)``: one size per batch, drawn from ``sizes``.

    Order and sizes are a pure function of (seed, epoch), so a resumed run sees the same batches.
    """

    def __init__(self, n: int, batch: int, sizes: list[int], seed: int = 0, drop_last: bool = True) -> None:
        if n < 1 or batch < 1 or not sizes:
            raise ValueError(f"need images, a batch size and sizes (n={n}, batch={batch}, sizes={sizes})")
        self.n, self.batch, self.sizes, self.seed = n, batch, list(sizes), seed
        self.drop_last = drop_last and n >= batch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and sizes the next iteration yields."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // self.batch if self.drop_last else math.ceil(self.n / self.batch)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        rng = np.random.default_rng([self.seed, self.epoch, 0x5CA1E])
        order = rng.permutation(self.n).tolist()
        for b in range(len(self)):
            size = self.sizes[int(rng.integers(0, len(self.sizes)))]
            yield [(i, size) for i in order[b * self.batch : (b + 1) * self.batch]]


class ShapesTrainDataset(Dataset):
    """Augmented training samples: (uint8 RGB CHW tensor, labels (n, 6) [0, cls, cx, cy, w, h] normalised).

    ``out_hw`` is the canvas of the cached images (long side = the cache size). A key is an index
    (a sample on that canvas) or ``(index, size)``: a sample on the canvas scaled to input size
    ``size`` (multi-scale training), drawn from the cached pixels with one resampling.
    """

    def __init__(
        self,
        cache: ImageCache,
        out_hw: tuple[int, int],
        aug: AugmentConfig,
        seed: int = 0,
        augment: bool = True,
        stride: int = 32,
    ) -> None:
        self.cache = cache
        self.out_hw = out_hw
        self.aug = aug
        self.seed = seed
        self.augment = augment
        self.stride = stride
        self.epoch = 0
        self.mosaic = aug.mosaic

    def set_epoch(self, epoch: int, mosaic: float | None = None) -> None:
        """Select the epoch (part of every sample's RNG seed) and optionally change the mosaic rate."""
        self.epoch = epoch
        if mosaic is not None:
            self.mosaic = mosaic

    def __len__(self) -> int:
        return len(self.cache.images)

    def sample(self, index: int, size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One augmented BGR image and its boxes [cls, x1, y1, x2, y2] in its pixels.

        The canvas is ``out_hw``, or that canvas scaled to input size ``size``.
        """
        rng = np.random.default_rng([self.seed, self.epoch, index])
        imgs, labs = self.cache.images, self.cache.labels
        full_h, full_w = self.out_hw
        out_hw = self.out_hw if size is None else scaled_canvas(self.out_hw, size, self.stride)
        h, w = out_hw
        a = self.aug
        if not self.augment:
            return letterbox_fit(imgs[index], labs[index], out_hw)
        if self.mosaic > 0 and rng.random() < self.mosaic:
            # Tiles at the cached scale on a (2H, 2W) canvas, then scaled to the requested size: objects
            # keep the size they would have in a single-image sample, before the scale augmentation.
            idx = [index, *rng.integers(0, len(imgs), 3).tolist()]
            img, lab = mosaic4([imgs[k] for k in idx], [labs[k] for k in idx], self.out_hw, rng)
            base = min(h / full_h, w / full_w)
            img, lab = random_affine(
                img, lab, out_hw, rng, a.scale, a.translate, base_scale=base, center=(full_w, full_h)
            )
        else:
            src = imgs[index]
            fit = min(h / src.shape[0], w / src.shape[1])
            img, lab = random_affine(src, labs[index], out_hw, rng, a.scale, a.translate, base_scale=fit)
        augment_hsv(img, rng, a.hsv_h, a.hsv_s, a.hsv_v)
        if rng.random() < a.fliplr:
            img, lab = flip(img, lab, horizontal=True)
        if rng.random() < a.flipud:
            img, lab = flip(img, lab, horizontal=False)
        return img, lab

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        img, lab = self.sample(*key) if isinstance(key, tuple) else self.sample(key)
        h, w = img.shape[:2]
        out = torch.zeros((len(lab), 6), dtype=torch.float32)
        if len(lab):
            lab = lab.astype(np.float64)
            out[:, 1] = torch.from_numpy(lab[:, 0])
            out[:, 2] = torch.from_numpy((lab[:, 1] + lab[:, 3]) / 2 / w)
            out[:, 3] = torch.from_numpy((lab[:, 2] + lab[:, 4]) / 2 / h)
            out[:, 4] = torch.from_numpy((lab[:, 3] - lab[:, 1]) / w)
            out[:, 5] = torch.from_numpy((lab[:, 4] - lab[:, 2]) / h)
        chw = torch.from_numpy(np.ascontiguousarray(img[:, :, ::-1].transpose(2, 0, 1)))
        return chw, out


def collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack images (B, 3, H, W) uint8 and concatenate labels with their image index in column 0."""
    imgs, labels = zip(*batch, strict=True)
    for i, lab in enumerate(labels):
        lab[:, 0] = i
    return torch.stack(imgs, 0), torch.cat(labels, 0)


@dataclass
class ValSet:
    """Full-resolution validation frames (BGR) and ground truth (n, 5) [x1, y1, x2, y2, cls] in pixels."""

    frames: list[np.ndarray]
    boxes: list[np.ndarray]


def load_val(root: str | Path, limit: int | None = None, nc: int | None = None) -> ValSet:
    """Read a YOLO-layout directory at full resolution for mAP validation."""
    items = yolo_items(root, nc)
    if limit is not None:
        items = items[:limit]
    frames = []
    for path, _ in items:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise OSError(f"cannot read image {path}")
        frames.append(img)
    return ValSet(frames=frames, boxes=[gt for _, gt in items])
