"""Export our YOLOv5 module to ONNX, cached on disk and checked against torch on load.

The exported graph takes the batch exactly as the pipeline produces it, uint8 (B, 3, H, W) RGB,
and does the cast and ``/255`` itself (a Cast and a Div by 255, the same IEEE division torch
does), so the ONNX runtimes are fed the same 1-byte-per-pixel buffer as the torch backend. It
returns the decoded prediction (B, N, 5+nc) [cx, cy, w, h, obj, cls...] in input pixels. Batch,
height and width are dynamic (H and W multiples of the model's largest stride).

Exporter: the torch.export-based ("dynamo") exporter, the default of torch >= 2.9, because the
TorchScript one is deprecated and slated for removal; the TorchScript exporter remains the
fallback when onnxscript is missing or torch predates ``dynamo=``. Both give the same graph
semantics (tested) and the exporter is part of the cache key. The dynamo export is slow (~25 s
for yolov5n on 2 busy cores, vs ~1 s) but runs once per checkpoint thanks to the cache. It needs
an export-friendly forward:
:class:`ExportGraph` runs the same layers (:func:`~streamdet.model.yolov5.run_layers`) and the
same decode arithmetic as :meth:`~streamdet.model.yolov5.Detect.decode`, but with the strides
as Python floats and the anchors as constants (``Detect.decode`` reads them from tensors, a
data-dependent value torch.export refuses) and without the grid cache. Height and width are
declared as ``stride * Dim`` so the exporter can prove the upsample/concat shapes agree.

Cache: ``<cache_dir>/<stem>-<key>.onnx`` where the key hashes the checkpoint's sha256 and
everything that changes the graph (:class:`ExportKey`). Files are written to a temporary name
in the same folder and renamed into place, so concurrent workers never see a partial file; the
last writer wins with an identical file. A cached file that cannot be loaded, or whose outputs
disagree with torch, is exported again once; a fresh export that still disagrees raises
:class:`OnnxMismatchError` naming the largest deviation.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import importlib.util
import inspect
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from streamdet.errors import ModelError
from streamdet.model.checkpoint import load_model
from streamdet.model.yolov5 import YOLOv5, run_layers

log = logging.getLogger(__name__)

OPSET = 18  # the dynamo exporter's native opset; ORT >= 1.14 and OpenVINO >= 2023 read it
GRAPH_VERSION = 1  # bump when ExportGraph changes in a way that changes the exported file
MAX_SIDE_STEPS = 256  # H and W up to stride * 256 (8192 px at stride 32)
MAX_BATCH = 1024
CHECK_SHAPE = (2, 3, 2, 3)  # (B, C, H/stride, W/stride) of the agreement-check input
CHECK_SEED = 20240601

# Float32 agreement tolerance of an ONNX runtime against the fused torch model, per prediction
# column group. The runtimes fuse and reorder convolutions differently; the fixture README measures
# float32 noise of this size for a random yolov5n (xy 2e-3 px, wh 5e-2 px, obj/cls 4e-5).
TOL_XY_PX = 2e-2
TOL_WH_ABS_PX = 2e-2
TOL_WH_REL = 2e-3
TOL_CONF = 3e-4
HALF_TOL_SCALE = 50.0  # float16 graphs are compared against the float16 torch model, looser

T = TypeVar("T")


class OnnxMismatchError(ModelError):
    """A freshly exported ONNX model does not reproduce the torch model within float tolerance."""


@dataclass(frozen=True)
class ExportKey:
    """Everything that changes the exported file; its hash names the cache entry."""

    checkpoint_sha256: str
    opset: int = OPSET
    torch_version: str = torch.__version__
    input_dtype: str = "uint8"
    fused: bool = True
    half: bool = False
    exporter: str = "dynamo"
    exporter_version: str = ""  # onnxscript's version for the dynamo exporter (its optimiser shapes the graph)
    graph_version: int = GRAPH_VERSION

    def digest(self) -> str:
        """Short hex digest of every field (stable across processes)."""
        text = repr(sorted(asdict(self).items()))
        return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class ExportResult:
    """Where the ONNX file is, and whether this call wrote it (False: reused from the cache)."""

    path: Path
    exported: bool


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/streamdet/onnx``, else ``~/.cache/streamdet/onnx``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "streamdet" / "onnx"


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_path(weights: str | Path, key: ExportKey, cache_dir: Path | None = None) -> Path:
    """The cache file of ``weights`` exported with ``key``."""
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return folder / f"{Path(weights).stem}-{key.digest()}.onnx"


class ExportGraph(nn.Module):
    """uint8 (B, 3, H, W) RGB -> (B, N, 5+nc) prediction; the export-friendly twin of ``YOLOv5.forward``.

    Same layers, same decode arithmetic as ``Detect.decode`` (``(2s - 0.5 + cell) * stride``,
    ``(2s)^2 * anchor_px``), with strides as Python floats and anchors as buffers, so
    torch.export sees no data-dependent values.
    """

    def __init__(self, model: YOLOv5) -> None:
        super().__init__()
        detect = model.detect
        self.layers = model.model
        self.save = list(model.save)
        self.dtype = next(model.parameters()).dtype
        self.na, self.no, self.nc = detect.na, detect.no, detect.nc
        self.strides = [float(s) for s in detect.stride.tolist()]
        for i, s in enumerate(self.strides):
            anchor_px = (detect.anchors[i].float() * s).to(self.dtype).view(1, self.na, 1, 1, 2)
            self.register_buffer(f"anchor_px{i}", anchor_px.clone(), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        x = images.to(self.dtype) / 255  # (B, 3, H, W) in [0, 1]; same IEEE division as `t /= 255`
        raw = run_layers(self.layers, self.save, x)  # nl x (B, na, ny, nx, no)
        z = []
        for i, t in enumerate(raw):
            bs, _, ny, nx, _ = t.shape
            yv, xv = torch.meshgrid(torch.arange(ny, dtype=t.dtype), torch.arange(nx, dtype=t.dtype), indexing="ij")
            grid = (torch.stack((xv, yv), 2) - 0.5).view(1, 1, ny, nx, 2)  # cell index - 0.5
            xy, wh, conf = t.sigmoid().split((2, 2, self.nc + 1), 4)
            xy = (xy * 2 + grid) * self.strides[i]
            wh = (wh * 2) ** 2 * getattr(self, f"anchor_px{i}")
            z.append(torch.cat((xy, wh, conf), 4).reshape(bs, self.na * ny * nx, self.no))
        return torch.cat(z, 1)


def default_exporter() -> str:
    """``"dynamo"`` when torch has the torch.export-based exporter and onnxscript is installed, else
    ``"torchscript"`` (deprecated in torch >= 2.9, but it needs no onnxscript and exports in ~1 s)."""
    has_dynamo = "dynamo" in inspect.signature(torch.onnx.export).parameters
    return "dynamo" if has_dynamo and importlib.util.find_spec("onnxscript") is not None else "torchscript"


def exporter_version(exporter: str) -> str:
    """The version of the library besides torch that shapes ``exporter``'s output ("" if none)."""
    if exporter != "dynamo":
        return ""
    try:
        return importlib.metadata.version("onnxscript")
    except importlib.metadata.PackageNotFoundError:
        return ""


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporters' warnings and torch.onnx's info/warning log lines (e.g. "torchvision is
    not installed") for the duration of an export."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def export_onnx(model: YOLOv5, path: str | Path, *, opset: int = OPSET, exporter: str | None = None) -> None:
    """Write ``model`` (eval mode, on CPU, float32 or float16) as ONNX to ``path`` (not atomic).

    Input ``images`` uint8 (batch, 3, H, W) with dynamic batch, H and W; output ``pred``
    (batch, N, 5+nc). ``exporter``: ``"dynamo"`` or ``"torchscript"`` (default: :func:`default_exporter`).
    """
    exporter = exporter or default_exporter()
    graph = ExportGraph(model).eval()
    stride = int(max(graph.strides))
    # batch 2 and 2x3 stride steps: torch.export specialises dimensions of size 1
    example = torch.zeros((2, 3, 2 * stride, 3 * stride), dtype=torch.uint8)
    with _quiet_exporter(), torch.inference_mode(False), torch.no_grad():
        if exporter == "dynamo":
            dims = {
                0: torch.export.Dim("batch", min=1, max=MAX_BATCH),
                2: stride * torch.export.Dim("h_steps", min=1, max=MAX_SIDE_STEPS),
                3: stride * torch.export.Dim("w_steps", min=1, max=MAX_SIDE_STEPS),
            }
            program = torch.onnx.export(
                graph, (example,), dynamo=True, input_names=["images"], output_names=["pred"],
                dynamic_shapes={"images": dims}, opset_version=opset, external_data=False, verbose=False,
            )
            if program is None:
                raise ModelError("torch.onnx.export returned no program")
            program.save(str(path), external_data=False)
        elif exporter == "torchscript":
            torch.onnx.export(
                graph, (example,), str(path), dynamo=False, input_names=["images"], output_names=["pred"],
                dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"}, "pred": {0: "batch", 1: "anchors"}},
                opset_version=min(opset, 17), do_constant_folding=True,
            )
        else:
            raise ValueError(f"unknown ONNX exporter {exporter!r}; known: dynamo, torchscript")


def _atomic_export(model: YOLOv5, path: Path, exporter: str) -> None:
    """Export to a temporary file next to ``path`` and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".onnx.tmp", dir=path.parent)
    os.close(fd)
    try:
        export_onnx(model, tmp, exporter=exporter)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, path)
        log.info("exported %s to %s", Path(path).name, path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def check_input(stride: int) -> np.ndarray:
    """The deterministic uint8 input the agreement check runs through both models."""
    b, c, hs, ws = CHECK_SHAPE
    rng = np.random.default_rng(CHECK_SEED)
    return rng.integers(0, 256, (b, c, hs * stride, ws * stride), dtype=np.uint8)


def torch_reference(model: YOLOv5, batch: np.ndarray) -> np.ndarray:
    """The torch model's float32 prediction on a uint8 batch (the torch backend's arithmetic)."""
    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(next(model.parameters()).device)
        x = x.to(next(model.parameters()).dtype)
        x /= 255
        return model(x).float().cpu().numpy()


def max_deviation(got: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Largest deviation per column group (xy px, wh px, obj/cls), and the worst ratio to its tolerance."""
    got = got.astype(np.float64)
    ref = ref.astype(np.float64)
    d_xy = float(np.abs(got[..., :2] - ref[..., :2]).max(initial=0.0))
    d_wh = np.abs(got[..., 2:4] - ref[..., 2:4])
    wh_tol = TOL_WH_ABS_PX + TOL_WH_REL * np.abs(ref[..., 2:4])
    d_conf = float(np.abs(got[..., 4:] - ref[..., 4:]).max(initial=0.0))
    ratio = max(d_xy / TOL_XY_PX, float((d_wh / wh_tol).max(initial=0.0)), d_conf / TOL_CONF)
    return {"xy_px": d_xy, "wh_px": float(d_wh.max(initial=0.0)), "conf": d_conf, "ratio": ratio}


