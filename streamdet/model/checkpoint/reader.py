"""Safe reading of Ultralytics YOLOv5 checkpoints (``.pt`` files) as plain data.

A YOLOv5 ``.pt`` file is a pickle of live Python objects (``models.yolo.DetectionModel`` ...).
Plain ``torch.load`` would import and run whatever the pickle names, so it is never used here.
Instead this module

* opens the ``torch.save`` container itself (the zip archive, or the legacy stream of pickles),
* unpickles ``data.pkl`` with :class:`_SafeUnpickler`, whose ``find_class`` resolves only the
  allow-list of :mod:`streamdet.model.checkpoint.allowlist`: tensor-rebuild functions (our own
  re-implementations), a few inert builtins, and the Ultralytics / ``torch.nn`` module classes
  mapped to inert placeholders that only collect their pickled state. Any other global raises
  :class:`~streamdet.errors.UnsafeCheckpointError` before anything from the file runs,
* walks the placeholder tree (``_parameters``, ``_buffers``, ``_modules``) to get the
  state_dict, the architecture dict, class names and strides (:class:`Checkpoint`).
"""

from __future__ import annotations

import copy
import io
import os
import pickle
import struct
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import Tensor

from streamdet.errors import CheckpointError, UnsafeCheckpointError
from streamdet.model.checkpoint.allowlist import allowed_globals, is_placeholder_global

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

    @property
    def trained_img_size(self) -> int | None:
        """The input size the model was trained at, when the checkpoint records it."""
        from streamdet.model.input_size import trained_img_size

        return trained_img_size(self.meta)


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
        self._allowed = allowed_globals(path)
        self._placeholders: dict[str, type[_Placeholder]] = {}

    def find_class(self, module: str, name: str) -> Any:
        key = f"{module}.{name}"
        if key in self._allowed:
            return self._allowed[key]
        if is_placeholder_global(module, name):
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
