"""`streamdet run` as a subprocess: two file cameras and one RTSP camera served by GStreamer.

Checks the wire contract for all three, that the file cameras keep flowing while the RTSP server
is down and that the RTSP camera resumes when it returns, that a SIGKILLed child is restarted,
and that SIGTERM exits 0 leaving nothing in /dev/shm.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from streamdet.client import Subscriber
from tests.helpers.media import make_test_clip
from tests.helpers.rtsp import RtspServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CONTRACT = {
    "v": int, "camera": str, "seq": int, "frame": int, "pts": (int, float), "ts_capture": float,
    "ts_publish": float, "width": int, "height": int, "dropped": int, "detections": list,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shm_segments(pid: int) -> list[str]:
    return sorted(p.name for p in Path("/dev/shm").glob(f"streamdet_{pid}_*"))


def child_pids(pid: int) -> dict[int, str]:
    """Direct children of ``pid`` and their process names (from /proc)."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        ppid = int(text[text.rindex(")") + 2 :].split()[1])
        if ppid == pid:
            out[int(stat.parent.name)] = name
    return out


class Collector:
    """Receives messages in the test thread with bounded waits."""

    def __init__(self, endpoint: str) -> None:
        self.sub = Subscriber(endpoint, stats=True)
        self.by_camera: dict[str, list[dict]] = defaultdict(list)
        self.stats: list[dict] = []

    def pump(self, seconds: float) -> dict[str, list[dict]]:
        """Collect for ``seconds``; returns the detection messages received in that window."""
        window: dict[str, list[dict]] = defaultdict(list)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            msg = self.sub.recv(timeout=0.2)
            if msg is None:
                continue
            if msg.get("type") == "stats":
                self.stats.append(msg)
                continue
            self.by_camera[msg["camera"]].append(msg)
            window[msg["camera"]].append(msg)
        return window

    def wait_for(self, cameras: set[str], timeout: float) -> dict[str, list[dict]]:
        got: dict[str, list[dict]] = defaultdict(list)
        end = time.monotonic() + timeout
        while time.monotonic() < end and not cameras <= {c for c, m in got.items() if m}:
            for cam, msgs in self.pump(0.5).items():
                got[cam].extend(msgs)
        return got


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    return {
        "file1": make_test_clip(d / "file1.mp4", 320, 240, frames=50, fps=25),
        "file2": make_test_clip(d / "file2.mp4", 640, 360, frames=50, fps=25),
        "rtsp": make_test_clip(d / "rtsp.mp4", 480, 270, frames=100, fps=25),
    }


def write_config(path: Path, weights: Path, endpoint: str, rtsp_url: str, clips: dict[str, Path]) -> Path:
    path.write_text(
        f"""
model: {{weights: "{weights}", img_size: 320, conf_thres: 0.01}}
devices: [cpu]
publish: {{endpoint: "{endpoint}", stats_interval_s: 1.0}}
batching: {{max_batch: 4, max_wait_ms: 5}}
decode: {{open_timeout_s: 3, read_timeout_s: 3, stall_timeout_s: 3}}
reconnect: {{initial_s: 0.5, max_s: 2.0}}
supervisor: {{hang_timeout_s: 60, restart_limit: 5}}
cameras:
  - {{id: file1, url: "{clips['file1']}", loop: true}}
  - {{id: file2, url: "{clips['file2']}", loop: true}}
  - {{id: rtsp1, url: "{rtsp_url}"}}
"""
    )
    return path


