"""Writing checkpoints (save_checkpoint): file format, Ultralytics view, round trips, allow-listed globals."""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import struct
import zipfile
from collections import OrderedDict, deque
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pytest
import torch

from streamdet.errors import ModelError
from streamdet.model.checkpoint import load_model, read_checkpoint, save_checkpoint
from streamdet.model.checkpoint.allowlist import is_allowed_global
from streamdet.model.checkpoint.reader import _SafeUnpickler
from streamdet.model.yolov5 import ARCHITECTURES, YOLOv5
from tests.model.test_yolov5 import small_model

DEMO_CHECKPOINT = Path(__file__).resolve().parents[2] / "configs" / "demo" / "shapes_yolov5n.pt"
_STRING_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"}
_MEMO_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"}
_MEMO_GET_OPS = {"GET", "BINGET", "LONG_BINGET"}

# Globals a checkpoint written by save_checkpoint may contain (README 1.2 list, same form).
EXPECTED_GLOBALS = {
    "models.yolo DetectionModel", "models.yolo Detect", "models.common Conv", "models.common C3",
    "models.common Bottleneck", "models.common SPPF", "models.common Concat",
    "torch.nn.modules.conv Conv2d", "torch.nn.modules.batchnorm BatchNorm2d", "torch.nn.modules.activation SiLU",
    "torch.nn.modules.pooling MaxPool2d", "torch.nn.modules.upsampling Upsample",
    "torch.nn.modules.container Sequential", "torch.nn.modules.container ModuleList",
    "torch._utils _rebuild_tensor_v2", "torch._utils _rebuild_parameter", "collections OrderedDict",
    "__builtin__ set", "torch HalfStorage", "torch FloatStorage", "torch LongStorage",
}


def pickle_globals(data: bytes) -> set[str]:
    """Every global a pickle names, as "module name", from both GLOBAL and STACK_GLOBAL opcodes.

    STACK_GLOBAL takes module and name from the two values pushed just before it (literal strings
    or memo lookups); anything else there is reported as "<computed> <computed>".
    """
    found: set[str] = set()
    pushed: list[Any] = []  # values pushed so far (None: not a string)
    memo: dict[int, Any] = {}
    for op, arg, _ in pickletools.genops(data):
        if op.name == "GLOBAL":
            found.add(arg)
            pushed.append(None)
        elif op.name == "STACK_GLOBAL":
            module, name = pushed[-2:] if len(pushed) >= 2 else (None, None)
            ok = isinstance(module, str) and isinstance(name, str)
            found.add(f"{module} {name}" if ok else "<computed> <computed>")
            pushed.append(None)
        elif op.name in _STRING_OPS:
            pushed.append(arg)
        elif op.name in _MEMO_PUT_OPS:
            memo[len(memo) if op.name == "MEMOIZE" else arg] = pushed[-1] if pushed else None
        elif op.name in _MEMO_GET_OPS:
            pushed.append(memo.get(arg))
        else:
            pushed.append(None)
    return found


def assert_only_allow_listed(data: bytes) -> set[str]:
    """Every global in the pickle is on the shared allow-list, and the reader's find_class resolves it."""
    found = pickle_globals(data)
    refused = sorted(g for g in found if not is_allowed_global(*g.split(" ")))
    assert not refused, f"globals outside the allow-list: {refused}"
    reader = _SafeUnpickler(io.BytesIO(b""), Path("written.pt"), lambda pid: pid)
    for g in found:
        reader.find_class(*g.split(" "))  # raises UnsafeCheckpointError if refused
    return found


def data_pkl(path: Path) -> bytes:
    with zipfile.ZipFile(path) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith("/data.pkl")]
        return zf.read(name)


# ---------------------------------------------------------------------------------------------
# The pickle-globals helper itself (so the allow-list checks below are not vacuous)
# ---------------------------------------------------------------------------------------------


def test_pickle_globals_sees_global_and_stack_global() -> None:
    proto2 = pickle.dumps({"a": OrderedDict(), "b": deque()}, protocol=2)
    proto4 = pickle.dumps({"a": OrderedDict(), "b": deque(), "c": OrderedDict()}, protocol=4)
    assert any(op.name == "STACK_GLOBAL" for op, _, _ in pickletools.genops(proto4))
    assert any(op.name == "BINGET" for op, _, _ in pickletools.genops(proto4))  # 'collections' from the memo
    assert pickle_globals(proto2) == pickle_globals(proto4) == {"collections OrderedDict", "collections deque"}
    evil = pickle.dumps({"x": OrderedDict(), "y": os.system}, protocol=4)
    assert pickle_globals(evil) == {"collections OrderedDict", f"{os.system.__module__} system"}
    with pytest.raises(AssertionError, match="outside the allow-list"):
        assert_only_allow_listed(evil)


