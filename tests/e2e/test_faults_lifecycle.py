"""Faults around a daemon's life: its supervisor killed, a worker that can never start, a
malicious checkpoint. ``streamdet run`` as a subprocess each time.

- SIGKILL of the supervisor (which also runs the publish proxy): every child goes with it
  (PR_SET_PDEATHSIG). multiprocessing's resource tracker, itself a child of the supervisor, then
  unlinks the rings. When the whole daemon is killed at once (a cgroup kill: systemd after a
  watchdog abort, the OOM killer), the rings stay; the next daemon removes them, takes over the
  stale pid file and serves.
- ``devices: [cuda:0]`` on a machine without CUDA: exit 2 with one line naming the device, no
  traceback, nothing left behind; ``streamdet check`` exits 2 naming it too.
- A checkpoint whose pickle would call os.system: ``streamdet check`` and ``streamdet run`` exit 2
  naming the refused global; the payload never runs.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from streamdet.supervisor.runtime import PID_FILE, read_pid, segments_of
from tests.helpers.daemon import Daemon, MessageLog, assert_clean, report, streamdet_cli, wait_for
from tests.helpers.media import make_test_clip
from tests.helpers.procfs import alive, descendants, open_fd_count

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = REPO / "configs" / "demo" / "shapes_yolov5n.pt"


def config(clip: Path, weights: Path = WEIGHTS, devices: str = "[cpu]") -> str:
    return f"""
model: {{weights: "{weights}", backend: torch, img_size: 256}}
devices: {devices}
publish: {{endpoint: "{{endpoint}}", stats_interval_s: 1.0}}
supervisor: {{hang_timeout_s: 4}}
cameras:
  - {{id: a, url: "{clip}", loop: true}}
  - {{id: b, url: "{clip}", loop: true}}
"""


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_clip(tmp_path_factory.mktemp("lifecycle") / "clip.mp4", 320, 240, frames=50, fps=25)


@dataclass
class Crashes:
    """One runtime directory for the crash tests' daemons, run one after another, and the pids
    of the daemons that died in it."""

    dir: Path
    dead: list[int] = field(default_factory=list)


@pytest.fixture(scope="module")
def crashes(tmp_path_factory: pytest.TempPathFactory) -> Crashes:
    return Crashes(tmp_path_factory.mktemp("crash_runtime"))


def start_serving(daemon: Daemon) -> MessageLog:
    daemon.start()
    messages = MessageLog(daemon.endpoint)
    try:
        daemon.wait_ready()
        assert wait_for(lambda: messages.dets("a") and messages.dets("b"), 60), daemon.tail()
    except BaseException:
        messages.close()
        daemon.stop()
        raise
    return messages


def test_supervisor_sigkill_takes_every_child_with_it(tmp_path: Path, clip: Path,
                                                      crashes: Crashes) -> None:
    daemon = Daemon(tmp_path, config(clip), name="k1", runtime_dir=crashes.dir)
    messages = start_serving(daemon)
    try:
        below = descendants(daemon.pid)
        assert {"sd-decoder-a", "sd-decoder-b", "sd-worker-cpu"} <= {p.comm for p in below.values()}
        assert segments_of(daemon.pid)
        t0 = time.monotonic()
        daemon.signal(signal.SIGKILL)
        assert daemon.wait_exit(10) == -signal.SIGKILL
        assert wait_for(lambda: not any(alive(p) for p in below.values()), 5.0, 0.02), (
            [p.comm for p in below.values() if alive(p)])
        children_gone_s = time.monotonic() - t0
        # the resource tracker (a child too) unlinks the rings once the last holder is gone
        assert wait_for(lambda: not segments_of(daemon.pid), 5.0, 0.02), segments_of(daemon.pid)
        segments_gone_s = time.monotonic() - t0
    finally:
        messages.close()
        daemon.stop()
    # what a SIGKILL cannot tidy: the pid file (the next daemon takes it over) and its run directory
    assert read_pid(daemon.runtime_dir / PID_FILE) == daemon.pid
    crashes.dead.append(daemon.pid)
    report("supervisor SIGKILL", children_gone_s=children_gone_s, segments_gone_s=segments_gone_s)


def test_daemon_killed_whole_then_next_daemon_cleans_up_and_serves(tmp_path: Path, clip: Path,
                                                                  crashes: Crashes) -> None:
    rdir = crashes.dir
    doomed = Daemon(tmp_path, config(clip), name="k2", runtime_dir=rdir)
    messages = start_serving(doomed)
    messages.close()
    below = descendants(doomed.pid)
    segments = segments_of(doomed.pid)
    assert len(segments) == 2
    for pid in [doomed.pid, *below]:  # everything at once, as a cgroup kill does
        os.kill(pid, signal.SIGKILL)
    assert doomed.wait_exit(10) == -signal.SIGKILL
    assert wait_for(lambda: not any(alive(p) for p in below.values()), 5.0)
    time.sleep(1.0)
    assert segments_of(doomed.pid) == segments, "nobody was left to unlink the rings"
    crashes.dead.append(doomed.pid)

    fds = open_fd_count()
    daemon = Daemon(tmp_path, config(clip), name="k3", runtime_dir=rdir)
    messages = start_serving(daemon)
    try:
        line = daemon.wait_log(r"removed \d+ stale shared-memory segments", 0, 1)
        assert line is not None, daemon.tail()
        removed = int(line.split("removed ")[1].split()[0])
        assert removed >= len(segments), line  # (also any another test's dead daemon left)
        assert segments_of(doomed.pid) == []
        assert read_pid(rdir / PID_FILE) == daemon.pid, "the stale pid file was taken over"
        assert len(segments_of(daemon.pid)) == 2
    finally:
        messages.close()
        code = daemon.stop()
    assert code == 0, daemon.tail()
    assert_clean(daemon, fds)
    report("daemon killed whole, next start", stale_segments_removed=removed)


def test_next_daemon_removes_run_directories_of_dead_daemons(crashes: Crashes) -> None:
    """The previous test's daemon started after two crashes in this runtime directory."""
    rdir, dead = crashes.dir, crashes.dead
    assert len(dead) == 2, "run the whole module: the crash tests leave these behind"
    left = sorted(p.name for pid in dead for p in rdir.glob(f"run-{pid}-*"))
    assert left == [], f"run directories of dead daemons left in {rdir}: {left}"


