"""The YOLOv5 network: architecture building, official layout, decoding semantics, fuse, init."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from streamdet.errors import ModelError
from streamdet.model.yolov5 import ARCHITECTURES, C3, Conv, Detect, YOLOv5, make_divisible

# Parameter counts at nc=80. P5: the exact counts official model summaries print after fusing
# (BatchNorm folded). P6: the public README "params (M)" column, rounded to 0.1M; it matches the
# fused count except for l6, where 76.8 is the unfused count (76.77M; fused 76.73M), so either
# rounding is accepted there.
OFFICIAL_FUSED_PARAMS = {
    "yolov5n": 1867405, "yolov5s": 7225885, "yolov5m": 21172173, "yolov5l": 46533693, "yolov5x": 86705005,
}
OFFICIAL_PARAMS_M = {"yolov5n6": 3.2, "yolov5s6": 12.6, "yolov5m6": 35.7, "yolov5l6": 76.8, "yolov5x6": 140.7}
# (bottlenecks in the backbone's 9-repeat C3 = layer 6, output channels of layer 0)
DEPTH_WIDTH = {"n": (3, 16), "s": (3, 32), "m": (6, 48), "l": (9, 64), "x": (12, 80)}
P5_ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]


def small_model(nc: int = 3, seed: int = 0) -> YOLOv5:
    """yolov5n with non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    model = YOLOv5(ARCHITECTURES["yolov5n"], nc=nc)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def expected_rows(h: int, w: int, strides: list[int], na: int = 3) -> int:
    return sum(na * (h // s) * (w // s) for s in strides)


# Built on the meta device (shapes only, no memory or arithmetic): every nc=80 build, and the
# large variants. Real CPU builds and forwards: n, s, m, n6, s6, m6 and the largest, x6, at nc=3.
META_ONLY = {"yolov5l", "yolov5x", "yolov5l6"}


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_architecture_builds_with_official_size_and_output_shapes(name: str) -> None:
    p6 = name.endswith("6")
    strides = [8, 16, 32, 64] if p6 else [8, 16, 32]
    layer6_repeats, stem_channels = DEPTH_WIDTH[name[6]]
    h, w = 64, 128  # tiny and non-square: x/y mix-ups change the shapes
    for nc in (3, 80):
        real = name not in META_ONLY and nc == 3
        device = torch.device("cpu" if real else "meta")
        with device:
            model = YOLOv5(ARCHITECTURES[name], nc=nc)
            x = torch.rand(1, 3, h, w)
        assert next(model.parameters()).device == device
        assert model.nc == nc and model.names == [f"class{i}" for i in range(nc)]
        assert model.stride.dtype == torch.float32 and model.stride.tolist() == strides
        assert len(model.model) == (34 if p6 else 25) and isinstance(model.detect, Detect)
        assert model.detect.anchors.shape == (len(strides), 3, 2)
        assert len(model.model[6].m) == layer6_repeats
        assert model.model[0].conv.out_channels == stem_channels
        assert [c.out_channels for c in model.detect.m] == [3 * (nc + 5)] * len(strides)
        if nc == 80:
            bn = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d))
            params = sum(p.numel() for p in model.parameters())
            fused_params = params - bn  # folding keeps one bias per BN channel, drops the BN weight
            if name in OFFICIAL_FUSED_PARAMS:
                assert fused_params == OFFICIAL_FUSED_PARAMS[name]
            else:
                assert OFFICIAL_PARAMS_M[name] in (round(fused_params / 1e6, 1), round(params / 1e6, 1))
                assert round(fused_params / 1e6, 1) == OFFICIAL_PARAMS_M[name] or name == "yolov5l6"
        model.eval()
        with torch.no_grad():
            pred, raw = model.forward_raw(x)
        assert pred.shape == (1, expected_rows(h, w, strides), nc + 5) and pred.device == device
        assert not real or torch.isfinite(pred).all()
        assert [tuple(r.shape) for r in raw] == [(1, 3, h // s, w // s, nc + 5) for s in strides]
        del model


def test_yolov5n_matches_checkpoint_architecture_and_layout(yolov5_dir: Path) -> None:
    """ARCHITECTURES['yolov5n'] is the yaml stored in the official checkpoint; keys/shapes match it."""
    from streamdet.model.checkpoint import read_checkpoint

    ckpt = read_checkpoint(yolov5_dir / "yolov5n_random.pt")
    stored = {k: v for k, v in ckpt.arch.items() if k != "ch"}
    assert stored == ARCHITECTURES["yolov5n"]
    model = YOLOv5(ARCHITECTURES["yolov5n"])
    with np.load(yolov5_dir / "yolov5n_state_dict_manifest.npz") as z:
        keys, shapes = list(z["keys"]), z["shapes"]
    sd = model.state_dict()
    assert list(sd) == keys
    for (k, t), shape in zip(sd.items(), shapes, strict=True):
        assert tuple(t.shape) == tuple(int(s) for s in shape[: t.dim()]) and (shape[t.dim():] == -1).all(), k
    assert model.save == [4, 6, 10, 14, 17, 20, 23]
    assert [m.f for m in model.model][10:] == [-1, -1, [-1, 6], -1, -1, -1, [-1, 4], -1, -1, [-1, 14], -1, -1,
                                               [-1, 10], -1, [17, 20, 23]]
    assert [m.i for m in model.model] == list(range(25))
    # Bottleneck shortcuts: on in backbone C3s, off in head C3s (README 1.3)
    for i in (2, 4, 6, 8):
        assert all(b.add for b in model.model[i].m)
    for i in (13, 17, 20, 23):
        assert not any(b.add for b in model.model[i].m)


def test_make_divisible_rule() -> None:
    assert [make_divisible(x) for x in (64 * 0.25, 1024 * 0.25, 768 * 0.75, 64 * 1.25, 1.0, 8.0001)] == \
        [16, 256, 576, 80, 8, 16]


def test_anchors_in_grid_units_and_strides() -> None:
    model = YOLOv5(ARCHITECTURES["yolov5n"])
    expected = torch.tensor(P5_ANCHORS, dtype=torch.float32).view(3, 3, 2) / torch.tensor([8.0, 16, 32]).view(3, 1, 1)
    assert torch.equal(model.detect.anchors, expected)
    assert model.detect.anchors[0].tolist() == [[1.25, 1.625], [2.0, 3.75], [4.125, 2.875]]
    assert torch.equal(model.detect.stride, model.stride)
    assert "model.24.anchors" in model.state_dict() and "detect.anchors" not in model.state_dict()


def test_unknown_module_raises_and_nothing_is_evaluated(tmp_path: Path) -> None:
    arch = copy.deepcopy(ARCHITECTURES["yolov5n"])
    arch["head"][3][2] = "C3TR"  # layer 13
    with pytest.raises(ModelError, match=r"layer 13.*C3TR"):
        YOLOv5(arch)
    marker = tmp_path / "marker"
    evil = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    arch = copy.deepcopy(ARCHITECTURES["yolov5n"])
    arch["backbone"][1][2] = evil  # as a module name
    with pytest.raises(ModelError, match="layer 1"):
        YOLOv5(arch)
    arch = copy.deepcopy(ARCHITECTURES["yolov5n"])
    arch["backbone"][1][3] = [128, evil, 2]  # as an argument
    with pytest.raises(ModelError, match="layer 1"):
        YOLOv5(arch)
    arch = copy.deepcopy(ARCHITECTURES["yolov5n"])
    arch["anchors"] = evil
    with pytest.raises(ModelError):
        YOLOv5(arch)
    assert not marker.exists()


def test_malformed_architectures_raise_model_error() -> None:
    arch = copy.deepcopy(ARCHITECTURES["yolov5n"])
    del arch["head"]
    with pytest.raises(ModelError, match="head"):
        YOLOv5(arch)
    arch = copy.deepcopy(ARCHITECTURES["yolov5n"])
    arch["head"] = arch["head"][:-1]  # no Detect at the end
    with pytest.raises(ModelError, match="Detect"):
        YOLOv5(arch)
    arch = copy.deepcopy(ARCHITECTURES["yolov5n"])
    arch["head"][2] = [[-1, 6], 1, "Concat"]  # only 3 fields
    with pytest.raises(ModelError, match="layer 12"):
        YOLOv5(arch)
    with pytest.raises(ModelError, match="nc"):
        YOLOv5(ARCHITECTURES["yolov5n"], nc=0)


def test_architecture_dict_is_not_mutated() -> None:
    before = copy.deepcopy(ARCHITECTURES["yolov5s"])
    model = YOLOv5(ARCHITECTURES["yolov5s"], nc=7)
    assert ARCHITECTURES["yolov5s"] == before
    assert model.yaml["nc"] == 7 and model.yaml["ch"] == 3 and model.yaml["backbone"] == before["backbone"]


def test_training_init_bn_and_detect_biases() -> None:
    torch.manual_seed(1)
    model = YOLOv5(ARCHITECTURES["yolov5n"], nc=3)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 57 and all(bn.eps == 1e-3 and bn.momentum == 0.03 for bn in bns)
    assert all(m.conv.bias is None for m in model.modules() if isinstance(m, Conv))
    assert model.training
    det = model.detect
    before = [c.bias.detach().clone().view(3, -1) for c in det.m]
    for conv, s, b in zip(det.m, (8, 16, 32), before, strict=True):
        bound = 1 / math.sqrt(conv.in_channels)  # PyTorch default bias init is U(-bound, bound)
        assert (b[:, 4] - math.log(8 / (640 / s) ** 2)).abs().max() <= bound
        assert (b[:, 5:] - math.log(0.6 / (3 - 0.99))).abs().max() <= bound
        assert b[:, :4].abs().max() <= bound
    model.initialize_biases()  # once more: exact increments
    for conv, s, b in zip(det.m, (8, 16, 32), before, strict=True):
        delta = conv.bias.detach().view(3, -1) - b
        torch.testing.assert_close(delta[:, 4], torch.full((3,), math.log(8 / (640 / s) ** 2)))
        torch.testing.assert_close(delta[:, 5:], torch.full((3, 3), math.log(0.6 / 2.01)))
        assert torch.equal(delta[:, :4], torch.zeros(3, 4))
    assert all(c.bias.requires_grad for c in det.m)


def test_decoding_semantics_and_row_order() -> None:
    """Eval output = documented formula applied to the raw outputs, rows in (level, anchor, y, x) order."""
    model = small_model(nc=2)
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        pred, raw = model.forward_raw(x)
        assert torch.equal(model(x), pred)
        model.train()
        for m in model.modules():  # BN on running statistics, so only the output form changes
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        raw_train = model(x)
        model.eval()
    assert isinstance(raw_train, list) and all(torch.equal(a, b) for a, b in zip(raw_train, raw, strict=True))
    anchors_px = [[[10, 13], [16, 30], [33, 23]], [[30, 61], [62, 45], [59, 119]], [[116, 90], [156, 198], [373, 326]]]
    rows, offset = 0, 0
    for level, (r, s) in enumerate(zip(raw, (8, 16, 32), strict=True)):
        bsz, na, ny, nx, no = r.shape
        assert (bsz, na, ny, nx, no) == (2, 3, 64 // s, 96 // s, 7)
        sig = r.sigmoid().double()
        for a in range(na):
            for yy in (0, ny - 1):
                for xx in (0, nx - 1):
                    row = offset + a * ny * nx + yy * nx + xx
                    t = sig[1, a, yy, xx]
                    want = torch.cat([
                        (2 * t[0:1] - 0.5 + xx) * s, (2 * t[1:2] - 0.5 + yy) * s,
                        (2 * t[2:4]) ** 2 * torch.tensor(anchors_px[level][a], dtype=torch.float64), t[4:],
                    ])
                    torch.testing.assert_close(pred[1, row].double(), want, rtol=1e-5, atol=1e-4)
        offset += na * ny * nx
        rows += na * ny * nx
    assert pred.shape == (2, rows, 7)


def test_batch_members_are_independent() -> None:
    model = small_model()
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        batch = model(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batch, single, rtol=1e-5, atol=1e-4)


def test_float64_and_float16() -> None:
    model = small_model()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        pred64 = copy.deepcopy(model).double()(x.double())
        pred16 = copy.deepcopy(model).half()(x.half())
    assert pred64.dtype == torch.float64 and pred16.dtype == torch.float16
    torch.testing.assert_close(pred64.float(), ref, rtol=1e-4, atol=1e-3)
    assert torch.isfinite(pred16).all()
    # half precision: boxes within a few pixels, scores within a few hundredths
    assert (pred16[..., :4].float() - ref[..., :4]).abs().max() < 4.0
    assert (pred16[..., 4:].float() - ref[..., 4:]).abs().max() < 0.05


def test_grid_cache_per_shape_device_dtype() -> None:
    model = small_model()
    det = model.detect
    with torch.no_grad():
        a = model(torch.rand(1, 3, 64, 64))
        n1 = len(det._grids)
        model(torch.rand(1, 3, 64, 64))
        assert len(det._grids) == n1 == 3  # one grid per level, reused
        b = model(torch.rand(1, 3, 32, 96))
        assert len(det._grids) == 6
    assert a.shape == (1, 3 * (64 + 16 + 4), 8) and b.shape == (1, 3 * (48 + 12 + 3), 8)
    keys = set(det._grids)
    assert (8, 8, torch.device("cpu"), torch.float32) in keys and (4, 12, torch.device("cpu"), torch.float32) in keys


def test_fuse_folds_batchnorm() -> None:
    model = small_model()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        ref_pred, ref_raw = model.forward_raw(x)
        assert model.fuse() is model
        pred, raw = model.forward_raw(x)
    assert model.is_fused
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert all(m.conv.bias is not None for m in model.modules() if isinstance(m, Conv))
    assert not any(".bn." in k for k in model.state_dict())
    for a, b in zip(raw, ref_raw, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(pred, ref_pred, rtol=1e-4, atol=1e-3)
    model.fuse()  # idempotent
    with torch.no_grad():
        assert torch.equal(model(x), pred)


def test_input_size_must_be_multiple_of_stride() -> None:
    model = small_model()
    with pytest.raises(ModelError, match="multiples of 32"):
        model(torch.rand(1, 3, 64, 70))
    with pytest.raises(ModelError, match="B, C, H, W"):
        model(torch.rand(3, 64, 64))


def test_c3_is_a_csp_block() -> None:
    """C3 output = cv3(cat(m(cv1(x)), cv2(x))) (README 1.3), checked against its own parts."""
    torch.manual_seed(0)
    block = C3(16, 32, n=2).eval()
    x = torch.rand(1, 16, 8, 8)
    with torch.no_grad():
        want = block.cv3(torch.cat((block.m[1](block.m[0](block.cv1(x))), block.cv2(x)), 1))
        assert torch.equal(block(x), want)
    assert block.cv1.conv.out_channels == 16 and all(b.add for b in block.m)
