"""A supervisor with stand-in children, run in a thread, for the supervisor tests."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streamdet.config import parse_config
from streamdet.supervisor import Supervisor
from streamdet.supervisor import children as children_mod
from streamdet.supervisor.children import ChildTargets
from tests.supervisor import fakes


def write_config(tmp_path: Path, fixtures_dir: Path, *, cameras: str, model_extra: str = "",
                 supervisor: str = "{restart_limit: 2, restart_window_s: 60, hang_timeout_s: 3.0, "
                                   "stop_timeout_s: 2}", extra: str = "") -> Path:
    for name in ("a.mp4", "b.mp4", "c.mp4", "d.mp4"):
        (tmp_path / name).write_bytes(b"")  # never opened: fake decoders
    text = f"""
model: {{weights: "{fixtures_dir / 'yolov5' / 'yolov5n_random.pt'}"{model_extra}}}
publish: {{endpoint: "ipc://{tmp_path}/pub.sock"}}
supervisor: {supervisor}
{extra}
cameras:
{cameras}
"""
    path = tmp_path / "cameras.yaml"
    path.write_text(text)
    return path


def load(path: Path) -> Any:
    return parse_config(path.read_text(), path.parent)


def fake_supervisor(path: Path, monkeypatch: pytest.MonkeyPatch, decoder: Callable[..., None] = fakes.fake_decoder,
                    worker: Callable[..., None] = fakes.fake_worker) -> Supervisor:
    """A supervisor whose children run the stand-ins; signal handlers are not installed."""
    monkeypatch.setattr(children_mod, "BACKOFF_INITIAL_S", 0.05)
    monkeypatch.setattr(signal, "signal", lambda *a: signal.SIG_DFL)
    return Supervisor(load(path), path, ChildTargets(decoder=import_string(decoder), worker=import_string(worker)))


def import_string(fn: Callable[..., None]) -> str:
    """``"module:function"`` of a module-level function (what a child process imports)."""
    return f"{fn.__module__}:{fn.__qualname__}"


class Running:
    """The supervisor's run() in a thread (signal.signal needs the main thread: patched out)."""

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.result: list[int] = []
        self.thread = threading.Thread(target=lambda: self.result.append(sup.run()), daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sup.request_stop()
        self.thread.join(30)

    def wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if predicate():
                    return
            except KeyError:  # the child or ring does not exist yet
                pass
            if not self.thread.is_alive():
                raise AssertionError(f"supervisor ended (status {self.result}) while waiting for {what}")
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def pid(self, name: str) -> int | None:
        child = self.sup.children.get(name)
        proc = child.process if child is not None else None
        return proc.pid if proc is not None and proc.is_alive() else None
