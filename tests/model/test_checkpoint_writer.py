"""Writing checkpoints (save_checkpoint): file format, Ultralytics view, round trips, allow-listed globals."""

from __future__ import annotations

import io
import json
import os
import pickle
import pickletools
import struct
import zipfile
from collections import OrderedDict, deque
from dataclasses import asdict
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pytest
import torch

from streamdet.errors import ModelError
from streamdet.model.checkpoint import load_model, read_checkpoint, save_checkpoint
from streamdet.model.checkpoint.allowlist import is_allowed_global
from streamdet.model.checkpoint.reader import _SafeUnpickler
from streamdet.model.checkpoint.train_meta import train_py_opt_defaults
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
    assert [tuple(g.shape) for g in det.grid] == [(1, 3, 40, 40, 2), (1, 3, 20, 20, 2), (1, 3, 10, 10, 2)]  # imgsz 320
    assert all(g.dtype == torch.float16 for g in det.grid + det.anchor_grid)
    assert det.grid[1][0, 2, 3, 5].tolist() == [4.5, 2.5]  # cell (y=3, x=5) - 0.5, for every anchor
    assert det.anchor_grid[2][0, 1, 7, 7].tolist() == (det.anchors[2, 1].float() * 32).tolist()  # anchor 1 in pixels
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
    assert again.trained_img_size == original.trained_img_size
    if source_checkpoint == DEMO_CHECKPOINT:
        # The demo was written by this writer: train.py's option set with our trainer's dict under
        # "streamdet"; rewriting it keeps the opt as it is (nothing nested twice).
        opt = again.meta["opt"]
        assert opt["streamdet"]["img_size"] == opt["imgsz"] == 416
        assert "streamdet" not in opt["streamdet"]
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


# ---------------------------------------------------------------------------------------------
# Structure against the file Ultralytics' train.py wrote (the shared fixture)
# ---------------------------------------------------------------------------------------------


def silu_objects(data: bytes) -> int:
    """How many SiLU objects a protocol-2 pickle creates (NEWOBJ of the SiLU class).

    A memo reference to an already pickled SiLU creates none, so a shared activation counts once.
    """
    silu = "torch.nn.modules.activation SiLU"
    memo_of_class: set[int] = set()
    pushed: list[bool] = []  # per pushed value: is it the SiLU class?
    count = 0
    for op, arg, _ in pickletools.genops(data):
        if op.name in _MEMO_PUT_OPS:
            if pushed and pushed[-1]:
                memo_of_class.add(arg)
        elif op.name == "NEWOBJ":  # cls, args -> obj
            count += len(pushed) >= 2 and pushed[-2]
            pushed[-2:] = [False]
        else:
            pushed.append(arg == silu if op.name == "GLOBAL" else op.name in _MEMO_GET_OPS and arg in memo_of_class)
    return count


def leaf_layers(model: torch.nn.Module) -> int:
    """The layer count of Ultralytics' model summary (``model_info``): distinct modules without children."""
    return sum(1 for _, m in model.named_modules() if not m._modules)


