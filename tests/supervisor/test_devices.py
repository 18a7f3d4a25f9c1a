"""Devices: ``devices: auto`` with the GPU discovery mocked, one worker per GPU confined to it by
CUDA_VISIBLE_DEVICES (cuda:0 inside), sticky placement when a GPU appears, NVDEC devices of the
cameras, and a supervisor that never imports torch or CuPy."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from streamdet.config import parse_config
from streamdet.stopflag import StopFlag
from streamdet.supervisor import plan as plan_mod
from streamdet.supervisor.children import Child
from streamdet.supervisor.devices import cuda_visible_entry, nvdec_device, resolve_devices
from streamdet.supervisor.plan import make_plan
from streamdet.supervisor.reconcile import Reconciler
from tests.supervisor.helpers import Running, fake_supervisor, write_config

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "configs" / "demo" / "shapes_yolov5n.pt"


def _config(tmp_path: Path, cameras: list[str], devices: str = "auto", decode: str = "") -> Any:
    (tmp_path / "a.mp4").write_bytes(b"\0")
    cams = "\n".join(f"  - {{id: {c}, url: a.mp4{decode}}}" for c in cameras)
    return parse_config(f'model: {{weights: "{DEMO}"}}\ndevices: {devices}\ncameras:\n{cams}\n', tmp_path)


def gpus(n: int) -> Any:
    """A GPU counter standing in for the driver's /proc entries."""
    return lambda: n


# -- resolution ------------------------------------------------------------------------------------


def test_resolve_devices() -> None:
    assert resolve_devices(("auto",), 0) == ("cpu",)
    assert resolve_devices(("auto",), 3) == ("cuda:0", "cuda:1", "cuda:2")
    assert resolve_devices(("cuda:1", "cpu"), 0) == ("cuda:1", "cpu")  # explicit lists are kept


def test_auto_without_gpu_is_one_cpu_worker(tmp_path: Path) -> None:
    plan = make_plan(_config(tmp_path, ["a", "b"]), cpus=2, gpu_counter=gpus(0), environ={})
    assert [(w.name, w.device, w.spec_device, w.env) for w in plan.workers] == [("worker-cpu", "cpu", "cpu", {})]
    assert plan.workers[0].lanes >= 1 and plan.workers[0].threads is not None  # the CPU budget applies
    assert all(not s.wants_nvdec and s.nvdec_device is None for d in plan.decoders for s in d.sources)


def test_auto_with_two_gpus_one_worker_each_seeing_only_its_gpu(tmp_path: Path) -> None:
    plan = make_plan(_config(tmp_path, ["a", "b", "c", "d"]), cpus=16, gpu_counter=gpus(2), environ={})
    workers = {w.name: w for w in plan.workers}
    assert sorted(workers) == ["worker-cuda0", "worker-cuda1"]
    for index, w in enumerate(workers[n] for n in ("worker-cuda0", "worker-cuda1")):
        assert w.device == f"cuda:{index}"
        assert w.env == {"CUDA_VISIBLE_DEVICES": str(index)}
        assert w.spec_device == "cuda:0"  # the only GPU the process sees
        assert len(w.cameras) == 2 and w.lanes == 1 and w.threads is None
    # each camera's decoder asks NVDEC for its worker's GPU (decode: auto, the default)
    gpu_of = plan.worker_of()
    for d in plan.decoders:
        for s in d.sources:
            assert s.decode == "auto" and s.wants_nvdec and s.nvdec_device == gpu_of[s.camera_id].split(":")[1]


def test_cuda_visible_devices_of_the_supervisor_is_honoured(tmp_path: Path) -> None:
    environ = {"CUDA_VISIBLE_DEVICES": "GPU-8f2e, 3"}
    plan = make_plan(_config(tmp_path, ["a", "b"]), cpus=16, gpu_counter=gpus(2), environ=environ)
    assert {w.device: w.env["CUDA_VISIBLE_DEVICES"] for w in plan.workers} == {"cuda:0": "GPU-8f2e", "cuda:1": "3"}
    assert cuda_visible_entry("cuda:5", environ) == "5"  # beyond the list: the worker reports it missing
    assert cuda_visible_entry("cpu", environ) is None


