"""Safe reading and writing of Ultralytics YOLOv5 checkpoints (``.pt`` files).

A YOLOv5 ``.pt`` file is a pickle of live Python objects (``models.yolo.DetectionModel`` ...).
Plain ``torch.load`` would import and run whatever the pickle names, so it is never used here.
Instead this module

* opens the ``torch.save`` container itself (the zip archive, or the legacy stream of pickles),
* unpickles ``data.pkl`` with :class:`_SafeUnpickler`, whose ``find_class`` resolves only an
  explicit allow-list: tensor-rebuild functions (our own re-implementations), a few inert
  builtins, and the Ultralytics / ``torch.nn`` module classes mapped to inert placeholders
  that only collect their pickled state. Any other global raises
  :class:`~streamdet.errors.UnsafeCheckpointError` before anything from the file runs,
* walks the placeholder tree (``_parameters``, ``_buffers``, ``_modules``) to get the
  state_dict, and builds our own :class:`~streamdet.model.yolov5.YOLOv5` from the stored
  architecture dict.

:func:`save_checkpoint` writes the same format (a ``best.pt`` as ``strip_optimizer`` leaves
it) through :mod:`streamdet.model.checkpoint_writer`, whose pickler refuses to write any global
this loader would refuse.
"""

from __future__ import annotations

import copy
import io
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import Tensor

from streamdet.errors import CheckpointError, ModelError, UnsafeCheckpointError
from streamdet.model.yolov5 import YOLOv5

PathLike = str | os.PathLike[str]

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # first pickle of a pre-1.6 (non-zip) torch.save file
LEGACY_PROTOCOL = 1001
MAX_DEPTH = 64  # deepest module nesting accepted when walking a pickled model


