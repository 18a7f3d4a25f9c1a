"""Inference backends: one suite over every registered backend, plus the registry and the ONNX export cache.

Each backend must reproduce the torch model (raw predictions within float32 tolerance, and the
same detections after NMS) on real images: shapes frames through the demo model, and the fixture
checkpoint on its reference image (official numbers, fixture README section 4). Backends whose
optional dependency is missing are skipped with the pip extra to install.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from streamdet.datasets.shapes import ShapesClip, render_image
from streamdet.model.checkpoint import load_model
from streamdet.pipeline.backends import (
    AUTO_ORDER,
    BACKENDS,
    Backend,
    InputContract,
    available_backends,
    create_backend,
)
from streamdet.pipeline.backends import onnx_export as oe
from streamdet.pipeline.backends.model_input import to_model_input
from streamdet.pipeline.postprocess.postprocessor import nms
from streamdet.pipeline.preprocess.letterbox import batch_input_shape, letterbox, preprocess_batch
from streamdet.pipeline.registry import (
    Implementation,
    ImplementationUnavailable,
    Registry,
    RegistryError,
    UnknownImplementation,
)
from tests.conftest import REPO

DEMO = REPO / "configs" / "demo" / "shapes_yolov5n.pt"
ONNX_BACKENDS = [n for n in BACKENDS.names() if n != "torch"]


def _param(name: str) -> pytest.param:
    entry = BACKENDS.entry(name)
    reason = f"{name} not installed: pip install 'streamdet[{entry.extra}]'"
    return pytest.param(name, marks=pytest.mark.skipif(not BACKENDS.available(name), reason=reason), id=name)


ALL = [_param(n) for n in BACKENDS.names()]
ONNX = [_param(n) for n in ONNX_BACKENDS]


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="session")
def fixture_ckpt(fixtures_dir: Path) -> Path:
    return fixtures_dir / "yolov5" / "yolov5n_random.pt"


class Backends:
    """Backends created once per session (an ONNX export takes ~25 s here), keyed by (name, weights)."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = cache_dir
        self._made: dict[tuple[str, Path], Backend] = {}
        self._models: dict[Path, torch.nn.Module] = {}

    def get(self, name: str, weights: Path) -> Backend:
        if (name, weights) not in self._made:
            self._made[(name, weights)] = create_backend(name, weights, threads=2, cache_dir=self.cache_dir)
        return self._made[(name, weights)]

    def reference(self, weights: Path, batch: np.ndarray) -> torch.Tensor:
        """The pre-backend inference path: plain fused model on ``to_model_input`` (what Detector runs)."""
        if weights not in self._models:
            self._models[weights] = load_model(weights, fuse=True)
        with torch.inference_mode():
            return self._models[weights](to_model_input(batch, "cpu"))


@pytest.fixture(scope="session")
def backends(onnx_cache: Path) -> Backends:
    return Backends(onnx_cache)


def assert_pred_close(got: torch.Tensor | np.ndarray, ref: torch.Tensor | np.ndarray) -> None:
    """Raw predictions within the fixture README's float32 tolerances (xy, wh, obj/cls)."""
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape and got.dtype == np.float32
    dev = oe.max_deviation(got, ref)
    assert dev["ratio"] <= 1.0, f"prediction deviates: {dev}"


def assert_same_detections(got: torch.Tensor, ref: torch.Tensor) -> None:
    """Same detections up to float noise: 0.05 px + 0.2 % on boxes, 1e-3 on scores, equal classes."""
    got, ref = got.numpy(), ref.numpy()
    assert got.shape == ref.shape, f"{len(got)} detections, expected {len(ref)}"
    for row in ref:
        tol = 0.05 + 2e-3 * np.abs(row[:4])
        box_ok = (np.abs(got[:, :4] - row[:4]) <= tol).all(1)
        match = (got[:, 5] == row[5]) & box_ok & (np.abs(got[:, 4] - row[4]) < 1e-3)
        assert match.any(), f"no detection matches {row}"


def shapes_batch() -> np.ndarray:
    """Two 720p shapes frames and one 640x480 still, letterboxed together at img_size 416."""
    clip = ShapesClip(1280, 720, seed=3, num_frames=10)
    frames = [clip.frame(0)[0], clip.frame(5)[0], render_image(7, 0, sizes=[(640, 480)]).image]
    hw = batch_input_shape([f.shape[:2] for f in frames], 416, 32)
    return preprocess_batch(frames, hw)