def check_agreement(run: Callable[[np.ndarray], np.ndarray], model: YOLOv5, what: str, *, half: bool = False) -> None:
    """Run the check input through ``run`` and the torch model; raise :class:`OnnxMismatchError` if they differ."""
    stride = int(max(float(s) for s in model.stride))
    batch = check_input(stride)
    ref = torch_reference(model, batch)
    got = np.asarray(run(batch), dtype=np.float32)
    if got.shape != ref.shape:
        raise OnnxMismatchError(f"{what}: output shape {got.shape} != torch {ref.shape}")
    if not np.isfinite(got).all():
        raise OnnxMismatchError(f"{what}: output has non-finite values")
    dev = max_deviation(got, ref)
    limit = HALF_TOL_SCALE if half else 1.0
    if dev["ratio"] > limit:
        raise OnnxMismatchError(
            f"{what} disagrees with the torch model: max deviation xy {dev['xy_px']:.3g} px, wh {dev['wh_px']:.3g} px, "
            f"obj/cls {dev['conf']:.3g} (tolerance xy {TOL_XY_PX * limit:g} px, wh {TOL_WH_ABS_PX * limit:g} px + "
            f"{TOL_WH_REL * limit:g} rel, obj/cls {TOL_CONF * limit:g})"
        )


@dataclass
class PreparedOnnx:
    """A loaded runtime session plus what the backend needs from the checkpoint."""

    session: Any
    path: Path
    exported: bool
    names: list[str]
    stride: int


