"""Fixtures shared by the model tests: reference files, regenerated inputs, cached forward passes."""

from __future__ import annotations

import hashlib
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

# Reference inputs are not stored; the README gives seed, shape and the sha256 of the float32 bytes.
REFERENCE_INPUTS = {
    "yolov5n_ref_s100.npz": (100, (2, 3, 640, 640),
                             "c041a96dae1a439cac447d64588b4043c1f2bea5941ece6cd4acf0b67a4a7a8a",
                             [0.76688451, 0.83498162, 0.12417817, 0.59655398, 0.08026338]),
    "yolov5n_ref_s101.npz": (101, (2, 3, 640, 640),
                             "33bdbfe341fd3fd946782b4fdd07c639c1b3f79862c009f7a3fb160f6cc1edf3",
                             [0.31026596, 0.94353247, 0.69658250, 0.35942101, 0.13485873]),
    "yolov5n_ref_s102.npz": (102, (2, 3, 640, 640),
                             "ccc8e9a75571df3977e287bbb8dab9598c0ea15c233f0fead26c8ed2d6c9d6f0",
                             [0.44307828, 0.15999109, 0.54206741, 0.58594346, 0.24236405]),
    "yolov5n_ref_rect.npz": (103, (1, 3, 384, 640),
                             "15036caefda396a699ade5645eefe7ef47e7f4911624b6e2d2dcec7b2eb00a9f",
                             [0.55261660, 0.31268322, 0.07572204, 0.22431821, 0.71889317]),
}
REFERENCE_FILES = list(REFERENCE_INPUTS)


def regenerate_input(name: str) -> np.ndarray:
    """The model input of a reference file, regenerated exactly as the README describes."""
    seed, shape, _, _ = REFERENCE_INPUTS[name]
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def input_sha256(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()


@pytest.fixture(scope="session")
def yolov5_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "yolov5"


@pytest.fixture(scope="session")
def checkpoint_path(yolov5_dir: Path) -> Path:
    return yolov5_dir / "yolov5n_random.pt"


@dataclass
class ReferenceRuns:
    """Forward passes of the fixture checkpoint on the reference inputs, computed once per session."""

    checkpoint: Path
    yolov5_dir: Path
    _models: dict[bool, torch.nn.Module] = field(default_factory=dict)
    _runs: dict[tuple[str, bool], tuple[torch.Tensor, list[torch.Tensor]]] = field(default_factory=dict)

    def model(self, fused: bool) -> torch.nn.Module:
        from streamdet.model.checkpoint import load_model

        if fused not in self._models:
            self._models[fused] = load_model(self.checkpoint, fuse=fused)
        return self._models[fused]

    def reference(self, name: str) -> dict[str, np.ndarray]:
        with np.load(self.yolov5_dir / name) as z:
            return {k: z[k] for k in z.files}

    def run(self, name: str, fused: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(pred (B, N, 85), raw levels) for the reference file's input."""
        key = (name, fused)
        if key not in self._runs:
            x = torch.from_numpy(regenerate_input(name))
            with torch.no_grad():
                self._runs[key] = self.model(fused).forward_raw(x)
        return self._runs[key]


@pytest.fixture(scope="session")
def reference_runs(checkpoint_path: Path, yolov5_dir: Path) -> ReferenceRuns:
    return ReferenceRuns(checkpoint_path, yolov5_dir)


@pytest.fixture
def fake_ultralytics(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    """Bare ``models.common`` / ``models.yolo`` modules (nn.Module subclasses, no code) in sys.modules.

    With them, plain ``torch.load(weights_only=False)`` can read an Ultralytics checkpoint (the
    README's documented route) and ``torch.save`` can write one from live objects, which lets
    the tests produce files the way third-party tooling would. Removed again after the test.
    """
    models = types.ModuleType("models")
    common = types.ModuleType("models.common")
    yolo = types.ModuleType("models.yolo")
    for mod, names in ((common, ["Conv", "C3", "Bottleneck", "SPPF", "Concat"]),
                       (yolo, ["DetectionModel", "Detect"])):
        for n in names:
            setattr(mod, n, type(n, (nn.Module,), {"__module__": mod.__name__}))
    models.common, models.yolo = common, yolo
    monkeypatch.setitem(sys.modules, "models", models)
    monkeypatch.setitem(sys.modules, "models.common", common)
    monkeypatch.setitem(sys.modules, "models.yolo", yolo)
    yield models