def test_daemon_end_to_end(tmp_path: Path, fixtures_dir: Path, clips: dict[str, Path]) -> None:
    weights = fixtures_dir / "yolov5" / "yolov5n_random.pt"
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    server = RtspServer({"/cam": clips["rtsp"]})
    server.start()
    rtsp_url = server.url("/cam").replace("rtsp://", "rtsp://viewer:s3cret-pw@")
    config = write_config(tmp_path / "cameras.yaml", weights, endpoint, rtsp_url, clips)
    log_path = tmp_path / "daemon.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "streamdet", "run", str(config)], stdout=log,
                                stderr=subprocess.STDOUT)
    collector = Collector(endpoint)
    try:
        got = collector.wait_for({"file1", "file2", "rtsp1"}, timeout=120)
        assert {"file1", "file2", "rtsp1"} <= set(got), log_path.read_text()[-3000:]
        assert shm_segments(proc.pid), "rings live in /dev/shm while running"

        # The contract, for every camera.
        sizes = {"file1": (320, 240), "file2": (640, 360), "rtsp1": (480, 270)}
        for cam, msgs in got.items():
            for m in msgs:
                for key, typ in CONTRACT.items():
                    assert isinstance(m[key], typ), (cam, key, m)
                assert m["v"] == 1 and m["camera"] == cam
                assert (m["width"], m["height"]) == sizes[cam]
                assert m["ts_capture"] <= m["ts_publish"] <= time.time() + 1
                for d in m["detections"]:
                    assert set(d) >= {"box", "score", "class_id", "label"}
            seqs = [m["seq"] for m in collector.by_camera[cam]]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"{cam}: seq must grow by 1: {seqs[:20]}"

        # The RTSP server goes away: files keep flowing, the RTSP camera stops.
        server.stop()
        collector.pump(2.0)  # frames in flight
        window = collector.pump(5.0)
        assert len(window["file1"]) > 5 and len(window["file2"]) > 5
        assert len(window["rtsp1"]) == 0

        # ... and comes back: the camera resumes by itself.
        server.start()
        back = collector.wait_for({"rtsp1"}, timeout=60)
        assert back["rtsp1"], log_path.read_text()[-3000:]
        assert back["rtsp1"][0]["frame"] < 100, "frame index counts from the reopened source"

        # Stats messages report every camera.
        assert collector.stats and {"file1", "file2", "rtsp1"} <= set(collector.stats[-1]["cameras"])

        # A decoder killed with SIGKILL is restarted, and its camera flows again.
        children = child_pids(proc.pid)
        decoder = next(pid for pid, name in children.items() if "decoder-file1" in name or "sd-decoder-fil" in name)
        os.kill(decoder, signal.SIGKILL)
        collector.pump(1.0)
        again = collector.wait_for({"file1"}, timeout=30)
        assert again["file1"]
        assert decoder not in child_pids(proc.pid)
    finally:
        collector.sub.close()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = None
        server.stop()
    log_text = log_path.read_text()
    assert code == 0, log_text[-3000:]
    assert shm_segments(proc.pid) == []
    assert "s3cret-pw" not in log_text, "credentials leaked into the log"
    assert "restarting" in log_text


def test_sigterm_after_worker_killed_leaves_no_shm(tmp_path: Path, fixtures_dir: Path,
                                                   clips: dict[str, Path]) -> None:
    weights = fixtures_dir / "yolov5" / "yolov5n_random.pt"
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    config = tmp_path / "c.yaml"
    config.write_text(
        f"""
model: {{weights: "{weights}", img_size: 320}}
publish: {{endpoint: "{endpoint}"}}
cameras:
  - {{id: cam1, url: "{clips['file1']}", loop: true}}
"""
    )
    proc = subprocess.Popen([sys.executable, "-m", "streamdet", "run", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    collector = Collector(endpoint)
    try:
        assert collector.wait_for({"cam1"}, timeout=90)["cam1"]
        worker = next(pid for pid, name in child_pids(proc.pid).items() if "worker" in name)
        os.kill(worker, signal.SIGKILL)
        time.sleep(0.5)
        assert collector.wait_for({"cam1"}, timeout=60)["cam1"], "worker restarted and publishing again"
    finally:
        collector.sub.close()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out.decode()[-3000:]
    assert shm_segments(proc.pid) == []