def test_explicit_devices_and_decode_settings(tmp_path: Path) -> None:
    cfg = _config(tmp_path, ["a", "b"], devices='["cuda:1", cpu]', decode=", decode: nvdec")
    plan = make_plan(cfg, cpus=4, gpu_counter=gpus(2), environ={})
    by_dev = {w.device: w for w in plan.workers}
    assert by_dev["cuda:1"].env == {"CUDA_VISIBLE_DEVICES": "1"} and by_dev["cuda:1"].spec_device == "cuda:0"
    assert by_dev["cpu"].env == {} and by_dev["cpu"].spec_device == "cpu"
    sources = {s.camera_id: s for d in plan.decoders for s in d.sources}
    on_gpu, on_cpu = by_dev["cuda:1"].cameras[0], by_dev["cpu"].cameras[0]
    assert sources[on_gpu].nvdec_device == "1"
    assert sources[on_cpu].nvdec_device == "0" and sources[on_cpu].wants_nvdec  # nvdec asked for: GPU 0
    # the rules behind it
    assert nvdec_device("cpu", "cuda:1", 2) is None
    assert nvdec_device("auto", "cpu", 2) is None
    assert nvdec_device("auto", "cuda:1", 0) is None
    assert nvdec_device("nvdec", "cpu", 0) is None


def test_a_gpu_that_appears_takes_new_cameras_only(tmp_path: Path) -> None:
    first = make_plan(_config(tmp_path, ["a", "b", "c"]), cpus=16, gpu_counter=gpus(1), environ={})
    assert [(w.name, w.cameras) for w in first.workers] == [("worker-cuda0", ("a", "b", "c"))]
    second = make_plan(_config(tmp_path, ["a", "b", "c", "d", "e"]), cpus=16, previous=first,
                       gpu_counter=gpus(2), environ={})
    workers = {w.name: w for w in second.workers}
    assert workers["worker-cuda0"].cameras == ("a", "b", "c")  # nobody moved
    assert workers["worker-cuda1"].cameras == ("d", "e")
    # the GPU 0 worker needs no restart: only its cameras could have changed, and they did not
    assert workers["worker-cuda0"].restart_key() == first.workers[0].restart_key()
    # back to no GPU: everything goes to the CPU
    third = make_plan(_config(tmp_path, ["a", "b", "c", "d", "e"]), cpus=16, previous=second,
                      gpu_counter=gpus(0), environ={})
    assert [(w.name, len(w.cameras)) for w in third.workers] == [("worker-cpu", 5)]


# -- the child's environment ---------------------------------------------------------------------


def record_env(path: str, stop: Any = None) -> None:
    """A child target (module level: spawned processes import it) that writes what it sees."""
    Path(path).write_text(json.dumps({"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
                                      "torch": "torch" in sys.modules}))


def test_child_env_is_set_in_the_child_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    out = tmp_path / "env.json"
    child = Child("w", "worker", (), lambda stop: (str(out),), f"{__name__}:record_env",
                  env={"CUDA_VISIBLE_DEVICES": "1"})
    child.start(mp.get_context("spawn"), "warning")
    assert child.process is not None
    child.process.join(60)
    assert child.reap() == 0
    assert json.loads(out.read_text()) == {"CUDA_VISIBLE_DEVICES": "1", "torch": False}
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_reconciler_gives_each_worker_its_gpu(tmp_path: Path) -> None:
    plan = make_plan(_config(tmp_path, ["a", "b"]), cpus=16, gpu_counter=gpus(2), environ={})
    ctx = mp.get_context("spawn")
    from streamdet.supervisor.finished import FinishedCameras
    from streamdet.supervisor.state import SupervisorState

    rings: Any = {c: SimpleNamespace(name=f"ring_{c}") for c in ("a", "b")}
    state = SupervisorState(config=_config(tmp_path, ["a", "b"]), ctx=ctx, cpus=16, rings=rings, run_dir=tmp_path)
    rec = Reconciler(state, FinishedCameras(state))
    for w in plan.workers:
        child = rec._new_worker(w)
        spec, _stop, _control = child.build_args(StopFlag(ctx))
        assert child.env == {"CUDA_VISIBLE_DEVICES": w.device.split(":")[1]}
        assert spec.device == "cuda:0" and spec.name == w.name


