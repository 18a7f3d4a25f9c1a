"""Writing YOLOv5 checkpoints in the Ultralytics ``best.pt`` format.

:func:`save_checkpoint` fills in the top-level dict as ``strip_optimizer`` leaves it. Our model
is converted to a tree of stubs that pickle under the Ultralytics / ``torch.nn`` global names
(``models.yolo.DetectionModel``, ``models.common.Conv``, ...) with the attributes, attribute
order and object sharing of a model train.py saves: one SiLU object shared by every Conv (in
Ultralytics ``Conv.default_act`` is a class attribute), per-layer ``i/f/type/np``, the Detect
grid caches, and the training attributes ``yaml_file``, ``hyp`` and ``class_weights``
(:mod:`.train_meta`, which also builds the train.py ``opt`` dict). Tensors go into the
``torch.save`` zip layout as fp16 storages. The pickler refuses to write any global outside
:mod:`streamdet.model.checkpoint.allowlist`, the allow-list the reader resolves, so whatever we
write we can read back.

Known departures from a file train.py writes: ``opt["evolve_population"]`` is a string, not a
``PosixPath`` (no ``pathlib`` global, so the file also loads on Windows); ``git`` is
``{'remote': None, 'branch': None, 'commit': None}`` (what train.py writes outside a git clone of
YOLOv5); the Detect grids are cached for a square ``imgsz`` input (train.py keeps those of its
last validation batch); the zip records carry fixed timestamps and the serialization id is a
hash of the pickle.
"""

from __future__ import annotations

import copy
import hashlib
import io
import os
import pickle
import struct
import tempfile
import types
import zipfile
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import torch
from torch import Tensor, nn

from streamdet.errors import ModelError
from streamdet.model.checkpoint.allowlist import (
    STORAGE_DTYPES,
    TORCH_NN_PREFIX,
    allowed_global_names,
    is_placeholder_global,
)
from streamdet.model.checkpoint.train_meta import ModelTrainAttrs, train_metadata
from streamdet.model.yolov5 import ARCHITECTURES, Conv, Detect, YOLOv5

PathLike = str | os.PathLike[str]


def save_checkpoint(model: YOLOv5, path: PathLike, *, hyp: Mapping[str, Any] | None = None,
                    class_weights: Tensor | Sequence[float] | None = None, **meta: Any) -> Path:
    """Write ``model`` in the Ultralytics ``best.pt`` format (float16, unfused).

    The top-level dict has the keys ``epoch, best_fitness, model, ema, updates, optimizer, opt,
    git, date`` in that order (defaults as ``strip_optimizer`` leaves them: epoch -1,
    ema/optimizer None); ``meta`` overrides or adds entries (a YOLOv5 given as ``ema`` is
    converted like ``model``). ``opt`` (train.py's or our trainer's option dict) is completed to
    train.py's full option set (see :mod:`.train_meta`). ``hyp`` and ``class_weights`` become
    ``model.hyp`` / ``model.class_weights``; by default they are derived from ``opt`` (hyp:
    hyp.scratch-low with the caller's values, scaled as train.py does; class weights: ones).
    ``model`` is pickled as a ``models.yolo.DetectionModel`` tree of ``models.common`` and
    ``torch.nn`` classes. The file is written atomically; returns its path.
    """
    if not isinstance(model, YOLOv5):
        raise ModelError(f"save_checkpoint needs a YOLOv5 model, got {type(model).__name__}")
    path = Path(path)
    ckpt: dict[str, Any] = {
        "epoch": -1, "best_fitness": None, "model": None, "ema": None, "updates": None, "optimizer": None,
        "opt": {}, "git": {"remote": None, "branch": None, "commit": None}, "date": datetime.now().isoformat(),
    }
    ckpt.update(meta)
    ckpt["opt"], attrs = train_metadata(model.yaml, model.nc, [float(s) for s in model.stride.tolist()],
                                        ckpt["opt"], hyp, class_weights, ARCHITECTURES)
    ckpt["model"] = model
    write_checkpoint(ckpt, path, attrs)
    return path


