"""The one allow-list of pickle globals shared by the checkpoint reader and writer.

The reader (:mod:`streamdet.model.checkpoint.reader`) resolves only the globals named here; the
writer (:mod:`streamdet.model.checkpoint.writer`) refuses to write any other, so every file we
write can be read back by us. Three kinds of global are accepted:

* names in :func:`allowed_globals`, each mapped to an inert object: an immutable builtin, a torch
  dtype, or a function built per load that validates its arguments (our own tensor rebuilders);
* classes under the Ultralytics modules in :data:`PLACEHOLDER_MODULES` or directly under
  ``torch.nn.modules.<submodule>`` (:func:`is_placeholder_global`), which the reader replaces by
  inert placeholders that only collect their pickled state.

Anything else (``os.system``, ``builtins.eval``, ...) is refused.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from torch import Tensor

from streamdet.errors import CheckpointError

# Classes a YOLOv5 checkpoint may reference; they become placeholders. Any public name under these
# Ultralytics modules is accepted (placeholders are inert whatever they are called).
PLACEHOLDER_MODULES = frozenset({"models.yolo", "models.common", "models.experimental"})
TORCH_NN_PREFIX = "torch.nn.modules."

# torch storage class name -> the dtype of its elements (read-only).
STORAGE_DTYPES: Mapping[str, torch.dtype] = MappingProxyType({
    "HalfStorage": torch.float16, "FloatStorage": torch.float32, "DoubleStorage": torch.float64,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool, "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128, "UntypedStorage": torch.uint8,
})
TORCH_DTYPES = ("float16", "float32", "float64", "bfloat16", "half", "float", "double", "int64", "int32",
                "int16", "int8", "uint8", "bool", "long", "int", "complex64", "complex128")


def is_placeholder_global(module: str, name: str) -> bool:
    """Whether ``module.name`` is a class the reader turns into an inert placeholder.

    That is a public identifier directly under an Ultralytics module (``models.common.Conv``)
    or under a ``torch.nn.modules`` submodule (``torch.nn.modules.conv.Conv2d``).
    """
    return name.isidentifier() and not name.startswith("_") and (
        module in PLACEHOLDER_MODULES or (module.startswith(TORCH_NN_PREFIX) and module.count(".") == 3)
    )


def allowed_global_names() -> frozenset[str]:
    """The ``module.name`` keys of :func:`allowed_globals` (placeholder classes not included)."""
    return frozenset(allowed_globals(Path("-")))


def is_allowed_global(module: str, name: str) -> bool:
    """Whether the reader resolves ``module.name`` (an allow-listed object or a placeholder class)."""
    return f"{module}.{name}" in allowed_global_names() or is_placeholder_global(module, name)


def allowed_globals(path: Path) -> dict[str, Any]:
    """``module.name`` -> the object the reader returns for it, built fresh per load.

    Nothing returned is shared between loads; ``path`` only names the file in error messages.
    """

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
    for storage_name, dtype in STORAGE_DTYPES.items():
        allowed[f"torch.{storage_name}"] = dtype
    allowed["torch.storage.UntypedStorage"] = torch.uint8
    for name in TORCH_DTYPES:
        allowed[f"torch.{name}"] = getattr(torch, name)
    return allowed