def env_worker(spec: Any, stop: Any, control: Any) -> None:
    """A stand-in worker that records its GPU view beside its live settings file, then serves."""
    out = Path(control.live.path).with_suffix(".env.json")
    out.write_text(json.dumps({"pid": os.getpid(), "device": spec.device,
                               "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
                               "cameras": sorted(spec.ring_names)}))
    control.set_phase("serving")
    while not stop.is_set():
        control.heartbeat.value = time.time()
        time.sleep(0.05)


def _env_of(sup: Any, worker: str) -> dict:
    path = sup.workdir / f"{worker}.live.env.json"
    return json.loads(path.read_text()) if path.exists() else {}


@pytest.mark.slow
def test_daemon_with_auto_devices_and_a_gpu_added_on_reload(tmp_path: Path, fixtures_dir: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    count = {"gpus": 2}
    monkeypatch.setattr(plan_mod, "default_gpu_counter", lambda: count["gpus"])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    cams = "  - {id: a, url: a.mp4}\n  - {id: b, url: b.mp4}"
    path = write_config(tmp_path, fixtures_dir, cameras=cams, extra="devices: auto")
    sup = fake_supervisor(path, monkeypatch, worker=env_worker)
    with Running(sup) as run:
        run.wait(lambda: sup._ready and _env_of(sup, "worker-cuda0") and _env_of(sup, "worker-cuda1"), 30, "ready")
        first = {w: _env_of(sup, w) for w in ("worker-cuda0", "worker-cuda1")}
        assert {w: (e["device"], e["CUDA_VISIBLE_DEVICES"]) for w, e in first.items()} == {
            "worker-cuda0": ("cuda:0", "0"), "worker-cuda1": ("cuda:0", "1")}
        assert sorted(first["worker-cuda0"]["cameras"] + first["worker-cuda1"]["cameras"]) == ["a", "b"]

        count["gpus"] = 3  # a GPU appears; a camera is added
        write_config(tmp_path, fixtures_dir, cameras=cams + "\n  - {id: c, url: c.mp4}", extra="devices: auto")
        sup.request_reload()
        run.wait(lambda: _env_of(sup, "worker-cuda2").get("cameras") == ["c"], 20, "the new GPU's worker")
        assert _env_of(sup, "worker-cuda2")["CUDA_VISIBLE_DEVICES"] == "2"
        for w, before in first.items():  # the other workers kept their process and cameras
            assert run.pid(w) == before["pid"] and sup.children[w].cameras == tuple(before["cameras"])
        assert "CUDA_VISIBLE_DEVICES" not in os.environ  # never set in the supervisor


# -- no torch, no CUDA in the supervisor -------------------------------------------------------------


def test_supervisor_never_imports_torch_or_cupy(tmp_path: Path) -> None:
    (tmp_path / "a.mp4").write_bytes(b"\0")
    script = f"""
import sys
from pathlib import Path
from streamdet.config import parse_config
import streamdet.supervisor, streamdet.supervisor.core, streamdet.supervisor.reconcile
from streamdet.supervisor.plan import make_plan
cfg = parse_config('model: {{weights: "{DEMO}"}}\\ndevices: auto\\ncameras: [{{id: a, url: a.mp4, decode: nvdec}}]\\n',
                   Path({str(tmp_path)!r}))
for n in (0, 2):
    plan = make_plan(cfg, cpus=4, gpu_counter=lambda: n)
plan = make_plan(cfg, cpus=4)  # the real discovery: the driver's /proc entries
print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "cupy", "cuda", "torchvision", "pycuda")))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
