"""InferenceOptions and NmsSettings: the model options as one value, from every place they are made."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamdet.config.schema import ModelConfig
from streamdet.pipeline.settings import InferenceOptions, NmsSettings

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo" / "shapes_yolov5n.pt"


def test_nms_settings_check_and_normalise() -> None:
    s = NmsSettings.of(0.5, 0.3, [2, 0], 5)
    assert s == NmsSettings(0.5, 0.3, (2, 0), 5) and isinstance(s.classes, tuple)
    assert NmsSettings.from_json(s.to_json()) == s
    for bad in ({"conf_thres": 1.5}, {"iou_thres": -0.1}, {"max_det": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            NmsSettings(**bad)  # type: ignore[arg-type]


def test_from_config_carries_every_model_option() -> None:
    m = ModelConfig(weights=DEMO, conf_thres=0.4, iou_thres=0.5, classes=(1,), max_det=7, backend="torch",
                    export_cache=DEMO.parent)
    o = InferenceOptions.from_config(m, device="cpu", img_size=416, threads=2, lanes=3)
    assert o == InferenceOptions(DEMO, device="cpu", img_size=416, half=False, backend="torch", threads=2,
                                 cache_dir=DEMO.parent, lanes=3, nms=NmsSettings(0.4, 0.5, (1,), 7))
    assert o.on("cuda:1") == InferenceOptions(DEMO, device="cuda:1", img_size=416, backend="torch", threads=2,
                                             cache_dir=DEMO.parent, lanes=3, nms=o.nms)


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="lanes"):
        InferenceOptions(DEMO, lanes=0)
    with pytest.raises(ValueError, match="img_size"):
        InferenceOptions(DEMO, img_size=0)