def load_verified(
    weights: str | Path,
    open_session: Callable[[Path], T],
    run: Callable[[T, np.ndarray], np.ndarray],
    *,
    what: str,
    half: bool = False,
    cache_dir: Path | None = None,
    exporter: str | None = None,
) -> PreparedOnnx:
    """Get the cached ONNX export of ``weights`` (exporting it if needed), open it, check it against torch.

    ``open_session(path)`` builds the runtime's session; ``run(session, uint8_batch)`` returns its
    prediction. A cached file that fails to open or to agree is exported again once.
    """
    weights = Path(weights)
    model = load_model(weights, device="cpu", half=half, fuse=True)
    exporter = exporter or default_exporter()
    key = ExportKey(checkpoint_sha256=file_sha256(weights), half=half, exporter=exporter,
                    exporter_version=exporter_version(exporter))
    path = cache_path(weights, key, cache_dir)
    exported = False
    if not path.is_file():
        _atomic_export(model, path, exporter)
        exported = True
    while True:
        try:
            session = open_session(path)
            check_agreement(functools.partial(run, session), model, f"{what} ({path.name})", half=half)
        except Exception as e:  # noqa: BLE001 - any failure on a cached file means: export again
            if exported:
                raise
            log.warning("cached ONNX file %s is unusable (%s: %s); exporting it again", path, type(e).__name__, e)
            _atomic_export(model, path, exporter)
            exported = True
            continue
        return PreparedOnnx(session, path, exported, list(model.names), int(max(float(s) for s in model.stride)))
