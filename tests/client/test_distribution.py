"""The light client distribution (./client, ``streamdet-client``): versions in lock-step, the re-exports,
and an install into a clean virtual environment that subscribes to a real publisher without torch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import streamdet
import streamdet_client
from streamdet import wire
from tests.client.test_subscriber import FeedThread

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "cv2", "av", "numpy", "pydantic", "yaml")


def test_versions_move_in_lock_step() -> None:
    assert streamdet.__version__ == streamdet_client.__version__
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"streamdet-client=={streamdet_client.__version__}" in deps
    client = tomllib.loads((REPO / "client" / "pyproject.toml").read_text())["project"]
    assert client["name"] == "streamdet-client"
    assert [d.split(">")[0].split("=")[0] for d in client["dependencies"]] == ["pyzmq"]
    assert client["optional-dependencies"]["mqtt"] == ["paho-mqtt>=2,<3"]


def test_streamdet_client_is_what_streamdet_client_reexports() -> None:
    import streamdet.client
    import streamdet.errors
    import streamdet.wire

    assert streamdet.client.Subscriber is streamdet_client.Subscriber
    assert streamdet.errors.StreamdetError is streamdet_client.StreamdetError
    assert streamdet.errors.WireError is streamdet_client.WireError
    assert issubclass(streamdet.errors.ConfigError, streamdet_client.StreamdetError)
    assert streamdet.wire.decode is streamdet_client.decode


def test_light_modules_load_no_heavy_module() -> None:
    code = ("import sys, streamdet_client, streamdet_client.mqtt.bridge; from streamdet_client import Subscriber; "
            f"print(','.join(m for m in {HEAVY + ('paho',)!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""  # paho too: it loads only when a bridge connects


SCRIPT = textwrap.dedent("""
    import importlib.util, sys
    from streamdet_client import Subscriber
    import streamdet_client
    assert streamdet_client.__file__.startswith(sys.prefix), streamdet_client.__file__
    missing = [m for m in {heavy!r} if importlib.util.find_spec(m) is None]
    with Subscriber(sys.argv[1], cameras=["cam1"]) as sub:
        msg = sub.recv(30)
    print(msg["camera"], msg["type"], len(msg["detections"]), ",".join(missing))
""")


@pytest.mark.slow
@pytest.mark.e2e
def test_clean_venv_install_subscribes_without_torch(tmp_path: Path) -> None:
    """``pip install ./client`` in a fresh venv (no system site packages): only pyzmq comes along."""
    src = tmp_path / "client"
    shutil.copytree(REPO / "client", src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    install = subprocess.run([str(py), "-m", "pip", "install", "-q", str(src)], capture_output=True, text=True,
                             timeout=600, env=env)
    assert install.returncode == 0, install.stderr[-3000:]
    listed = subprocess.run([str(py), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True,
                            check=True, env=env).stdout
    names = {line.split("==")[0].lower() for line in listed.splitlines()}
    assert names - {"pip", "setuptools", "wheel"} == {"pyzmq", "streamdet-client"}, names
    script = tmp_path / "sub.py"
    script.write_text(SCRIPT.format(heavy=HEAVY))
    with FeedThread() as feed:
        run = subprocess.run([str(py), str(script), feed.endpoint], capture_output=True, text=True, timeout=120,
                             cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    camera, kind, _n, missing = run.stdout.split()
    assert (camera, kind) == ("cam1", wire.DETECTIONS)
    assert missing.split(",") == list(HEAVY)  # torch, OpenCV, PyAV, numpy (and pydantic, yaml) are absent