# --- the contract ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_contract_declared(backends: Backends, name: str) -> None:
    be = backends.get(name, DEMO)
    assert isinstance(be, Backend)
    assert be.name == name
    tensor_dtype = "float32" if name == "torch" else None  # only torch takes a normalised tensor
    assert be.contract == InputContract(layout="NCHW", dtype="uint8", device="cpu", dynamic_shape=True,
                                        fixed_hw=None, max_batch=None, compute_dtype="float32",
                                        tensor_dtype=tensor_dtype)
    assert be.names == ["circle", "square", "triangle"]
    assert be.stride == 32


@pytest.mark.parametrize("name", ALL)
def test_shapes_detections_match_torch(backends: Backends, name: str) -> None:
    batch = shapes_batch()
    assert batch.shape == (3, 3, 320, 416)  # 640x480 sets the height
    pred = backends.get(name, DEMO).infer(batch)
    ref = backends.reference(DEMO, batch)
    assert pred.device.type == "cpu"
    assert_pred_close(pred, ref)
    dets, refs = nms(pred), nms(ref)
    assert sum(len(r) for r in refs) >= 10  # the demo model really detects the shapes
    for d, r in zip(dets, refs, strict=True):
        assert_same_detections(d, r)


@pytest.mark.parametrize("name", ALL)
def test_fixture_checkpoint_matches_official_reference(backends: Backends, fixtures_dir: Path, fixture_ckpt: Path,
                                                      name: str) -> None:
    ref = np.load(fixtures_dir / "yolov5" / "yolov5n_e2e_img3_500x377.npz")
    img = cv2.imread(str(fixtures_dir / "letterbox" / "img3_500x377.png"), cv2.IMREAD_COLOR)
    lb, _, _ = letterbox(img, 640, auto=True, stride=32)
    batch = np.ascontiguousarray(lb.transpose(2, 0, 1)[::-1][None])  # BGR HWC -> RGB CHW
    assert batch.shape == tuple(ref["model_input_shape"])
    be = backends.get(name, fixture_ckpt)
    assert len(be.names) == 80 and be.stride == 32
    pred = be.infer(batch)
    assert_pred_close(pred[:, ref["sub_rows"]], ref["pred_fused_sub"])
    (det,) = nms(pred, conf_thres=0.001, iou_thres=float(ref["iou_thres"]), max_det=int(ref["max_det"]))
    assert len(ref["nms_c0.001"]) == 9
    assert_same_detections(det, torch.from_numpy(ref["nms_c0.001"]))


