"""Safe checkpoint reading and loading: official fixture, malicious pickles, broken files, the allow-list.

Writing (save_checkpoint) is tested in test_checkpoint_writer.py.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import pickletools
import struct
import subprocess
import time
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from streamdet.errors import CheckpointError, UnsafeCheckpointError
from streamdet.model.checkpoint import Checkpoint, load_model, read_checkpoint, save_checkpoint
from streamdet.model.checkpoint.allowlist import is_allowed_global
from streamdet.model.yolov5 import ARCHITECTURES, YOLOv5

COCO_HEAD = ["person", "bicycle", "car", "motorcycle", "airplane"]


# ---------------------------------------------------------------------------------------------
# The official fixture
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fixture_ckpt(checkpoint_path: Path) -> Checkpoint:
    return read_checkpoint(checkpoint_path)


def test_state_dict_matches_manifest(fixture_ckpt: Checkpoint, yolov5_dir: Path) -> None:
    with np.load(yolov5_dir / "yolov5n_state_dict_manifest.npz") as z:
        keys, shapes, dtypes, sums, abssums = (z[k] for k in ("keys", "shapes", "dtypes", "sum_f64", "abssum_f64"))
    sd = fixture_ckpt.state_dict
    assert list(sd) == list(keys) and len(sd) == 349
    for i, (k, t) in enumerate(sd.items()):
        assert tuple(t.shape) == tuple(int(s) for s in shapes[i][: t.dim()]), k
        assert (shapes[i][t.dim():] == -1).all(), k
        assert str(t.dtype) == f"torch.{dtypes[i]}", k
        assert t.double().sum().item() == sums[i], k
        assert t.double().abs().sum().item() == abssums[i], k
    assert sum(t.dtype == torch.float16 for t in sd.values()) == 292
    assert sum(t.dtype == torch.int64 for t in sd.values()) == 57


def test_checkpoint_fields(fixture_ckpt: Checkpoint) -> None:
    ck = fixture_ckpt
    assert isinstance(ck.names, list) and len(ck.names) == 80 and ck.names[:5] == COCO_HEAD
    assert ck.names[-1] == "toothbrush"
    assert ck.nc == 80 and ck.stride == [8.0, 16.0, 32.0]
    assert ck.arch["nc"] == 80 and ck.arch["ch"] == 3 and ck.arch["width_multiple"] == 0.25
    assert ck.arch["head"][-1] == [[17, 20, 23], 1, "Detect", ["nc", "anchors"]]
    assert ck.meta["epoch"] == -1 and ck.meta["best_fitness"] is None and ck.meta["updates"] is None
    assert ck.meta["git"]["commit"].startswith("5081342f")
    assert isinstance(ck.meta["date"], str)
    assert ck.meta["opt"]["evolve_population"] == PurePosixPath("data/hyps")  # inert stand-in for PosixPath
    assert ck.meta["opt"]["cfg"] == "models/yolov5n.yaml"
    assert "model" not in ck.meta and "ema" not in ck.meta and "optimizer" not in ck.meta
    assert ck.state_dict["model.24.anchors"][0].tolist() == [[1.25, 1.625], [2.0, 3.75], [4.125, 2.875]]


def test_official_detect_bias_init_formula(fixture_ckpt: Checkpoint) -> None:
    """The official checkpoint's head biases are our initialize_biases() prior plus default init noise."""
    for i, s in enumerate((8, 16, 32)):
        w = fixture_ckpt.state_dict[f"model.24.m.{i}.weight"]
        b = fixture_ckpt.state_dict[f"model.24.m.{i}.bias"].double().view(3, 85)
        bound = 1 / math.sqrt(w.shape[1]) + 1e-2  # default U(-1/sqrt(fan_in), ..) plus fp16 rounding
        assert (b[:, 4] - math.log(8 / (640 / s) ** 2)).abs().max() <= bound
        assert (b[:, 5:] - math.log(0.6 / (80 - 0.99))).abs().max() <= bound