# ---------------------------------------------------------------------------------------------
# A small model written with save_checkpoint
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[YOLOv5, Path]:
    model = small_model(nc=3, seed=3)
    model.names = ["circle", "square", "triangle"]
    path = tmp_path_factory.mktemp("save") / "best.pt"
    out = save_checkpoint(model, path, epoch=7, best_fitness=0.5, opt={"imgsz": 320, "save_dir": PurePosixPath("runs")},
                          git={"commit": "abc"})
    assert out == path
    return model, path


def test_save_round_trip_outputs(saved: tuple[YOLOv5, Path]) -> None:
    model, path = saved
    rounded = small_model(nc=3, seed=3)  # same weights, rounded to fp16 as the file stores them
    with torch.no_grad():
        for t in rounded.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.half().float())
    x = torch.rand(2, 3, 64, 96)
    loaded = load_model(path, fuse=False)
    with torch.no_grad():
        want, got = rounded(x), loaded(x)
        assert torch.equal(got, want)
        assert not torch.equal(model(x), want)  # the fp16 rounding is real (so the check above is not vacuous)
        fused = load_model(path)(x)
    torch.testing.assert_close(fused, want, rtol=1e-4, atol=1e-3)
    assert loaded.names == ["circle", "square", "triangle"] and loaded.nc == 3


def test_save_file_format(saved: tuple[YOLOv5, Path]) -> None:
    model, path = saved
    ck = read_checkpoint(path)
    assert ck.names == model.names and ck.nc == 3 and ck.stride == [8.0, 16.0, 32.0]
    assert ck.arch == {**ARCHITECTURES["yolov5n"], "nc": 3, "ch": 3}
    assert ck.meta["epoch"] == 7 and ck.meta["best_fitness"] == 0.5 and ck.meta["git"] == {"commit": "abc"}
    assert ck.meta["opt"]["save_dir"] == PurePosixPath("runs")
    assert list(ck.state_dict) == list(model.state_dict())
    assert all(t.dtype == (torch.float16 if t.is_floating_point() else torch.int64) for t in ck.state_dict.values())
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        assert names[:4] == ["best/data.pkl", "best/.format_version", "best/.storage_alignment", "best/byteorder"]
        assert zf.read("best/byteorder") == b"little" and zf.read("best/version") == b"3\n"
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
        data = zf.read("best/data.pkl")
        offsets = [i.header_offset for i in zf.infolist() if "/data/" in i.filename]
    assert data[:2] == b"\x80\x02"  # protocol 2, as torch.save writes
    assert pickle_globals(data) == EXPECTED_GLOBALS | {"pathlib PurePosixPath"}  # from opt
    raw = path.read_bytes()
    for off in offsets:  # storage records are 64-byte aligned, as torch writes them
        name_len, extra_len = struct.unpack("<HH", raw[off + 26 : off + 30])
        assert (off + 30 + name_len + extra_len) % 64 == 0


def test_saved_file_reads_as_ultralytics_objects(saved: tuple[YOLOv5, Path], fake_ultralytics: Any) -> None:
    """What Ultralytics' attempt_load sees: torch.load gives a DetectionModel tree with the usual attributes."""
    model, path = saved
    ckpt = torch.load(path, weights_only=False)
    assert list(ckpt) == ["epoch", "best_fitness", "model", "ema", "updates", "optimizer", "opt", "git", "date"]
    assert ckpt["ema"] is None and ckpt["optimizer"] is None and ckpt["updates"] is None
    m = ckpt["model"]
    assert type(m).__module__ == "models.yolo" and type(m).__name__ == "DetectionModel"
    assert m.names == {0: "circle", 1: "square", 2: "triangle"} and m.nc == 3 and m.inplace is True
    assert m.stride.dtype == torch.float32 and m.stride.tolist() == [8, 16, 32]
    assert m.save == [4, 6, 10, 14, 17, 20, 23] and m.yaml["nc"] == 3 and not m.training
    det = m.model[24]
    assert type(det).__name__ == "Detect" and (det.nc, det.no, det.nl, det.na) == (3, 8, 3, 3)
    assert det.stride.dtype == torch.float16 and det.stride.tolist() == [8, 16, 32]
    assert len(det.grid) == len(det.anchor_grid) == 3 and det.grid[0].numel() == 0
    assert [m.model[i].type for i in (0, 2, 9, 11, 12, 24)] == [
        "models.common.Conv", "models.common.C3", "models.common.SPPF", "torch.nn.modules.upsampling.Upsample",
        "models.common.Concat", "models.yolo.Detect"]
    assert m.model[12].f == [-1, 6] and m.model[12].d == 1 and m.model[2].m[0].add is True
    assert m.model[11].scale_factor == 2.0 and m.model[11].mode == "nearest"
    assert m.model[0].bn.eps == 1e-3 and m.model[0].conv.bias is None
    sd, own = m.state_dict(), model.state_dict()
    assert list(sd) == list(own)
    for k, v in own.items():
        want = v.half() if v.is_floating_point() else v
        assert sd[k].dtype == want.dtype and torch.equal(sd[k], want), k
    assert all(not p.requires_grad for p in m.parameters())