@pytest.mark.parametrize("name", ALL)
def test_dynamic_shapes_and_batches(backends: Backends, name: str) -> None:
    be = backends.get(name, DEMO)
    rng = np.random.default_rng(5)
    whole = rng.integers(0, 256, (5, 3, 320, 640), dtype=np.uint8)
    for b, h, w in [(1, 32, 32), (2, 128, 640), (5, 320, 192), (3, 96, 64), (1, 320, 192)]:
        batch = np.ascontiguousarray(whole[:b, :, :h, :w])
        pred = be.infer(batch)
        n = sum(3 * (h // s) * (w // s) for s in (8, 16, 32))
        assert tuple(pred.shape) == (b, n, 8)
        assert_pred_close(pred, backends.reference(DEMO, batch))
    alone = be.infer(np.ascontiguousarray(whole[:1, :, :, :192]))
    in_batch = be.infer(np.ascontiguousarray(whole[:, :, :, :192]))[:1]
    assert_pred_close(alone, in_batch)  # an image's result does not depend on its batch


@pytest.mark.parametrize("name", ALL)
def test_infer_from_another_thread(backends: Backends, name: str) -> None:
    be = backends.get(name, DEMO)
    batch = shapes_batch()
    here = be.infer(batch)
    out: list[torch.Tensor] = []
    t = threading.Thread(target=lambda: out.append(be.infer(batch)))
    t.start()
    t.join()
    assert_pred_close(out[0], here)


@pytest.mark.parametrize("name", ALL)
def test_rejects_bad_batches(backends: Backends, name: str) -> None:
    be = backends.get(name, DEMO)
    with pytest.raises(ValueError, match="uint8"):
        be.infer(np.zeros((1, 3, 64, 64), np.float32))
    with pytest.raises(ValueError, match="multiples of 32"):
        be.infer(np.zeros((1, 3, 64, 70), np.uint8))
    with pytest.raises(ValueError, match="contiguous"):
        be.infer(np.zeros((1, 3, 64, 128), np.uint8)[..., ::2])


def test_torch_normalisation_is_bit_exact(backends: Backends) -> None:
    """With the plain memory format the torch backend is exactly the old path (``to_model_input`` + model)."""
    from streamdet.pipeline.backends.torch_backend import TorchBackend

    batch = shapes_batch()
    plain = TorchBackend(DEMO, channels_last=False)
    assert torch.equal(plain.infer(batch), backends.reference(DEMO, batch))
    assert backends.get("torch", DEMO).channels_last  # CPU default (measured faster)


@pytest.mark.parametrize("channels_last", [True, False])
def test_torch_takes_a_normalised_tensor(channels_last: bool) -> None:
    """A float32 tensor equal to to_model_input's gives the same predictions, in either memory format."""
    from streamdet.pipeline.backends.torch_backend import TorchBackend

    be = TorchBackend(DEMO, channels_last=channels_last)
    batch = shapes_batch()
    want = be.infer(batch)
    t = to_model_input(batch, "cpu")
    assert torch.equal(be.infer(t), want)
    assert torch.equal(be.infer(t.contiguous(memory_format=torch.channels_last)), want)
    assert torch.equal(t, to_model_input(batch, "cpu"))  # the caller's tensor is not changed


def test_torch_rejects_bad_tensors() -> None:
    from streamdet.pipeline.backends import check_tensor_batch
    from streamdet.pipeline.backends.torch_backend import TorchBackend

    be = TorchBackend(DEMO)
    good = torch.zeros(2, 3, 64, 96)
    for bad, match in [
        (good.double(), "float32 tensor"),
        (good.half(), "float32 tensor"),
        (good.to(torch.uint8), "float32 tensor"),
        (torch.zeros(2, 3, 64, 96, device="meta"), "move it there"),
        (torch.zeros(2, 4, 64, 96), "3, H, W"),
        (torch.zeros(3, 64, 96), "3, H, W"),
        (torch.zeros(2, 3, 64, 100), "multiples of 32"),
        (torch.zeros(0, 3, 64, 96), "B >= 1"),
        (torch.zeros(2, 3, 64, 192)[..., ::2], "contiguous or channels_last"),
    ]:
        with pytest.raises(ValueError, match=match):
            be.infer(bad)
    check_tensor_batch(good, 32, "cpu", "float32")
    check_tensor_batch(good.half(), 32, "cpu", "float16")
    with pytest.raises(ValueError, match="on cpu, the model on cuda:1"):
        check_tensor_batch(good, 32, "cuda:1", "float32")


def test_torch_from_module_leaves_the_module_alone() -> None:
    from streamdet.pipeline.backends.torch_backend import TorchBackend

    model = load_model(DEMO, fuse=False)  # as in training: unfused, plain memory format
    before = {k: v.clone() for k, v in model.state_dict().items()}
    be = TorchBackend.from_module(model)
    batch = shapes_batch()
    with torch.inference_mode():
        assert torch.equal(be.infer(batch), model(to_model_input(batch, "cpu")))
    assert not model.is_fused and be.names == model.names and be.stride == 32
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) and after[k].is_contiguous() for k in before)
    model.train()
    with pytest.raises(RuntimeError, match="training mode"):
        be.infer(batch)


@pytest.mark.parametrize("name", ALL)
def test_close(name: str, onnx_cache: Path) -> None:
    be = create_backend(name, DEMO, cache_dir=onnx_cache)
    be.close()
    with pytest.raises(RuntimeError, match="closed"):
        be.infer(np.zeros((1, 3, 32, 32), np.uint8))