@pytest.fixture(scope="module")
def demo_rewritten(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo checkpoint (our trainer's opt) read with our reader and written again with the writer."""
    ck = read_checkpoint(DEMO_CHECKPOINT)
    path = tmp_path_factory.mktemp("demo") / "shapes_yolov5n.pt"
    return save_checkpoint(load_model(DEMO_CHECKPOINT, fuse=False), path, **ck.meta)


def module_attr_names(model: torch.nn.Module) -> dict[str, list[str]]:
    """Each module's ``__dict__`` keys in order (nn.Module internals included), by module path."""
    return {name: list(m.__dict__) for name, m in model.named_modules(remove_duplicate=False)}


def test_one_shared_activation_as_in_the_fixture(demo_rewritten: Path, checkpoint_path: Path,
                                                 fake_ultralytics: Any) -> None:
    fixture_pkl, ours_pkl = data_pkl(checkpoint_path), data_pkl(demo_rewritten)
    assert silu_objects(fixture_pkl) == silu_objects(ours_pkl) == 1
    separate = pickle.dumps([torch.nn.SiLU(), torch.nn.SiLU()], protocol=2)
    assert silu_objects(separate) == 2  # the counter sees unshared activations
    fixture, ours = (torch.load(p, weights_only=False)["model"] for p in (checkpoint_path, demo_rewritten))
    convs = [m for m in ours.modules() if type(m).__name__ == "Conv"]
    assert len(convs) == 57 and len({id(c.act) for c in convs}) == 1  # the Convs inside C3/Bottleneck/SPPF too
    assert not convs[0].act.inplace and not convs[0].act.training
    assert leaf_layers(ours) == leaf_layers(fixture) == 125  # unfused (57 Conv2d + 57 BN + 11); 68 fused


def test_model_attributes_equal_the_fixture(demo_rewritten: Path, checkpoint_path: Path,
                                            fake_ultralytics: Any) -> None:
    fixture, ours = (torch.load(p, weights_only=False)["model"] for p in (checkpoint_path, demo_rewritten))
    assert module_attr_names(ours) == module_attr_names(fixture)  # every module, attribute order included
    assert ours.yaml_file == "yolov5n.yaml" and ours.names == {0: "circle", 1: "square", 2: "triangle"}
    assert list(ours.hyp) == list(fixture.hyp)
    assert ours.class_weights.dtype == torch.float32 and ours.class_weights.tolist() == [1.0, 1.0, 1.0]
    for a, b in ((ours, fixture), (ours.model[24], fixture.model[24])):
        assert a.stride.dtype == b.stride.dtype
    det = ours.model[24]
    assert [tuple(g.shape) for g in det.grid] == [(1, 3, 52, 52, 2), (1, 3, 26, 26, 2), (1, 3, 13, 13, 2)]  # 416
    for m in (ours, fixture):
        assert not any(x.training for x in m.modules())
        assert all(p.dtype == torch.float16 and not p.requires_grad for p in m.parameters())
        assert all(b.dtype == (torch.int64 if n.endswith("num_batches_tracked") else torch.float16)
                   for n, b in m.named_buffers())


def test_top_level_and_opt_as_train_py_writes_them(demo_rewritten: Path, checkpoint_path: Path,
                                                   fake_ultralytics: Any) -> None:
    fixture, ours = (torch.load(p, weights_only=False) for p in (checkpoint_path, demo_rewritten))
    assert list(ours) == list(fixture)
    demo_opt = read_checkpoint(DEMO_CHECKPOINT).meta["opt"]["streamdet"]  # our trainer's own options
    opt = ours["opt"]
    assert list(opt) == [*fixture["opt"], "streamdet"] and opt["streamdet"] == demo_opt
    for k, v in fixture["opt"].items():  # same value types (the one PosixPath is written as a str)
        want = str if k == "evolve_population" else type(v)
        assert isinstance(opt[k], want), (k, opt[k])
    assert (opt["imgsz"], opt["epochs"], opt["batch_size"], opt["optimizer"], opt["cos_lr"]) == (
        demo_opt["img_size"], demo_opt["epochs"], demo_opt["batch"], "AdamW", True)
    assert (opt["save_dir"], opt["project"], opt["name"], opt["cfg"]) == (
        demo_opt["out"], "runs", Path(demo_opt["out"]).name, "models/yolov5n.yaml")
    assert list(opt["hyp"]) == list(fixture["opt"]["hyp"])  # unscaled, as train.py stores it
    assert (opt["hyp"]["lr0"], opt["hyp"]["scale"], opt["hyp"]["cls"]) == (
        demo_opt["lr0"], demo_opt["aug"]["scale"], 0.5)
    hyp = ours["model"].hyp  # scaled as train.py does: nc=3, imgsz=416, nl=3
    assert hyp["cls"] == 0.5 * 3 / 80 and hyp["obj"] == (416 / 640) ** 2 and hyp["box"] == 0.05
    assert hyp["label_smoothing"] == 0.0 and hyp["lr0"] == demo_opt["lr0"]
    assert isinstance(ours["date"], str) and ours["git"] == read_checkpoint(DEMO_CHECKPOINT).meta["git"]


def test_rewritten_fixture_equals_the_fixture(tmp_path: Path, checkpoint_path: Path, fake_ultralytics: Any) -> None:
    """The fixture through our reader and writer: same tensors, grids, opt and hyp; only class_weights differ."""
    ck = read_checkpoint(checkpoint_path)
    path = save_checkpoint(load_model(checkpoint_path, fuse=False), path_ := tmp_path / "again.pt", **ck.meta)
    assert path == path_
    fixture, ours = (torch.load(p, weights_only=False) for p in (checkpoint_path, path))
    assert ours["opt"] == fixture["opt"] and ours["git"] == fixture["git"]
    assert ours["model"].hyp == fixture["model"].hyp  # derived from opt['hyp'], scaled for nc=80 at 640
    assert ours["model"].class_weights.shape == fixture["model"].class_weights.shape
    da, db = fixture["model"].model[24], ours["model"].model[24]
    for a, b in zip(da.grid + da.anchor_grid, db.grid + db.anchor_grid, strict=True):
        assert a.dtype == b.dtype and a.stride() == b.stride() and torch.equal(a, b)
    with zipfile.ZipFile(checkpoint_path) as za, zipfile.ZipFile(path) as zb:
        records_a = [n.split("/", 1)[1] for n in za.namelist()]
        records_b = [n.split("/", 1)[1] for n in zb.namelist()]
        assert records_a == records_b  # same archive layout, same storage numbering
        differ = [n for n in records_a if n.startswith("data/") and za.read(f"yolov5n_random/{n}") != zb.read(
            f"again/{n}")]
    assert differ == [f"data/{len(records_a) - 7}"]  # the last storage: class_weights (ours are ones)
    # our reader gives opt's PosixPath back as a PurePosixPath (portable), which is written as such
    assert pickle_globals(data_pkl(path)) == pickle_globals(data_pkl(checkpoint_path)) - {"pathlib PosixPath"} | {
        "pathlib PurePosixPath"}


def test_trainer_call_and_caller_overrides(tmp_path: Path, fake_ultralytics: Any) -> None:
    """The trainer's call (opt = its TrainConfig as a dict), plus explicit hyp and class weights."""
    from streamdet.training.trainer import TrainConfig

    cfg = json.loads(json.dumps(asdict(TrainConfig(data="data/shapes/train", img_size=320, batch=8)), default=str))
    model = small_model(nc=3, seed=1)
    path = save_checkpoint(model, tmp_path / "best.pt", epoch=4, best_fitness=0.3, opt=cfg)
    ck = read_checkpoint(path)
    assert ck.meta["epoch"] == 4 and ck.meta["best_fitness"] == 0.3 and ck.trained_img_size == 320
    assert ck.meta["git"] == {"remote": None, "branch": None, "commit": None}  # train.py outside a git clone
    assert ck.meta["opt"]["imgsz"] == 320 and ck.meta["opt"]["batch_size"] == 8 and ck.meta["opt"]["streamdet"] == cfg
    for k, v in train_py_opt_defaults().items():  # every option has train.py's type (train.py --resume reads them)
        assert v is None or type(ck.meta["opt"][k]) is type(v), (k, ck.meta["opt"][k])
    again = save_checkpoint(load_model(path, fuse=False), tmp_path / "again.pt", **ck.meta)
    assert read_checkpoint(again).meta["opt"] == ck.meta["opt"]  # idempotent: no nested 'streamdet' keys

    hyp = {"lr0": 0.5, "box": 1.0}
    path = save_checkpoint(model, tmp_path / "own.pt", hyp=hyp, class_weights=[0.5, 1.0, 1.5])
    tree = torch.load(path, weights_only=False)
    attrs = tree["model"].__dict__
    assert attrs["hyp"] == hyp and attrs["class_weights"].dtype == torch.float32
    assert tree["opt"]["imgsz"] == 640 and "streamdet" not in tree["opt"]  # train.py defaults only
    with pytest.raises(ModelError, match=r"class_weights must have shape \(3,\)"):
        save_checkpoint(model, tmp_path / "bad.pt", class_weights=[1.0, 2.0])
    with pytest.raises(ModelError, match="'opt' must be a dict"):
        save_checkpoint(model, tmp_path / "bad.pt", opt=["imgsz", 640])
    assert not (tmp_path / "bad.pt").exists()


def test_custom_architecture_has_no_yaml_file(tmp_path: Path, fake_ultralytics: Any) -> None:
    """A model not built from a named architecture has no yaml_file, as when train.py builds from a dict."""
    arch = {**ARCHITECTURES["yolov5n"], "width_multiple": 0.125}
    path = save_checkpoint(YOLOv5(arch, nc=2), tmp_path / "custom.pt", opt={"img_size": 256})
    ckpt = torch.load(path, weights_only=False)
    assert not hasattr(ckpt["model"], "yaml_file") and ckpt["opt"]["cfg"] == ""
    assert hasattr(torch.load(save_checkpoint(YOLOv5(ARCHITECTURES["yolov5s"], nc=2), tmp_path / "s.pt"),
                              weights_only=False)["model"], "yaml_file")