def test_load_model_ready_for_inference(checkpoint_path: Path, fixture_ckpt: Checkpoint) -> None:
    model = load_model(checkpoint_path)
    assert isinstance(model, YOLOv5) and not model.training
    assert model.names == fixture_ckpt.names and model.nc == 80
    assert model.stride.tolist() == [8.0, 16.0, 32.0] and model.stride.dtype == torch.float32
    assert model.is_fused and not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert all(not p.requires_grad for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    unfused = load_model(checkpoint_path, fuse=False)
    sd = unfused.state_dict()
    assert list(sd) == list(fixture_ckpt.state_dict)
    for k, v in fixture_ckpt.state_dict.items():  # exact fp16 -> fp32 upcast
        assert torch.equal(sd[k], v.to(sd[k].dtype)), k


# ---------------------------------------------------------------------------------------------
# Malicious pickles: refused, named, and never executed
# ---------------------------------------------------------------------------------------------


class _Reduce:
    """Pickles as ``func(*args)``: the classic pickle code-execution payload."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


def _touch_code(marker: Path) -> str:
    return f"__import__('pathlib').Path({str(marker)!r}).touch()"


def _payloads(marker: Path) -> dict[str, tuple[Any, str]]:
    """name -> (object to embed, text the refusal must contain)."""
    import builtins

    return {
        "os.system": (_Reduce(os.system, f"touch '{marker}'"), "os.system"),
        "builtins.eval": (_Reduce(builtins.eval, _touch_code(marker)), "builtins.eval"),
        "builtins.exec": (_Reduce(builtins.exec, _touch_code(marker)), "builtins.exec"),
        "subprocess.Popen": (_Reduce(subprocess.Popen, ["touch", str(marker)]), "subprocess.Popen"),
    }


def _wait_for(path: Path, seconds: float = 3.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if path.exists():
            return True
        time.sleep(0.05)
    return path.exists()


def _nested_model(payload: Any) -> nn.Module:
    """A torch.nn tree (allowed placeholders) with the payload deep inside a submodule's __dict__."""
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Sequential(nn.BatchNorm2d(4)))
    model[1][0].evil = {"nested": [payload]}
    return model


@pytest.mark.filterwarnings("ignore:Couldn't retrieve source code")
@pytest.mark.parametrize("where", ["top", "model_dict", "opt", "legacy"])
@pytest.mark.parametrize("kind", ["os.system", "builtins.eval", "builtins.exec", "subprocess.Popen"])
def test_malicious_pickle_is_refused_and_not_run(tmp_path: Path, kind: str, where: str) -> None:
    marker = tmp_path / "marker"
    payload, global_name = _payloads(marker)[kind]
    if where == "top":
        obj: Any = payload
    elif where == "model_dict":  # a nested __reduce__ inside the model object tree
        obj = {"epoch": -1, "model": _nested_model(payload), "ema": None}
    else:
        obj = {"epoch": -1, "model": nn.Sequential(nn.Conv2d(3, 4, 1)), "opt": {"hyp": payload}}
    path = tmp_path / "evil.pt"
    torch.save(obj, path, _use_new_zipfile_serialization=where != "legacy")
    if where == "model_dict" and kind in ("os.system", "builtins.eval"):
        # positive control: the file really runs the payload when loaded the unsafe way
        torch.load(path, weights_only=False)
        assert _wait_for(marker), "payload did not fire under plain torch.load"
        marker.unlink()
    with pytest.raises(UnsafeCheckpointError, match=global_name.replace(".", r"\.")) as info:
        read_checkpoint(path)
    assert str(path) in str(info.value) and "refusing to load" in str(info.value)
    with pytest.raises(UnsafeCheckpointError):
        load_model(path)
    assert not _wait_for(marker, 0.3), "payload ran"


def test_handwritten_global_names_os_system(tmp_path: Path) -> None:
    """A hand-made pickle naming ``os system`` directly (not posix) inside a torch zip."""
    marker = tmp_path / "marker"
    cmd = f"touch '{marker}'".encode()
    data = (b"\x80\x02}q\x00X\x05\x00\x00\x00modelq\x01cos\nsystem\nq\x02X" + struct.pack("<I", len(cmd)) + cmd
            + b"\x85R\x73.")
    assert pickletools.dis(data, out=io.StringIO()) is None  # well-formed
    path = tmp_path / "hand.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("hand/data.pkl", data)
        zf.writestr("hand/version", b"3\n")
    with pytest.raises(UnsafeCheckpointError, match=r"it references os\.system"):
        read_checkpoint(path)
    assert not marker.exists()
    pickle.loads(data)  # positive control: the same bytes do run under plain pickle
    assert marker.exists()