@dataclass
class Checkpoint:
    """What a YOLOv5 checkpoint holds, as plain data (no live model objects)."""

    arch: dict[str, Any]  # the architecture dict (Ultralytics ``model.yaml``)
    state_dict: dict[str, Tensor]  # name -> tensor, exactly as stored (usually float16)
    names: list[str]  # class names, index = class id
    nc: int  # number of classes
    stride: list[float]  # output-level strides, e.g. [8.0, 16.0, 32.0]
    meta: dict[str, Any] = field(default_factory=dict)  # epoch, best_fitness, opt, git, date, ...


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def load_model(path: PathLike, device: str | torch.device = "cpu", half: bool = False,
               fuse: bool = True) -> YOLOv5:
    """Build a YOLOv5 from a checkpoint, ready for inference (eval mode, no gradients).

    The stored (fp16) tensors are copied by name into a float32 model after checking that the
    key sets and every shape agree. ``fuse`` folds BatchNorm into the convolutions; ``half``
    converts to float16 afterwards (meant for CUDA).
    """
    ckpt = read_checkpoint(path)
    try:
        model = YOLOv5(ckpt.arch, ch=int(ckpt.arch.get("ch", 3)), nc=ckpt.nc)
    except (ModelError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot build the stored architecture: {e}") from e
    _copy_weights(model, ckpt.state_dict, path)
    model.names = list(ckpt.names)
    if ckpt.stride:
        if len(ckpt.stride) != model.detect.nl or any(
            abs(a - b) > 1e-6 for a, b in zip(ckpt.stride, model.stride.tolist(), strict=False)
        ):
            raise CheckpointError(f"{path}: stored strides {ckpt.stride} do not match the architecture's "
                                  f"{model.stride.tolist()}")
        model.stride = torch.tensor(ckpt.stride, dtype=torch.float32)
        model.detect.stride = model.stride.clone()
    if fuse:
        model.fuse()
    if half:
        model.half()
    model.to(device).eval()
    model.requires_grad_(False)
    return model


def read_checkpoint(path: PathLike) -> Checkpoint:
    """Read a YOLOv5 ``.pt`` file without executing anything from it.

    Raises :class:`UnsafeCheckpointError` if the pickle references a global outside the
    allow-list, and :class:`CheckpointError` for unreadable or non-YOLOv5 files.
    """
    path = Path(path)
    try:
        top = _load_pickle_tree(path)
        return _extract_checkpoint(path, top)
    except RecursionError as e:  # absurdly nested data structures in a crafted file
        raise CheckpointError(f"{path}: checkpoint data is nested too deeply") from e


def save_checkpoint(model: YOLOv5, path: PathLike, **meta: Any) -> Path:
    """Write ``model`` in the Ultralytics ``best.pt`` format (float16, unfused).

    The top-level dict has the keys ``epoch, best_fitness, model, ema, updates, optimizer, opt,
    git, date`` (defaults as ``strip_optimizer`` leaves them: epoch -1, ema/optimizer None);
    ``meta`` overrides or adds entries (a YOLOv5 given as ``ema`` is converted like ``model``).
    ``model`` is pickled as a ``models.yolo.DetectionModel`` tree of ``models.common`` and
    ``torch.nn`` classes. The file is written atomically; returns its path.
    """
    if not isinstance(model, YOLOv5):
        raise ModelError(f"save_checkpoint needs a YOLOv5 model, got {type(model).__name__}")
    path = Path(path)
    ckpt: dict[str, Any] = {
        "epoch": -1, "best_fitness": None, "model": None, "ema": None, "updates": None,
        "optimizer": None, "opt": {}, "git": {}, "date": datetime.now().isoformat(),
    }
    ckpt.update(meta)
    ckpt["model"] = model
    from streamdet.model.checkpoint_writer import write_checkpoint

    write_checkpoint(ckpt, path)
    return path


# ---------------------------------------------------------------------------------------------
# Loading weights into our model
# ---------------------------------------------------------------------------------------------


def _copy_weights(model: YOLOv5, state: dict[str, Tensor], path: PathLike) -> None:
    """Copy checkpoint tensors into ``model`` by name; any key or shape disagreement is an error."""
    own = model.state_dict()
    # Ultralytics <= v5.0 stored the pixel anchors of the head as an extra buffer; it is derived data.
    head = f"model.{len(model.model) - 1}."
    state = {k: v for k, v in state.items() if k != head + "anchor_grid"}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
                  for k, v in own.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or mismatched:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if items:
                shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
                parts.append(f"{label}: {shown}")
        raise CheckpointError(f"{path}: weights do not fit the stored architecture "
                              f"({len(state)} tensors in file, {len(own)} in model); " + "; ".join(parts))
    with torch.no_grad():
        for k, v in own.items():
            v.copy_(state[k])  # fp16 -> fp32 upcast happens here (exact)


# ---------------------------------------------------------------------------------------------
# Extracting a Checkpoint from the unpickled tree
# ---------------------------------------------------------------------------------------------


def _extract_checkpoint(path: Path, top: Any) -> Checkpoint:
    """Validate the top-level dict and pull arch, tensors, names, nc, stride and meta out of it."""
    if not isinstance(top, dict):
        raise CheckpointError(f"{path}: not a YOLOv5 checkpoint: the file holds a {type(top).__name__}, "
                              "not a checkpoint dict")
    model = top.get("ema") if top.get("ema") is not None else top.get("model")
    if model is None:
        raise CheckpointError(f"{path}: not a YOLOv5 checkpoint: no 'model' or 'ema' entry "
                              f"(keys: {sorted(map(str, top))[:12]})")
    if not isinstance(model, _Placeholder):
        raise CheckpointError(f"{path}: not a YOLOv5 checkpoint: 'model' is a {type(model).__name__}, "
                              "not a pickled YOLOv5 model")
    attrs = model.__dict__
    arch = attrs.get("yaml")
    if not (isinstance(arch, dict) and "backbone" in arch and "head" in arch):
        raise CheckpointError(f"{path}: the pickled {model._global} has no architecture dict ('yaml')")
    state_dict: dict[str, Tensor] = {}
    _collect_tensors(path, model, "", state_dict, 0, set())
    if not state_dict:
        raise CheckpointError(f"{path}: the pickled model holds no tensors")
    nc = attrs.get("nc", arch.get("nc"))
    names = _names_list(path, attrs.get("names"), nc)
    if not isinstance(nc, int):
        nc = len(names)
    if len(names) != nc:
        raise CheckpointError(f"{path}: {len(names)} class names for nc={nc}")
    stride = attrs.get("stride")
    stride_list = [float(s) for s in stride.tolist()] if isinstance(stride, Tensor) else []
    meta = {k: v for k, v in top.items() if k not in ("model", "ema", "optimizer")}
    return Checkpoint(arch=copy.deepcopy(arch), state_dict=state_dict, names=names, nc=nc,
                      stride=stride_list, meta=meta)


def _collect_tensors(path: Path, module: _Placeholder, prefix: str, out: dict[str, Tensor], depth: int,
                     ancestors: set[int]) -> None:
    """state_dict order: own parameters, own persistent buffers, then children (as torch does).

    A module may appear under several names (Ultralytics shares one SiLU); only a module that
    contains itself is malformed.
    """
    if depth > MAX_DEPTH or id(module) in ancestors:
        raise CheckpointError(f"{path}: malformed model tree at '{prefix or '<root>'}' (cycle or too deep)")
    d = module.__dict__
    non_persistent = d.get("_non_persistent_buffers_set") or set()
    for kind in ("_parameters", "_buffers"):
        for name, t in _mapping_items(path, d.get(kind), prefix + kind):
            if t is None or (kind == "_buffers" and name in non_persistent):
                continue
            if not isinstance(t, Tensor):
                raise CheckpointError(f"{path}: {prefix}{name} is a {type(t).__name__}, not a tensor")
            out[prefix + name] = t
    for name, child in _mapping_items(path, d.get("_modules"), prefix + "_modules"):
        if child is None:
            continue
        if not isinstance(child, _Placeholder):
            raise CheckpointError(f"{path}: submodule {prefix}{name} is a {type(child).__name__}")
        _collect_tensors(path, child, f"{prefix}{name}.", out, depth + 1, ancestors | {id(module)})


def _mapping_items(path: Path, value: Any, where: str) -> Iterator[tuple[str, Any]]:
    if value is None:
        return iter(())
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise CheckpointError(f"{path}: {where} is not a name -> value mapping")
    return iter(value.items())


def _names_list(path: Path, names: Any, nc: Any) -> list[str]:
    """Class names as a list: accepts a list/tuple or a dict {0: 'person', 1: ...}."""
    if names is None:
        if not isinstance(nc, int):
            raise CheckpointError(f"{path}: the checkpoint has neither class names nor nc")
        return [f"class{i}" for i in range(nc)]
    if isinstance(names, dict):
        try:
            keyed = {int(k): v for k, v in names.items()}
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: class-name keys are not integers: {e}") from e
        if sorted(keyed) != list(range(len(keyed))):
            raise CheckpointError(f"{path}: class-name ids are not 0..{len(keyed) - 1}")
        names = [keyed[i] for i in range(len(keyed))]
    if not isinstance(names, (list, tuple)):
        raise CheckpointError(f"{path}: class names are a {type(names).__name__}, not a list or dict")
    return [str(n) for n in names]


# ---------------------------------------------------------------------------------------------
# Container formats: torch.save zip archive and the legacy pickle stream
# ---------------------------------------------------------------------------------------------


def _load_pickle_tree(path: Path) -> Any:
    """Unpickle the checkpoint's object tree (tensors included) from either container format."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(4)
    except FileNotFoundError as e:
        raise CheckpointError(f"{path}: no such checkpoint file") from e
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read checkpoint: {e}") from e
    if size == 0:
        raise CheckpointError(f"{path}: empty file, not a checkpoint")
    if zipfile.is_zipfile(path):
        return _load_zip(path)
    if head.startswith(b"PK"):
        raise CheckpointError(f"{path}: truncated or corrupt zip archive (no readable central directory)")
    if head[:1] == b"\x80":  # a pickle PROTO opcode: maybe the legacy torch.save stream
        return _load_legacy(path, size)
    raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a torch.save zip archive nor the "
                          "legacy pickle format)")


def _load_zip(path: Path) -> Any:
    """torch.save zip: <root>/data.pkl plus one raw little-endian record per storage in <root>/data/."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            pkls = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pkls) != 1:
                raise CheckpointError(f"{path}: zip archive without a single <root>/data.pkl: "
                                      "not a PyTorch checkpoint")
            root = pkls[0][: -len("data.pkl")]
            big_endian = False
            if root + "byteorder" in names:
                order = zf.read(root + "byteorder").decode("ascii", "replace").strip()
                if order not in ("little", "big"):
                    raise CheckpointError(f"{path}: unknown byteorder record {order!r}")
                big_endian = order == "big"
            storages: dict[str, Tensor] = {}

            def read_stored(record: str) -> bytes:
                # torch.save writes uncompressed records; refusing others also rules out zip bombs
                if zf.getinfo(record).compress_type != zipfile.ZIP_STORED:
                    raise CheckpointError(f"{path}: record {record} is compressed, which torch.save never does")
                return zf.read(record)

            def load_storage(pid: Any) -> Tensor:
                if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
                    raise CheckpointError(f"{path}: unexpected persistent id {_short(pid)}")
                _, dtype, key, _location, numel = pid
                if not isinstance(dtype, torch.dtype) or not isinstance(key, str) or not isinstance(numel, int):
                    raise CheckpointError(f"{path}: malformed storage reference {_short(pid)}")
                if key not in storages:
                    record = root + "data/" + key
                    if record not in names:
                        raise CheckpointError(f"{path}: storage record {record} is missing")
                    storages[key] = _bytes_to_storage(path, read_stored(record), dtype, numel, big_endian)
                return storages[key]

            data = read_stored(pkls[0])
            return _SafeUnpickler(io.BytesIO(data), path, load_storage).load_checked()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as e:
        raise CheckpointError(f"{path}: corrupt or truncated zip archive: {e}") from e


def _load_legacy(path: Path, size: int) -> Any:
    """Pre-1.6 torch.save stream: magic, protocol, sys_info, object, storage keys, raw storages."""
    storages: dict[str, tuple[Tensor, int]] = {}

    def load_storage(pid: Any) -> Any:
        if isinstance(pid, tuple) and len(pid) == 4 and pid[0] == "module":
            # legacy files reference each module class as ('module', class, source file, source)
            if not (isinstance(pid[1], type) and issubclass(pid[1], _Placeholder)):
                raise CheckpointError(f"{path}: malformed module reference")
            return pid[1]
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise CheckpointError(f"{path}: unexpected persistent id {_short(pid)}")
        _, dtype, key, _location, numel, view = pid
        if not isinstance(dtype, torch.dtype) or not isinstance(key, str) or not isinstance(numel, int):
            raise CheckpointError(f"{path}: malformed storage reference {_short(pid)}")
        if key not in storages:
            if not 0 <= numel * dtype.itemsize <= size:
                raise CheckpointError(f"{path}: storage {key} claims {numel} elements, more than the file holds")
            storages[key] = (torch.empty(numel, dtype=dtype), numel)
        base = storages[key][0]
        if view is not None:
            if not (isinstance(view, tuple) and len(view) == 3):
                raise CheckpointError(f"{path}: malformed storage view {_short(view)}")
            _, offset, view_size = view
            if not (isinstance(offset, int) and isinstance(view_size, int)
                    and offset >= 0 and offset + view_size <= base.numel()):
                raise CheckpointError(f"{path}: storage view out of bounds")
            return base[offset : offset + view_size]
        return base

    try:
        with open(path, "rb") as f:
            magic = _SafeUnpickler(f, path, _no_storage(path)).load_checked()
            if magic != LEGACY_MAGIC:
                raise CheckpointError(f"{path}: not a PyTorch checkpoint (a pickle, but not torch.save output)")
            protocol = _SafeUnpickler(f, path, _no_storage(path)).load_checked()
            if protocol != LEGACY_PROTOCOL:
                raise CheckpointError(f"{path}: unsupported legacy torch.save protocol {protocol!r}")
            sys_info = _SafeUnpickler(f, path, _no_storage(path)).load_checked()
            if isinstance(sys_info, dict) and sys_info.get("little_endian") is False:
                raise CheckpointError(f"{path}: big-endian legacy checkpoints are not supported")
            top = _SafeUnpickler(f, path, load_storage).load_checked()
            keys = _SafeUnpickler(f, path, _no_storage(path)).load_checked()
            if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
                raise CheckpointError(f"{path}: malformed legacy storage key list")
            for key in keys:
                if key not in storages:
                    raise CheckpointError(f"{path}: legacy storage {key} is not referenced by the pickle")
                base, numel = storages[key]
                header = f.read(8)
                if len(header) != 8:
                    raise CheckpointError(f"{path}: truncated legacy checkpoint (storage {key})")
                (count,) = struct.unpack("<q", header)
                if count != numel:
                    raise CheckpointError(f"{path}: legacy storage {key} holds {count} elements, expected {numel}")
                nbytes = numel * base.element_size()
                raw = f.read(nbytes)
                if len(raw) != nbytes:
                    raise CheckpointError(f"{path}: truncated legacy checkpoint (storage {key})")
                if nbytes:
                    base.view(torch.uint8).copy_(torch.frombuffer(bytearray(raw), dtype=torch.uint8))
            return top
    except EOFError as e:
        raise CheckpointError(f"{path}: truncated legacy checkpoint: {e}") from e


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _no_storage(path: Path) -> Callable[[Any], Tensor]:
    def refuse(pid: Any) -> Tensor:
        raise CheckpointError(f"{path}: unexpected tensor storage outside the model pickle")
    return refuse


def _bytes_to_storage(path: Path, data: bytes, dtype: torch.dtype, numel: int, big_endian: bool) -> Tensor:
    """Raw record bytes -> 1-D tensor of ``numel`` elements of ``dtype`` (owning a private buffer)."""
    nbytes = numel * dtype.itemsize
    if numel < 0 or len(data) < nbytes:
        raise CheckpointError(f"{path}: storage record holds {len(data)} bytes, expected {nbytes}")
    if nbytes == 0:
        return torch.empty(0, dtype=dtype)
    raw = torch.frombuffer(bytearray(data[:nbytes]), dtype=torch.uint8)
    if big_endian and dtype.itemsize > 1:
        raw = raw.view(-1, dtype.itemsize).flip(1).reshape(-1).contiguous()
    return raw.view(dtype)


# ---------------------------------------------------------------------------------------------
# The restricted unpickler
# ---------------------------------------------------------------------------------------------


class _Placeholder:
    """Inert stand-in for a pickled class (DetectionModel, Conv, Conv2d, ...): it only stores state.

    Instances never run code from the file: construction ignores its arguments, and
    ``__setstate__`` just records the pickled ``__dict__``. Subclasses are created per load, so
    nothing a pickle does to them outlives that load.
    """

    _global = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> _Placeholder:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["_args"] = args

    def __setstate__(self, state: Any) -> None:
        slots = None
        if isinstance(state, tuple) and len(state) == 2:
            state, slots = state
        for part in (state, slots):
            if isinstance(part, dict):
                self.__dict__.update({k: v for k, v in part.items() if isinstance(k, str)})
            elif part is not None:
                self.__dict__["_state"] = part

    def __repr__(self) -> str:
        return f"<placeholder {self._global}>"


# Classes a YOLOv5 checkpoint may reference; they become placeholders. Any name under these
# Ultralytics modules is accepted (placeholders are inert whatever they are called).
_PLACEHOLDER_MODULES = frozenset({"models.yolo", "models.common", "models.experimental"})
_TORCH_NN_PREFIX = "torch.nn.modules."

_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "HalfStorage": torch.float16, "FloatStorage": torch.float32, "DoubleStorage": torch.float64,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool, "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128, "UntypedStorage": torch.uint8,
}
_TORCH_DTYPES = ("float16", "float32", "float64", "bfloat16", "half", "float", "double", "int64", "int32",
                 "int16", "int8", "uint8", "bool", "long", "int", "complex64", "complex128")


