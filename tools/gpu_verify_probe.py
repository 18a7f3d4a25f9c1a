"""Stages ``probe`` and ``gpu_tests`` of tools/gpu_verify.py: what the machine has, then the ``gpu`` tests.

The probe records the facts the GPU path depends on, each read without failing the stage: the
GPU and driver (nvidia-smi), how the supervisor's discovery counts GPUs without CUDA (the
driver's /proc entries, the device nodes), the video libraries NVDEC needs (``libnvcuvid``), the
container's driver capabilities, library versions, torch's view of the device, and whether
PyAV's FFmpeg can open the CUDA device and decode a frame with NVDEC.
"""

from __future__ import annotations

import glob
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from gpu_verify_common import StageContext, not_in_dry_run, require_cuda

REPO = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], timeout: float = 10.0) -> str:
    """A command's output (stdout and stderr), or why it could not run."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"<{type(exc).__name__}: {exc}>"
    return (out.stdout + out.stderr).strip()


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except Exception as exc:  # a broken install is a fact worth recording too
        return f"<{type(exc).__name__}: {exc}>" if not isinstance(exc, ImportError) else None
    return str(getattr(mod, "__version__", "?"))


def _shm_free_gib() -> float | None:
    try:
        return round(shutil.disk_usage("/dev/shm").free / 2**30, 1)
    except OSError:
        return None


def _discovery() -> dict[str, Any]:
    """How streamdet's supervisor would count GPUs here (no CUDA), and what auto resolves to."""
    from streamdet.preflight import NVIDIA_PROC, visible_gpus
    from streamdet.supervisor.devices import resolve_devices

    try:
        proc_entries = sorted(p.name for p in NVIDIA_PROC.iterdir())
    except OSError as exc:
        proc_entries = [f"<{type(exc).__name__}: {exc}>"]
    gpus = visible_gpus()
    return {"proc_driver_nvidia_gpus": proc_entries, "dev_nodes": sorted(glob.glob("/dev/nvidia*")),
            "visible_gpus": gpus, "devices_auto": list(resolve_devices(("auto",), gpus))}


def _video_libraries() -> dict[str, Any]:
    ldconfig = _run(["ldconfig", "-p"])
    wanted = ("libnvcuvid", "libnvidia-encode", "libcuda.so")
    found = sorted({line.split("=>")[-1].strip() for line in ldconfig.splitlines() if any(w in line for w in wanted)})
    dirs = ("/usr/local/nvidia/lib*", "/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/cuda*/lib64",
            "/usr/lib/wsl/lib")
    files = sorted({f for d in dirs for f in glob.glob(f"{d}/libnvcuvid*")})
    return {"ldconfig": found, "libnvcuvid_files": files,
            "NVIDIA_DRIVER_CAPABILITIES": os.environ.get("NVIDIA_DRIVER_CAPABILITIES"),
            "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES")}


def _torch_view() -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        return {"torch": None}
    info: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda,
                            "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(device_count=torch.cuda.device_count(), name=props.name,
                    capability=f"{props.major}.{props.minor}", memory_gib=round(props.total_memory / 2**30, 1),
                    multiprocessors=props.multi_processor_count, cudnn=torch.backends.cudnn.version(),
                    stream_has___cuda_stream__=hasattr(torch.cuda.Stream, "__cuda_stream__"))
    return info


def nvdec_facts() -> dict[str, Any]:
    """PyAV's FFmpeg and NVDEC: CUDA device support, h264/hevc hardware configs, the device opened."""
    import av
    from av.codec.hwaccel import hwdevices_available

    from streamdet.pipeline.decode.nvdec import nvdec_problem

    configs = {}
    for codec in ("h264", "hevc", "av1"):
        try:
            configs[codec] = [str(c.device_type.name) for c in av.Codec(codec, "r").hardware_configs]
        except Exception as exc:
            configs[codec] = [f"<{type(exc).__name__}>"]
    problem = nvdec_problem("0")
    return {"av": av.__version__, "hwdevices": hwdevices_available(), "hw_configs": configs,
            "cuvid_decoders": sorted(c for c in av.codecs_available if c.endswith("_cuvid")),
            "nvdec_device_problem": problem, "nvdec_device_ok": problem is None}


def probe_stage(ctx: StageContext) -> dict[str, Any]:
    smi = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.video,"
                "pci.bus_id", "--format=csv,noheader"])
    facts: dict[str, Any] = {
        "python": sys.version.split()[0], "platform": platform.platform(), "cpus": len(os.sched_getaffinity(0)),
        "nvidia_smi": smi, "nvidia_smi_L": _run(["nvidia-smi", "-L"]), "dev_shm_free_gib": _shm_free_gib(),
        "discovery": _discovery(), "video_libraries": _video_libraries(), "torch": _torch_view(),
        "versions": {m: _version(m) for m in ("numpy", "cv2", "cupy", "torchvision", "zmq", "pydantic", "av")},
    }
    try:
        facts["nvdec"] = nvdec_facts()
    except Exception as exc:
        facts["nvdec"] = {"error": f"{type(exc).__name__}: {exc}"}
    t = facts["torch"]
    gpu = f"{t.get('name')} ({t.get('memory_gib')} GiB)" if t.get("cuda_available") else "no CUDA device"
    nvdec = "NVDEC device opens" if facts["nvdec"].get("nvdec_device_ok") else "NVDEC unavailable"
    libs = "libnvcuvid present" if facts["video_libraries"]["ldconfig"] or facts["video_libraries"][
        "libnvcuvid_files"] else "no libnvcuvid found"
    facts["headline"] = (f"{gpu}; driver {smi.split(',')[1].strip() if smi.count(',') >= 2 else '?'}; "
                         f"discovery sees {facts['discovery']['visible_gpus']} GPU(s); {nvdec}; {libs}")
    return facts


_SUMMARY = re.compile(r"=+ (.*) in [\d.]+s")


def gpu_tests_stage(ctx: StageContext) -> dict[str, Any]:
    """``pytest -m gpu`` over the whole test tree, within the stage's budget."""
    require_cuda()
    not_in_dry_run(ctx)
    env = dict(os.environ)
    fixtures = REPO / ".fixtures"
    if "STREAMDET_FIXTURES" not in env and (fixtures / "README.md").is_file():
        env["STREAMDET_FIXTURES"] = str(fixtures)
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=max(10.0, ctx.left() - 5))
        text, rc = out.stdout + out.stderr, out.returncode
    except subprocess.TimeoutExpired as exc:  # its output is bytes whatever text= says
        parts = (exc.stdout, exc.stderr)
        text = "".join(o.decode(errors="replace") if isinstance(o, bytes) else (o or "") for o in parts)
        text, rc = text + "\n<timed out>", -1
    (ctx.out / "gpu_tests.log").write_text(text)
    lines = [m.group(1) for m in _SUMMARY.finditer(text)]
    failed = [line for line in text.splitlines() if line.startswith(("FAILED", "ERROR"))]
    result = {"rc": rc, "summary": lines[-1] if lines else None, "failed": failed[:30], "log": "gpu_tests.log"}
    result["headline"] = f"rc {rc}: {result['summary']}"
    if rc not in (0, 5):  # 5: nothing collected
        result.update(status="error", reason=f"pytest -m gpu: rc {rc}: {result['summary']}")
    return result