def write_checkpoint(ckpt: dict[str, Any], path: Path, attrs: ModelTrainAttrs) -> None:
    """Pickle the checkpoint dict (YOLOv5 values converted to stub trees) and write it atomically."""
    pickler_out = io.BytesIO()
    records: list[tuple[str, bytes]] = []
    builder = _StubBuilder()
    tree = {k: builder.convert(v, attrs) if isinstance(v, YOLOv5) else v for k, v in ckpt.items()}
    _CheckpointPickler(pickler_out, records).dump(tree)
    _write_torch_zip(path, pickler_out.getvalue(), records)


# ---------------------------------------------------------------------------------------------
# Writing: our model -> placeholder-like stub tree -> pickle -> torch.save zip
# ---------------------------------------------------------------------------------------------


class _PickleStub:
    """Base of the classes that stand for Ultralytics/torch globals in a pickle we write.

    Each subclass carries ``_global = (module, name)``; the pickler writes that name, not ours.
    Instances hold the module state that becomes the pickled ``__dict__``.
    """

    _global: tuple[str, str] = ("", "")

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        import copyreg

        return copyreg.__newobj__, (type(self),), dict(self.__dict__)  # type: ignore[attr-defined]  # not in typeshed


class _StubBuilder:
    """Converts a YOLOv5 into a stub tree with the attributes Ultralytics' classes expect."""

    def __init__(self) -> None:
        self._classes: dict[tuple[str, str], type[_PickleStub]] = {}
        self._shared_act: _PickleStub | None = None  # the one SiLU of the model being converted

    def stub_class(self, module: str, name: str) -> type[_PickleStub]:
        key = (module, name)
        if key not in self._classes:
            self._classes[key] = type(name, (_PickleStub,), {"_global": key, "__module__": __name__})
        return self._classes[key]

    def convert(self, model: YOLOv5, attrs: ModelTrainAttrs) -> _PickleStub:
        """The DetectionModel stub of ``model``, attributes in the order train.py's model has them."""
        if model.is_fused:
            raise ModelError("cannot save a fused model: the checkpoint format holds separate Conv and BatchNorm")
        self._shared_act = None  # every model (model, ema) has its own shared activation, as after deepcopy
        layers = self.module(model.model)
        for stub, layer in zip(layers.__dict__["_modules"].values(), model.model, strict=True):
            block = layer[0] if isinstance(layer, nn.Sequential) else layer
            d = stub.__dict__
            routing = {k: d.pop(k) for k in ("i", "f", "np") if k in d}
            # set in this order by Ultralytics' parse_model; Detect's stride only later by the model
            d.update(i=routing.get("i"), f=routing.get("f"), type=_official_name(block), np=routing.get("np"))
            if isinstance(block, Detect):
                d["stride"] = d.pop("stride")
        root = self.module(model, children={"model": layers})
        d = {k: v for k, v in root.__dict__.items() if k == "training" or k.startswith("_")}  # nn.Module internals
        if attrs.yaml_file is not None:
            d["yaml_file"] = attrs.yaml_file
        d.update({
            "yaml": copy.deepcopy(model.yaml),
            "save": list(model.save),
            "names": dict(enumerate(model.names)),
            "inplace": True,
            "stride": model.stride.detach().to("cpu", torch.float32).clone(),
            "nc": model.nc,
            "hyp": copy.deepcopy(attrs.hyp),
            "class_weights": attrs.class_weights.detach().to("cpu", torch.float32).clone(),
        })
        root.__dict__.clear()
        root.__dict__.update(d)
        self._fill_grids(layers.__dict__["_modules"][str(len(model.model) - 1)], model.detect, attrs.grid_size)
        return root

    def module(self, m: nn.Module, children: dict[str, _PickleStub] | None = None) -> _PickleStub:
        module_name, _, cls_name = _official_name(m).rpartition(".")
        stub = self.stub_class(module_name, cls_name)()
        state: dict[str, Any] = {}
        for k, v in m.__dict__.items():
            if k in ("_compiled_call_impl", "_grids"):
                continue
            if k == "training":
                v = False
            # (the mapping types are kept: plain dicts in torch 2, as a module train.py saves has them)
            elif k == "_parameters":
                v = type(v)((n, None if p is None else nn.Parameter(_fp16(p), requires_grad=False))
                            for n, p in v.items())
            elif k == "_buffers":
                v = type(v)((n, None if b is None else _fp16(b)) for n, b in v.items())
            elif k == "_modules":
                v = type(v)(children.items() if children is not None else
                            ((n, self._child(m, n, c)) for n, c in v.items()))
            elif k.startswith("_") and "hook" in k:
                v = None if k == "_is_full_backward_hook" else OrderedDict()  # hooks are never saved
            elif isinstance(v, Tensor):
                v = _fp16(v)
            state[k] = v
            if isinstance(m, Detect) and k == "na":  # Detect.__init__ sets its grid caches right after na
                state["grid"], state["anchor_grid"] = [], []
        stub.__dict__.update(state)
        return stub

    def _child(self, parent: nn.Module, name: str, child: nn.Module | None) -> _PickleStub | None:
        """A child's stub; the default activation of every Conv is one shared object, as in Ultralytics."""
        if child is None:
            return None
        if isinstance(parent, Conv) and name == "act" and type(child) is nn.SiLU and not child.inplace:
            if self._shared_act is None:
                self._shared_act = self.module(child)
            return self._shared_act
        return self.module(child)

    @staticmethod
    def _fill_grids(stub: _PickleStub, detect: Detect, size: int | None) -> None:
        """Detect's grid caches for a square ``size`` input, as a forward at that size leaves them.

        Like Ultralytics' ``Detect._make_grid`` in float32 (cell index - 0.5, and anchors times
        stride in pixels), then float16 as ``.half()`` makes them. Empty tensors when ``size``
        is None (rebuilt on the first forward).
        """
        grids, anchor_grids = [], []
        for i in range(detect.nl):
            if size is None:
                grids.append(torch.empty(0, dtype=torch.float16))
                anchor_grids.append(torch.empty(0, dtype=torch.float16))
                continue
            stride = detect.stride[i].detach().to("cpu", torch.float32)
            ny = nx = size // int(stride)
            shape = (1, detect.na, ny, nx, 2)
            yv, xv = torch.meshgrid(torch.arange(ny, dtype=torch.float32), torch.arange(nx, dtype=torch.float32),
                                    indexing="ij")
            grids.append((torch.stack((xv, yv), 2).expand(shape) - 0.5).half().contiguous())
            anchor_px = detect.anchors[i].detach().to("cpu", torch.float32) * stride
            anchor_grids.append(anchor_px.view(1, detect.na, 1, 1, 2).expand(shape).half().contiguous())
        stub.__dict__["grid"], stub.__dict__["anchor_grid"] = grids, anchor_grids


