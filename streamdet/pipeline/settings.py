"""The inference settings as values: what NMS keeps (:class:`NmsSettings`) and how the model runs
(:class:`InferenceOptions`, which holds the NMS settings).

Passed whole from where they are decided (the configuration's ``model`` section, the CLI's
arguments, ``Detector``'s keywords) to where they are used (:func:`streamdet.pipeline.stages.build_stages`),
so a new option is one field here and one use there, not a keyword threaded through eight
functions. Frozen: a reload swaps the whole object, so a batch never sees half of an update.
No numpy, no torch: the supervisor and the CLI build these before any model is loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamdet.config.schema import ModelConfig

__all__ = ["InferenceOptions", "NmsSettings"]


@dataclass(frozen=True)
class NmsSettings:
    """What NMS keeps (official YOLOv5 semantics). Raises ValueError for a threshold outside [0, 1]
    or ``max_det`` < 1."""

    conf_thres: float = 0.25
    iou_thres: float = 0.45
    classes: tuple[int, ...] | None = None
    max_det: int = 300
    agnostic: bool = False

    def __post_init__(self) -> None:
        for name in ("conf_thres", "iou_thres"):
            value = float(getattr(self, name))
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
            object.__setattr__(self, name, value)
        if int(self.max_det) < 1:
            raise ValueError(f"max_det must be >= 1, got {self.max_det}")
        object.__setattr__(self, "max_det", int(self.max_det))
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(int(c) for c in self.classes))

    @classmethod
    def of(cls, conf_thres: float = 0.25, iou_thres: float = 0.45, classes: Sequence[int] | None = None,
           max_det: int = 300) -> NmsSettings:
        """From the loose values of a caller (a list of classes, or None)."""
        return cls(conf_thres, iou_thres, tuple(classes) if classes is not None else None, max_det)

    @classmethod
    def from_config(cls, model: ModelConfig) -> NmsSettings:
        """The configuration's ``model`` thresholds."""
        return cls.of(model.conf_thres, model.iou_thres, model.classes, model.max_det)

    def to_json(self) -> dict[str, Any]:
        return {"conf_thres": self.conf_thres, "iou_thres": self.iou_thres,
                "classes": list(self.classes) if self.classes is not None else None,
                "max_det": self.max_det, "agnostic": self.agnostic}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NmsSettings:
        """Inverse of :meth:`to_json`; raises KeyError, TypeError or ValueError for a bad mapping."""
        classes = data["classes"]
        return cls(data["conf_thres"], data["iou_thres"], tuple(classes) if classes is not None else None,
                   data["max_det"], bool(data.get("agnostic", False)))


@dataclass(frozen=True)
class InferenceOptions:
    """How a model is loaded and run: the checkpoint, the device, the input size, the backend and
    its threads, the preprocessor, the lanes, and the NMS settings.

    ``device`` is where the stages run; ``streamdet val`` over several devices replaces it per
    process (:meth:`on`). ``half`` needs a CUDA device: :func:`~streamdet.pipeline.stages.build_stages`
    refuses it on the CPU, where FP16 convolutions are not supported.
    """

    weights: str | Path
    device: str = "cpu"
    img_size: int = 640
    half: bool = False
    backend: str = "auto"
    preprocessor: str = "cpu"
    threads: int | None = None
    cache_dir: Path | None = None
    lanes: int = 1
    nms: NmsSettings = field(default_factory=NmsSettings)

    def __post_init__(self) -> None:
        if int(self.img_size) < 1:
            raise ValueError(f"img_size must be positive, got {self.img_size}")
        if int(self.lanes) < 1:
            raise ValueError(f"lanes must be >= 1, got {self.lanes}")

    def on(self, device: str) -> InferenceOptions:
        """The same options on another device."""
        return replace(self, device=device)

    @classmethod
    def from_config(cls, model: ModelConfig, *, device: str, img_size: int, threads: int | None = None,
                    lanes: int = 1) -> InferenceOptions:
        """The configuration's ``model`` section on ``device``, at the input size the worker chose
        (``model.img_size``, or the checkpoint's when that is not set)."""
        return cls(weights=model.weights, device=device, img_size=img_size, half=model.half, backend=model.backend,
                   threads=threads, cache_dir=Path(model.export_cache) if model.export_cache else None,
                   lanes=lanes, nms=NmsSettings.from_config(model))