def test_other_unlisted_globals_are_refused(tmp_path: Path) -> None:
    for obj, name in ((_Reduce(getattr, [], "append"), "getattr"), (_Reduce(np.load, "x.npy"), "numpy"),
                      (_Reduce(torch.load, "x.pt"), "torch.serialization.load")):
        path = tmp_path / f"{name}.pt"
        torch.save({"model": obj}, path)
        with pytest.raises(UnsafeCheckpointError, match=name):
            read_checkpoint(path)


# ---------------------------------------------------------------------------------------------
# Broken and foreign files
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.001, 0.5, 0.999])
def test_truncated_checkpoint(tmp_path: Path, checkpoint_path: Path, fraction: float) -> None:
    data = checkpoint_path.read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(CheckpointError, match="truncated") as info:
        read_checkpoint(path)
    assert str(path) in str(info.value) and not isinstance(info.value, UnsafeCheckpointError)


def test_corrupted_storage_bytes(tmp_path: Path, checkpoint_path: Path) -> None:
    data = bytearray(checkpoint_path.read_bytes())
    with zipfile.ZipFile(checkpoint_path) as zf:
        info = zf.getinfo("yolov5n_random/data/0")
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    data[start : start + 16] = bytes(16)
    path = tmp_path / "corrupt.pt"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"corrupt.*\b(CRC|crc)"):
        read_checkpoint(path)


@pytest.mark.parametrize("case", ["random", "empty", "missing", "text", "pickle_not_torch", "garbage_pickle"])
def test_not_a_checkpoint(tmp_path: Path, case: str) -> None:
    path = tmp_path / "bad.pt"
    expected = {"random": "not a PyTorch checkpoint", "empty": "empty", "missing": "no such",
                "text": "not a PyTorch checkpoint", "pickle_not_torch": "not a PyTorch checkpoint",
                "garbage_pickle": "corrupt"}[case]
    if case == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "text":
        path.write_text("nc: 80\n")
    elif case == "pickle_not_torch":
        path.write_bytes(pickle.dumps({"model": 1}, protocol=2))
    elif case == "garbage_pickle":
        path.write_bytes(b"\x80\x02" + np.random.default_rng(1).bytes(64))
    with pytest.raises(CheckpointError, match=expected) as info:
        read_checkpoint(path)
    assert str(path) in str(info.value)


def test_compressed_records_are_refused(tmp_path: Path, checkpoint_path: Path) -> None:
    path = tmp_path / "deflated.pt"
    with zipfile.ZipFile(checkpoint_path) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    with pytest.raises(CheckpointError, match="compressed"):
        read_checkpoint(path)


def test_zip_that_is_not_a_torch_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointError, match="data.pkl"):
        read_checkpoint(path)


@pytest.mark.parametrize("obj, message", [
    ({"epoch": 3, "optimizer": None}, "no 'model' or 'ema'"),
    ({"model": None, "ema": None}, "no 'model' or 'ema'"),
    (torch.zeros(3), "holds a Tensor"),
    ({"model": {"model.0.conv.weight": torch.zeros(1)}}, "not a pickled YOLOv5 model"),
    ({"model": nn.Sequential(nn.Conv2d(3, 4, 1))}, "no architecture dict"),
])
def test_torch_files_that_are_not_yolov5(tmp_path: Path, obj: Any, message: str) -> None:
    path = tmp_path / "foreign.pt"
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match=message) as info:
        read_checkpoint(path)
    assert str(path) in str(info.value)


# ---------------------------------------------------------------------------------------------
# Files written by other tooling (torch.save of live objects, legacy format, names as a list, ema)
# ---------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Couldn't retrieve source code")
def test_legacy_format_and_names_list(tmp_path: Path, checkpoint_path: Path, fixture_ckpt: Checkpoint,
                                      fake_ultralytics: Any) -> None:
    ckpt = torch.load(checkpoint_path, weights_only=False)
    ckpt["model"].names = list(fixture_ckpt.names)  # older checkpoints store a list
    path = tmp_path / "legacy.pt"
    torch.save(ckpt, path, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(path)
    ck = read_checkpoint(path)
    assert ck.names == fixture_ckpt.names and ck.nc == 80 and ck.stride == [8.0, 16.0, 32.0]
    assert list(ck.state_dict) == list(fixture_ckpt.state_dict)
    for k, v in fixture_ckpt.state_dict.items():
        assert ck.state_dict[k].dtype == v.dtype and torch.equal(ck.state_dict[k], v), k
    # a truncated legacy file is reported, not half-loaded
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match="truncated"):
        read_checkpoint(path)