def test_unstartable_worker_exits_2_with_one_line(tmp_path: Path, clip: Path) -> None:
    fds = open_fd_count()
    daemon = Daemon(tmp_path, config(clip, devices="[cuda:0]")).start()
    t0 = time.monotonic()
    code = daemon.wait_exit(60)
    took = time.monotonic() - t0
    if code is None:
        daemon.stop()
    assert code == 2, daemon.tail()
    err = daemon.log()
    naming = [ln for ln in err.splitlines() if " ERROR " in ln and "cuda:0" in ln]
    assert len(naming) == 1 and "cannot start" in naming[0], naming
    assert "Traceback" not in err and "Traceback" not in daemon.stdout_path.read_text()
    assert_clean(daemon, fds)
    check = streamdet_cli("check", str(daemon.config_path))
    assert check.returncode == 2 and "cuda:0" in check.stderr, (check.returncode, check.stderr)
    assert "Traceback" not in check.stderr
    report("devices: [cuda:0] without CUDA", exit_status=code, exit_after_s=took, line=naming[0].split(": ", 1)[1])


def malicious_checkpoint(path: Path, marker: Path) -> tuple[Path, bytes]:
    """A torch-style zip checkpoint whose pickle calls ``os.system("touch MARKER")`` when loaded
    with plain pickle (``{"model": os.system(...)}``); returns the path and the pickle bytes."""
    cmd = f"touch '{marker}'".encode()
    data = (b"\x80\x02}q\x00X\x05\x00\x00\x00modelq\x01cos\nsystem\nq\x02X" + struct.pack("<I", len(cmd)) + cmd
            + b"\x85R\x73.")
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("evil/data.pkl", data)
        zf.writestr("evil/version", b"3\n")
    return path, data


def test_malicious_checkpoint_is_refused_by_check_and_run(tmp_path: Path, clip: Path) -> None:
    marker = tmp_path / "PAYLOAD-RAN"
    weights, data = malicious_checkpoint(tmp_path / "evil.pt", marker)
    control = tmp_path / "control-ran"
    pickle.loads(malicious_checkpoint(tmp_path / "control.pt", control)[1])
    assert wait_for(control.exists, 5), "positive control: the same pickle run by plain pickle calls os.system"

    fds = open_fd_count()
    daemon = Daemon(tmp_path, config(clip, weights=weights))
    check = streamdet_cli("check", str(daemon.config_path))
    assert check.returncode == 2, (check.returncode, check.stdout, check.stderr)
    assert "refusing to load" in check.stderr and "os.system" in check.stderr, check.stderr
    assert "Traceback" not in check.stderr

    daemon.start()
    code = daemon.wait_exit(60)
    if code is None:
        daemon.stop()
    assert code == 2, daemon.tail()
    err = daemon.log()
    lines = [ln for ln in err.splitlines() if "os.system" in ln]
    assert len(lines) == 1 and " ERROR " in lines[0] and "refusing to load" in lines[0], lines
    assert "Traceback" not in err
    assert not marker.exists(), "the payload ran"
    assert_clean(daemon, fds)
    report("malicious checkpoint", exit_status=code, line=lines[0].split(": ", 1)[1])
