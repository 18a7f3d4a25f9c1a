"""Signals sent to the daemon's whole process group (``kill -HUP -PGID``, Ctrl-C in a terminal,
some process managers): only the supervisor acts on them. ``streamdet run`` as a subprocess in
its own session, so the test can signal its group and nothing else.

- SIGHUP to the group: exactly one reload and nothing else; every process of the daemon (decoders,
  worker and multiprocessing's resource tracker) still runs, none is left a zombie, detections
  keep coming.
- Then SIGINT to the group: the supervisor stops its children (they do not act on the signal
  themselves), exit 0, no traceback or resource-tracker warning in the log, nothing left behind.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.helpers.daemon import Daemon, MessageLog, assert_clean, report, wait_for
from tests.helpers.media import make_test_clip
from tests.helpers.procfs import alive, all_processes, descendants, open_fd_count

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_group_sighup_is_one_reload_and_group_sigint_a_clean_stop(tmp_path: Path, fixtures_dir: Path) -> None:
    clip = make_test_clip(tmp_path / "clip.mp4", 160, 120, frames=20, fps=10)
    weights = fixtures_dir / "yolov5" / "yolov5n_random.pt"
    daemon = Daemon(tmp_path, f"""
model: {{weights: "{weights}", backend: torch, img_size: 160}}
devices: [cpu]
publish: {{endpoint: "{{endpoint}}", stats_interval_s: 1.0}}
cameras:
  - {{id: a, url: "{clip}", loop: true}}
  - {{id: b, url: "{clip}", loop: true}}
""")
    fds = open_fd_count()
    daemon.start(new_session=True)
    messages = MessageLog(daemon.endpoint)
    try:
        daemon.wait_ready()
        assert wait_for(lambda: messages.dets("a") and messages.dets("b"), 60), daemon.tail()
        pgid = os.getpgid(daemon.pid)
        assert pgid == daemon.pid
        below = descendants(daemon.pid)
        assert {"sd-decoder-a", "sd-decoder-b", "sd-worker-cpu"} <= {p.comm for p in below.values()}
        trackers = [p for p in below.values() if "resource_tracker" in cmdline(p.pid)]
        assert len(trackers) == 1, [cmdline(p) for p in below]

        mark = daemon.mark()
        os.killpg(pgid, signal.SIGHUP)
        t0 = time.monotonic()
        assert daemon.wait_log("reloaded", mark, 30) is not None, daemon.log_since(mark)
        time.sleep(3.0)  # a child or the tracker killed by the signal would be gone (or a zombie) by now
        after = daemon.log_since(mark)
        assert after.count("reloaded") == 1, after
        for word in ("died", "restarting", " ERROR ", " WARNING ", "Traceback"):
            assert word not in after, after
        assert all(alive(p) for p in below.values()), [f"{p.pid} {p.comm}" for p in below.values() if not alive(p)]
        zombies = [p for p in all_processes() if p.ppid == daemon.pid and p.state == "Z"]
        assert zombies == [], zombies
        assert messages.wait_dets("a", 3, since=t0) and messages.wait_dets("b", 3, since=t0), daemon.tail()

        mark = daemon.mark()
        os.killpg(pgid, signal.SIGINT)
        code = daemon.wait_exit(60)
    finally:
        messages.close()
        daemon.stop()
    assert code == 0, daemon.tail()
    stopping = daemon.log_since(mark)
    assert "received SIGINT; stopping" in stopping
    assert stopping.count("decoder stopped") == 2, stopping  # asked to stop, not killed by the signal
    assert "did not stop in time" not in stopping
    log = daemon.log() + daemon.stdout_path.read_text()
    assert "Traceback" not in log and "resource_tracker" not in log and "KeyboardInterrupt" not in log, log[-3000:]
    assert_clean(daemon, fds)
    report("process-group SIGHUP then SIGINT", processes=len(below), exit_status=code)