def test_ema_is_preferred_over_model(tmp_path: Path, checkpoint_path: Path, fake_ultralytics: Any) -> None:
    ckpt = torch.load(checkpoint_path, weights_only=False)
    ema = torch.load(checkpoint_path, weights_only=False)["model"]
    with torch.no_grad():
        ema.model[0].conv.weight.fill_(0.5)
    ema.names = {i: f"ema{i}" for i in range(80)}
    ckpt["ema"] = ema
    path = tmp_path / "last.pt"
    torch.save(ckpt, path)
    ck = read_checkpoint(path)
    assert ck.names[0] == "ema0"
    assert (ck.state_dict["model.0.conv.weight"] == 0.5).all()


# ---------------------------------------------------------------------------------------------
# The shared allow-list and the loader
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("module, name, allowed", [
    ("collections", "OrderedDict", True), ("torch._utils", "_rebuild_tensor_v2", True), ("torch", "HalfStorage", True),
    ("models.common", "Conv", True), ("models.yolo", "DetectionModel", True),
    ("torch.nn.modules.conv", "Conv2d", True), ("models.common", "_private", False),
    ("torch.nn.modules.conv.extra", "Conv2d", False), ("torch.nn.modules", "Module", False),
    ("posix", "system", False), ("builtins", "eval", False), ("torch", "load", False), ("models", "yolo", False),
])
def test_reader_resolves_exactly_the_allow_list(tmp_path: Path, module: str, name: str, allowed: bool) -> None:
    """The reader's find_class and the shared allow-list (which the writer checks against) agree."""
    assert is_allowed_global(module, name) is allowed
    data = b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"q\x00."  # a pickle of just that global
    path = tmp_path / "one.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("one/data.pkl", data)
    if allowed:  # resolved, then refused only because a bare global is not a checkpoint dict
        with pytest.raises(CheckpointError, match="not a YOLOv5 checkpoint") as info:
            read_checkpoint(path)
        assert not isinstance(info.value, UnsafeCheckpointError)
    else:
        with pytest.raises(UnsafeCheckpointError, match=f"references {module}.{name}".replace(".", r"\.")):
            read_checkpoint(path)


def test_load_model_reports_weight_mismatches(tmp_path: Path) -> None:
    model = YOLOv5(ARCHITECTURES["yolov5n"], nc=2)
    model.yaml = {**ARCHITECTURES["yolov5s"], "nc": 2, "ch": 3}  # weights of n, architecture of s
    path = save_checkpoint(model, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match=r"shape mismatch: model\.0\.conv\.weight: checkpoint \(16, 3, 6, 6\)"):
        load_model(path)

    model = YOLOv5(ARCHITECTURES["yolov5n"], nc=2)
    model.model[24].register_buffer("extra", torch.zeros(1))
    del model.model[0].bn._buffers["running_var"]
    path = save_checkpoint(model, tmp_path / "keys.pt")
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    assert "missing: model.0.bn.running_var" in str(info.value)
    assert "unexpected: model.24.extra" in str(info.value)


@pytest.mark.gpu
def test_half_on_cuda(checkpoint_path: Path, reference_runs: Any) -> None:
    from tests.model.conftest import regenerate_input

    model = load_model(checkpoint_path, device="cuda", half=True)
    assert next(model.parameters()).dtype == torch.float16 and next(model.parameters()).is_cuda
    x = torch.from_numpy(regenerate_input("yolov5n_ref_rect.npz")).cuda().half()
    with torch.no_grad():
        pred = model(x)
    assert pred.dtype == torch.float16 and pred.is_cuda and pred.shape == (1, 15120, 85)
    ref, _ = reference_runs.run("yolov5n_ref_rect.npz", False)
    # fp16 of a deep random net: boxes agree loosely, scores to a few hundredths (README: fp16 effect ~0.04)
    diff = (pred.float().cpu() - ref).abs()
    assert torch.isfinite(pred).all()
    assert diff[..., 4:].max() < 0.1 and diff[..., :2].max() < 16