def _display(module: str, name: str) -> str:
    """Readable global name; aliases the platform modules that pickles name for os/builtins."""
    full = f"{module}.{name}"
    alias = {"posix": "os", "nt": "os", "__builtin__": "builtins", "commands": "subprocess"}.get(module)
    return f"{full} ({alias}.{name})" if alias else full


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler whose ``find_class`` returns only allow-listed, inert objects.

    Everything returned is either an immutable builtin (``OrderedDict``, ``set``, torch dtypes,
    ...), a function created for this load that validates its arguments, or a placeholder
    class created for this load. Any other global raises UnsafeCheckpointError at the GLOBAL
    opcode, i.e. before any call (REDUCE/BUILD) that could use it.
    """

    def __init__(self, file: BinaryIO, path: Path, load_storage: Callable[[Any], Tensor]) -> None:
        super().__init__(file)
        self._path = path
        self._load_storage = load_storage
        self._allowed = _allowed_globals(path)
        self._placeholders: dict[str, type[_Placeholder]] = {}

    def find_class(self, module: str, name: str) -> Any:
        key = f"{module}.{name}"
        if key in self._allowed:
            return self._allowed[key]
        if name.isidentifier() and not name.startswith("_") and (
            module in _PLACEHOLDER_MODULES or (module.startswith(_TORCH_NN_PREFIX) and module.count(".") == 3)
        ):
            if key not in self._placeholders:
                self._placeholders[key] = type(name, (_Placeholder,), {"_global": key, "__module__": __name__})
            return self._placeholders[key]
        raise UnsafeCheckpointError(
            f"refusing to load {self._path}: it references {_display(module, name)}, which is not on the "
            "allow-list for YOLOv5 checkpoints (nothing from the file was executed)"
        )

    def persistent_load(self, pid: Any) -> Any:
        return self._load_storage(pid)

    def load_checked(self) -> Any:
        """``load()`` with every parsing failure reported as a CheckpointError naming the file."""
        try:
            return self.load()
        except CheckpointError:
            raise
        except EOFError as e:
            raise CheckpointError(f"{self._path}: truncated pickle data: {e}") from e
        except (pickle.UnpicklingError, ValueError, TypeError, KeyError, IndexError, AttributeError,
                RuntimeError, struct.error, UnicodeDecodeError, MemoryError, OverflowError) as e:
            raise CheckpointError(f"{self._path}: corrupt checkpoint pickle: {type(e).__name__}: {e}") from e


def _allowed_globals(path: Path) -> dict[str, Any]:
    """The allow-list, built fresh per load (so no returned object is shared between loads)."""

    def bad(msg: str) -> CheckpointError:
        return CheckpointError(f"{path}: {msg}")

    def ints(seq: Any, what: str) -> tuple[int, ...]:
        if not (isinstance(seq, (tuple, list, torch.Size)) and all(isinstance(v, int) for v in seq)):
            raise bad(f"malformed tensor {what} {seq!r}")
        return tuple(seq)

    def rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> Tensor:
        # Our version of torch._utils._rebuild_tensor_v2: a bounds-checked strided view.
        if not isinstance(storage, Tensor) or storage.dim() != 1 or not isinstance(offset, int):
            raise bad("malformed tensor record")
        size, stride = ints(size, "size"), ints(stride, "stride")
        if len(size) != len(stride) or offset < 0 or min(size + stride, default=0) < 0:
            raise bad(f"malformed tensor geometry size={size} stride={stride} offset={offset}")
        if 0 not in size:
            last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
            if last >= storage.numel():
                raise bad(f"tensor view exceeds its storage ({last} >= {storage.numel()})")
        return torch.as_strided(storage, size, stride, offset)

    def rebuild_parameter(data: Any, *_: Any) -> Tensor:
        if not isinstance(data, Tensor):
            raise bad("malformed parameter record")
        return data

    tensor_types = {"torch.Tensor", "torch._tensor.Tensor", "torch.nn.parameter.Parameter"}
    type_tokens = {k: object() for k in tensor_types}

    def rebuild_from_type(func: Any, new_type: Any, args: Any, state: Any) -> Tensor:
        if func not in (rebuild_tensor, rebuild_parameter) or new_type not in type_tokens.values():
            raise bad("unsupported tensor subclass record")
        return func(*args)

    def make_path(*parts: Any) -> PurePosixPath:
        if not all(isinstance(p, str) for p in parts):
            raise bad("malformed path object")
        return PurePosixPath(*parts)

    def make_windows_path(*parts: Any) -> PureWindowsPath:
        if not all(isinstance(p, str) for p in parts):
            raise bad("malformed path object")
        return PureWindowsPath(*parts)

    def codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
        # protocol-2 pickles spell bytes as _codecs.encode(str, 'latin1')
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
            raise bad("malformed bytes record")
        return text.encode(encoding)

    def make_device(*args: Any) -> torch.device:
        if not all(isinstance(a, (str, int)) for a in args):
            raise bad("malformed torch.device")
        return torch.device(*args)

    def make_size(dims: Any = ()) -> torch.Size:
        return torch.Size(ints(dims, "size"))

    ndarray_token = object()

    def np_dtype(spec: Any, *flags: Any) -> np.dtype:
        if not isinstance(spec, str) or not all(isinstance(f, bool) for f in flags):
            raise bad("malformed numpy dtype")
        return np.dtype(spec, *flags)

    def np_scalar(dtype: Any, data: Any = None) -> Any:
        if not isinstance(dtype, np.dtype):
            raise bad("malformed numpy scalar")
        if dtype.hasobject:
            return data
        if not isinstance(data, bytes) or len(data) != dtype.itemsize:
            raise bad("malformed numpy scalar")
        return np.frombuffer(data, dtype=dtype)[0]

    def np_reconstruct(subtype: Any, shape: Any, typecode: Any) -> np.ndarray:
        if subtype is not ndarray_token:
            raise bad("unsupported numpy array subclass")
        return np.ndarray.__new__(np.ndarray, (0,), np.uint8)  # filled in by ndarray.__setstate__

    allowed: dict[str, Any] = {
        "collections.OrderedDict": OrderedDict,
        "torch._utils._rebuild_tensor_v2": rebuild_tensor,
        "torch._utils._rebuild_tensor": rebuild_tensor,
        "torch._utils._rebuild_parameter": rebuild_parameter,
        "torch._utils._rebuild_parameter_with_state": rebuild_parameter,
        "torch._tensor._rebuild_from_type_v2": rebuild_from_type,
        "torch.device": make_device,
        "torch.Size": make_size,
        "pathlib.PosixPath": make_path, "pathlib.PurePosixPath": make_path, "pathlib.Path": make_path,
        "pathlib._local.PosixPath": make_path, "pathlib._local.PurePosixPath": make_path,
        "pathlib.WindowsPath": make_windows_path, "pathlib.PureWindowsPath": make_windows_path,
        "pathlib._local.WindowsPath": make_windows_path, "pathlib._local.PureWindowsPath": make_windows_path,
        "_codecs.encode": codecs_encode,
        "numpy.dtype": np_dtype,
        "numpy.ndarray": ndarray_token,
        "numpy.core.multiarray.scalar": np_scalar, "numpy._core.multiarray.scalar": np_scalar,
        "numpy.core.multiarray._reconstruct": np_reconstruct,
        "numpy._core.multiarray._reconstruct": np_reconstruct,
        **type_tokens,
    }
    for builtins_name in ("builtins", "__builtin__"):
        for name, obj in (("set", set), ("frozenset", frozenset)):
            allowed[f"{builtins_name}.{name}"] = obj
    for storage_name, dtype in _STORAGE_DTYPES.items():
        allowed[f"torch.{storage_name}"] = dtype
    allowed["torch.storage.UntypedStorage"] = torch.uint8
    for name in _TORCH_DTYPES:
        allowed[f"torch.{name}"] = getattr(torch, name)
    return allowed