# --- the ONNX export cache -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ONNX)
def test_export_cache_is_reused(backends: Backends, onnx_cache: Path, name: str,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    first = backends.get(name, DEMO)
    mtime = first.onnx_path.stat().st_mtime_ns
    calls: list[Path] = []
    real = oe.export_onnx
    monkeypatch.setattr(oe, "export_onnx", lambda *a, **k: (calls.append(Path(a[1])), real(*a, **k)))
    again = create_backend(name, DEMO, cache_dir=onnx_cache)
    assert again.onnx_path == first.onnx_path and not again.exported
    assert calls == [] and first.onnx_path.stat().st_mtime_ns == mtime
    assert [p.name for p in onnx_cache.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("name", ONNX)
def test_export_cache_keyed_by_checkpoint_hash(backends: Backends, fixture_ckpt: Path, tmp_path: Path,
                                               name: str) -> None:
    demo, other = backends.get(name, DEMO), backends.get(name, fixture_ckpt)
    assert demo.onnx_path != other.onnx_path and demo.onnx_path.parent == other.onnx_path.parent
    exporter = oe.default_exporter()
    key = oe.ExportKey(oe.file_sha256(DEMO), exporter=exporter, exporter_version=oe.exporter_version(exporter))
    assert demo.onnx_path == oe.cache_path(DEMO, key, demo.onnx_path.parent)
    # same name, different bytes -> different file
    renamed = tmp_path / DEMO.name
    renamed.write_bytes(fixture_ckpt.read_bytes())
    other_key = oe.ExportKey(oe.file_sha256(renamed), exporter=key.exporter)
    assert oe.cache_path(renamed, other_key, tmp_path) != oe.cache_path(DEMO, key, tmp_path)


def test_export_key_covers_everything_that_changes_the_graph() -> None:
    base = oe.ExportKey("ab" * 32)
    variants = [oe.ExportKey("cd" * 32), oe.ExportKey("ab" * 32, opset=17), oe.ExportKey("ab" * 32, torch_version="x"),
                oe.ExportKey("ab" * 32, input_dtype="float32"), oe.ExportKey("ab" * 32, fused=False),
                oe.ExportKey("ab" * 32, half=True), oe.ExportKey("ab" * 32, exporter="torchscript"),
                oe.ExportKey("ab" * 32, exporter_version="0.1")]
    digests = {base.digest()} | {v.digest() for v in variants}
    assert len(digests) == 1 + len(variants)
    assert oe.ExportKey("ab" * 32).digest() == base.digest()


@pytest.mark.parametrize("name", ONNX)
def test_corrupted_or_wrong_cache_file_is_replaced(tmp_path: Path, fixture_ckpt: Path, name: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # the TorchScript exporter (~1 s) keeps this test fast; it also checks that exporter's graph
    monkeypatch.setattr(oe, "default_exporter", lambda: "torchscript")
    be = create_backend(name, DEMO, cache_dir=tmp_path)
    assert be.exported and be.onnx_path.is_file()
    good = be.onnx_path.read_bytes()
    be.onnx_path.write_bytes(b"\x08\x07not an onnx model" * 100)
    again = create_backend(name, DEMO, cache_dir=tmp_path)
    assert again.exported and again.onnx_path == be.onnx_path
    assert again.onnx_path.read_bytes()[:64] == good[:64]
    batch = shapes_batch()
    assert_pred_close(again.infer(batch), be.infer(batch))
    # a readable ONNX file of the wrong model fails the torch agreement check -> exported again
    other = create_backend(name, fixture_ckpt, cache_dir=tmp_path)
    be.onnx_path.write_bytes(other.onnx_path.read_bytes())
    third = create_backend(name, DEMO, cache_dir=tmp_path)
    assert third.exported
    assert_pred_close(third.infer(batch), be.infer(batch))


def test_disagreement_raises_with_max_deviation() -> None:
    model = load_model(DEMO)

    def bad_run(batch: np.ndarray) -> np.ndarray:
        pred = oe.torch_reference(model, batch)
        pred[0, 10, 0] += 0.5  # half a pixel off in x
        return pred

    with pytest.raises(oe.OnnxMismatchError, match=r"max deviation xy 0\.5 px"):
        oe.check_agreement(bad_run, model, "test runtime")
    oe.check_agreement(lambda b: oe.torch_reference(model, b), model, "test runtime")  # the same model passes


# --- registry and backend selection ---------------------------------------------------------------


def test_missing_dependency_names_the_extra() -> None:
    reg = Registry("backend", {
        "fake": Implementation("streamdet_no_such_pkg.backend:FakeBackend", "fakeextra", ("streamdet_no_such_pkg",)),
        "core": ("json:dumps", None),
    })
    assert not reg.available("fake") and reg.available("core")
    with pytest.raises(ImplementationUnavailable) as info:
        reg.resolve("fake")
    msg = str(info.value)
    assert msg == ('backend "fake" needs the optional dependency streamdet_no_such_pkg: '
                   "pip install 'streamdet[fakeextra]'")
    assert info.value.missing == "streamdet_no_such_pkg" and info.value.extra == "fakeextra"
    assert isinstance(info.value, ValueError)
    import json

    assert reg.resolve("core") is json.dumps


def test_registry_errors() -> None:
    reg = Registry("decoder", {"a": ("json:dumps", None), "b": ("json:no_such_attr", None),
                               "c": ("streamdet.no_such_module:X", None)})
    with pytest.raises(UnknownImplementation, match=r'unknown decoder "zzz"; known: a, b, c'):
        reg.resolve("zzz")
    with pytest.raises(UnknownImplementation):
        reg.available("zzz")
    with pytest.raises(RegistryError, match="does not exist"):
        reg.resolve("b")
    with pytest.raises(RegistryError) as info:  # our own module missing is a bug, not a missing extra
        reg.resolve("c")
    assert not isinstance(info.value, ImplementationUnavailable)
    with pytest.raises(ValueError, match="module:attr"):
        Implementation("json.dumps")


def test_unknown_backend_lists_known_names() -> None:
    with pytest.raises(UnknownImplementation, match="known: torch, onnxruntime, openvino"):
        create_backend("tensorrt", DEMO)


def test_registry_lists_the_three_backends_without_importing_them() -> None:
    assert BACKENDS.names() == ["torch", "onnxruntime", "openvino"]
    assert BACKENDS.entry("onnxruntime").extra == "onnxruntime"
    assert BACKENDS.entry("openvino").extra == "openvino"
    assert BACKENDS.entry("torch").extra is None and BACKENDS.available("torch")


def test_listing_backends_imports_no_inference_library() -> None:
    code = ("import sys, streamdet.pipeline.backends as b; b.available_backends(); b.BACKENDS.resolve('torch'); "
            "print(sorted(m for m in ('torch', 'onnxruntime', 'openvino', 'onnx', 'onnxscript') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.split() == ["['torch']"]  # only the backend that was resolved


def test_auto_picks_the_first_installed_backend(onnx_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    installed = available_backends("cpu")
    assert installed and installed[-1] == "torch" and set(installed) <= set(BACKENDS.names())
    assert installed == [n for n in AUTO_ORDER["cpu"] if BACKENDS.available(n)]
    be = create_backend("auto", DEMO, cache_dir=onnx_cache)
    assert be.name == installed[0]
    monkeypatch.setattr(BACKENDS, "available", lambda name: name == "torch")
    assert create_backend("auto", DEMO).name == "torch"
    assert available_backends("cuda:1") == ["torch"]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="CUDA"):
        create_backend("torch", DEMO, half=True)
    with pytest.raises(ValueError, match="unsupported device"):
        create_backend("torch", DEMO, device="mps")
    with pytest.raises(ValueError, match="threads"):
        create_backend("torch", DEMO, threads=0)


@pytest.mark.gpu
def test_torch_cuda_half() -> None:
    be = create_backend("auto", DEMO, device="cuda:0", half=True)
    assert be.name == "torch" and be.contract.device == "cuda:0" and be.contract.compute_dtype == "float16"
    batch = shapes_batch()
    pred = be.infer(batch)
    assert pred.dtype == torch.float32 and pred.device.type == "cuda"
    refs = nms(load_model(DEMO)(to_model_input(batch, "cpu")).detach())
    assert [len(d) for d in nms(pred.cpu())] == [len(r) for r in refs]
    assert be.contract.tensor_dtype == "float16"
    assert torch.equal(be.infer(to_model_input(batch, "cuda:0", half=True)), pred)  # the device tensor path
    with pytest.raises(ValueError, match="float16"):
        be.infer(to_model_input(batch, "cuda:0"))
    with pytest.raises(ValueError, match="move it there"):
        be.infer(to_model_input(batch, "cpu", half=False).half())


# --- backend-specific settings ----------------------------------------------------------------------


@pytest.mark.parametrize("name", [p for p in ONNX if p.values[0] == "onnxruntime"])
def test_onnxruntime_threads_and_no_spinning(backends: Backends, name: str) -> None:
    opts = backends.get(name, DEMO)._session.get_session_options()
    assert opts.intra_op_num_threads == 2 and opts.inter_op_num_threads == 1
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"


@pytest.mark.parametrize("name", [p for p in ONNX if p.values[0] == "openvino"])
def test_openvino_settings_and_static_shape_cap(onnx_cache: Path, name: str) -> None:
    import openvino as ov

    from streamdet.pipeline.backends.openvino_backend import OpenVinoBackend

    be = OpenVinoBackend(DEMO, threads=2, cache_dir=onnx_cache, max_static_shapes=1)
    compiled = be._dynamic.get_compiled_model()
    assert int(compiled.get_property("INFERENCE_NUM_THREADS")) == 2
    assert compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    rng = np.random.default_rng(9)
    a, b = (rng.integers(0, 256, s, dtype=np.uint8) for s in [(2, 3, 64, 96), (1, 3, 96, 64)])
    ref_a, ref_b = be._dynamic.infer({0: a})[0], be._dynamic.infer({0: b})[0]
    assert_pred_close(be.infer(a), ref_a)  # compiled for its static shape
    assert_pred_close(be.infer(b), ref_b)  # over the cap: served by the dynamic model
    assert_pred_close(be.infer(a), ref_a)
    assert be.static_shape_count == 1
