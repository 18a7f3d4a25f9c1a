"""Children are named by import strings: the supervisor itself imports neither PyAV nor torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from streamdet.supervisor.children import ChildTargets, resolve_target


def test_the_supervisor_imports_neither_pyav_nor_torch() -> None:
    code = ("import sys, streamdet.supervisor, streamdet.supervisor.reconcile, streamdet.supervisor.policy; "
            "print(sorted(m for m in ('av', 'torch', 'cupy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_default_targets_resolve_to_the_stage_mains() -> None:
    from streamdet.pipeline.decode.process import decoder_main
    from streamdet.pipeline.worker.process import worker_main

    targets = ChildTargets()
    assert resolve_target(targets.decoder) is decoder_main
    assert resolve_target(targets.worker) is worker_main


@pytest.mark.parametrize("bad", ["streamdet.pipeline.worker.process", ":worker_main", "streamdet.pipeline.worker:"])
def test_bad_target_strings_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="package.module:function"):
        resolve_target(bad)


def test_signals_are_dispatched_by_name(tmp_path, fixtures_dir, monkeypatch) -> None:
    import signal

    from tests.supervisor.helpers import fake_supervisor, write_config

    sup = fake_supervisor(write_config(tmp_path, fixtures_dir, cameras="  - {id: cam1, url: a.mp4}"), monkeypatch)
    assert set(sup.SIGNAL_HANDLERS.values()) == {"handle_term", "handle_hup"}
    sup._on_signal(signal.SIGHUP, None)
    assert sup._reload_requested and sup._signal is None
    sup._on_signal(signal.SIGINT, None)
    assert sup._signal == signal.SIGINT