def test_save_meta_numpy_and_ema(tmp_path: Path) -> None:
    model = YOLOv5(ARCHITECTURES["yolov5n"], nc=2)
    path = save_checkpoint(model, tmp_path / "last.pt", best_fitness=np.float64(0.25), ema=model, updates=10,
                           results=np.array([1.0, 2.0]))
    ck = read_checkpoint(path)
    assert ck.meta["best_fitness"] == 0.25 and isinstance(ck.meta["best_fitness"], np.floating)
    np.testing.assert_array_equal(ck.meta["results"], [1.0, 2.0])
    assert ck.meta["updates"] == 10 and ck.nc == 2


def test_save_refuses_what_the_loader_would_refuse(tmp_path: Path) -> None:
    model = YOLOv5(ARCHITECTURES["yolov5n"], nc=2)
    path = tmp_path / "bad.pt"
    with pytest.raises(ModelError, match="cannot write"):
        save_checkpoint(model, path, opt={"fn": os.path.join})
    assert not path.exists() and not list(tmp_path.iterdir())  # no partial or temporary file left
    with pytest.raises(ModelError, match="fused"):
        save_checkpoint(YOLOv5(ARCHITECTURES["yolov5n"], nc=2).fuse(), path)


# ---------------------------------------------------------------------------------------------
# Round trips of real checkpoints: read -> load -> save -> read/load again
# ---------------------------------------------------------------------------------------------


@pytest.fixture(params=["fixture", "demo"])
def source_checkpoint(request: pytest.FixtureRequest, checkpoint_path: Path) -> Path:
    return checkpoint_path if request.param == "fixture" else DEMO_CHECKPOINT


def test_round_trip_real_checkpoint(tmp_path: Path, source_checkpoint: Path) -> None:
    original = read_checkpoint(source_checkpoint)
    model = load_model(source_checkpoint, fuse=False)
    path = save_checkpoint(model, tmp_path / "again.pt", **original.meta)
    again = read_checkpoint(path)
    assert list(again.state_dict) == list(original.state_dict)
    for k, v in original.state_dict.items():  # fp16 -> fp32 -> fp16 is exact
        assert again.state_dict[k].dtype == v.dtype and torch.equal(again.state_dict[k], v), k
    assert (again.arch, again.names, again.nc, again.stride) == (original.arch, original.names, original.nc,
                                                                 original.stride)
    assert again.meta == original.meta

    reloaded = load_model(path, fuse=False)
    sd, want_sd = reloaded.state_dict(), model.state_dict()
    assert list(sd) == list(want_sd) and all(torch.equal(sd[k], v) for k, v in want_sd.items())
    x = torch.from_numpy(np.random.default_rng(5).random((1, 3, 128, 160), dtype=np.float32))
    with torch.no_grad():
        want = model(x)
        assert torch.equal(reloaded(x), want)
        assert torch.equal(load_model(path)(x), load_model(source_checkpoint)(x))  # fused, too
    assert want.shape == (1, 3 * (16 * 20 + 8 * 10 + 4 * 5), 5 + original.nc)


def test_written_file_references_only_allow_listed_globals(tmp_path: Path, source_checkpoint: Path,
                                                           saved: tuple[YOLOv5, Path]) -> None:
    ck = read_checkpoint(source_checkpoint)
    path = save_checkpoint(load_model(source_checkpoint, fuse=False), tmp_path / "written.pt", **ck.meta)
    found = assert_only_allow_listed(data_pkl(path))
    assert found - {"pathlib PurePosixPath"} == EXPECTED_GLOBALS  # the whole model tree, nothing else
    assert assert_only_allow_listed(data_pkl(saved[1])) == EXPECTED_GLOBALS | {"pathlib PurePosixPath"}
    assert_only_allow_listed(data_pkl(source_checkpoint))  # the source files pass the same check


@pytest.mark.parametrize("official_name", ["posix.system", "models.common._Hidden", "torch.nn.modules.conv.x.Conv2d",
                                           "models.Conv"])
def test_writer_refuses_module_names_the_reader_would_refuse(tmp_path: Path, official_name: str) -> None:
    model = YOLOv5(ARCHITECTURES["yolov5n"], nc=2)
    model.model[0].add_module("extra", type("Extra", (torch.nn.Identity,), {"official_name": official_name})())
    with pytest.raises(ModelError, match=f"cannot write {official_name}".replace(".", r"\.")):
        save_checkpoint(model, tmp_path / "bad.pt")
    assert not list(tmp_path.iterdir())
    type(model.model[0].extra).official_name = "models.common.Extra"  # control: an allow-listed name is written
    assert "models.common Extra" in assert_only_allow_listed(data_pkl(save_checkpoint(model, tmp_path / "ok.pt")))