def _official_name(m: nn.Module) -> str:
    """'models.common.Conv' for our blocks, 'torch.nn.modules.conv.Conv2d' for torch modules."""
    cls = type(m)
    name = getattr(cls, "official_name", None)
    if name:
        return name
    if cls.__module__.startswith(TORCH_NN_PREFIX):
        return f"{cls.__module__}.{cls.__qualname__}"
    raise ModelError(f"cannot save module of type {cls.__module__}.{cls.__qualname__} in a YOLOv5 checkpoint")


def _fp16(t: Tensor) -> Tensor:
    """A detached CPU copy; floating point becomes float16 as in Ultralytics checkpoints."""
    t = t.detach().to("cpu")
    return t.to(torch.float16) if t.is_floating_point() else t.clone()


class _StorageRef:
    """One tensor's bytes, referenced from the pickle by a persistent id."""

    def __init__(self, key: str, type_stub: type[_PickleStub], numel: int) -> None:
        self.key, self.type_stub, self.numel = key, type_stub, numel


class _CheckpointPickler(pickle._Pickler):  # the pure-Python pickler lets us write chosen global names
    """Protocol-2 pickler writing tensors as torch.save does and stub classes under their global names.

    Every global it writes must be one the safe loader accepts, so a checkpoint we write can
    always be read back by us (ModelError otherwise, e.g. for a lambda in ``meta``).
    """

    # The base class dispatches plain functions straight to its own save_global; route them
    # through ours so that every global written is checked.
    # (typeshed types dispatch entries as taking an Unpickler and leaves out the pickler's internals:
    # save_global, write and memoize, declared below for type checkers.)
    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[types.FunctionType] = lambda self, obj: self.save_global(obj)  # type: ignore[attr-defined]

    if TYPE_CHECKING:
        def write(self, data: bytes) -> None: ...
        def memoize(self, obj: Any) -> None: ...

    def __init__(self, file: BinaryIO, records: list[tuple[str, bytes]]) -> None:
        super().__init__(file, protocol=2)
        self._records = records
        self._stubs = _StubBuilder()
        self._writable = allowed_global_names()  # exactly what the reader resolves (placeholders aside)

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, _StorageRef):
            return ("storage", obj.type_stub, obj.key, "cpu", obj.numel)
        return None

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, nn.Parameter):
            rebuild = self._stubs.stub_class("torch._utils", "_rebuild_parameter")
            return rebuild, (obj.detach(), False, OrderedDict())
        if isinstance(obj, Tensor):
            t = obj.detach().to("cpu").contiguous()
            storage_name = next((n for n, d in STORAGE_DTYPES.items() if d == t.dtype and n != "UntypedStorage"),
                                None)
            if storage_name is None:
                raise ModelError(f"cannot save a tensor of dtype {t.dtype}")
            key = str(len(self._records))
            self._records.append((key, t.reshape(-1).view(torch.uint8).numpy().tobytes()))
            ref = _StorageRef(key, self._stubs.stub_class("torch", storage_name), t.numel())
            rebuild = self._stubs.stub_class("torch._utils", "_rebuild_tensor_v2")
            return rebuild, (ref, 0, tuple(t.shape), t.stride(), False, OrderedDict())
        return NotImplemented

    def save_global(self, obj: Any, name: str | None = None) -> None:
        if isinstance(obj, type) and issubclass(obj, _PickleStub):
            module, qualname = obj._global
        else:
            module, qualname = str(getattr(obj, "__module__", "?")), name or str(getattr(obj, "__qualname__", "?"))
            if f"{module}.{qualname}" not in self._writable:
                raise ModelError(f"cannot write {module}.{qualname} into a checkpoint: the safe loader "
                                 "would refuse it")
            super().save_global(obj, name)  # type: ignore[misc]  # pickle._Pickler.save_global, not in typeshed
            return
        if f"{module}.{qualname}" not in self._writable and not is_placeholder_global(module, qualname):
            raise ModelError(f"cannot write {module}.{qualname} into a checkpoint")
        self.write(pickle.GLOBAL + f"{module}\n{qualname}\n".encode("ascii"))
        self.memoize(obj)


def _write_torch_zip(path: Path, pkl: bytes, records: list[tuple[str, bytes]]) -> None:
    """Write the torch.save zip layout (stored, 64-byte aligned records), atomically."""
    stem = "".join(c if c.isalnum() or c in "_-" else "_" for c in path.name.split(".")[0]) or "archive"
    serialization_id = str(int.from_bytes(hashlib.sha256(pkl).digest()[:16], "little")).zfill(40)[:40]
    entries = [("data.pkl", pkl), (".format_version", b"1"), (".storage_alignment", b"64"),
               ("byteorder", b"little")]
    entries += [(f"data/{key}", data) for key, data in records]
    entries += [("version", b"3\n"), (".data/serialization_id", serialization_id.encode("ascii"))]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            offset = 0
            for name, data in entries:
                arcname = f"{stem}/{name}"
                info = zipfile.ZipInfo(arcname, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_STORED
                header = 30 + len(arcname.encode("utf-8"))
                pad = (-(offset + header + 4)) % 64  # align the record data to 64 bytes, as torch does
                info.extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad  # 'FB' padding field
                zf.writestr(info, data)
                offset += header + len(info.extra) + len(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a checkpoint is an ordinary shared file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
