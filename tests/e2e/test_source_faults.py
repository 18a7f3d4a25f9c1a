"""`streamdet run` with broken file cameras beside healthy ones.

A truncated MP4, a zero-byte file and a text file named .mp4 run next to a healthy camera, a
healthy camera thinned by ``max_fps`` and a looping camera. Checks: every frame of the healthy
camera is published once; the truncated file's readable frames are published exactly once and
the camera ends ``failed``; the empty and text files end ``failed`` without a retry loop; the
daemon keeps running; the ``max_fps`` camera's skipped frames are counted as the wire contract
says (docs/wire.md: in the stats' ``dropped``/``drops.max_fps``, and in each detection message's
``dropped``, which equals the jump in ``frame``); every camera that finished (ended or failed for
good) lets its decoder process and its /dev/shm ring go, its final state (and a failed one's
``last_error``) still in the stats, while the looping camera keeps publishing; SIGTERM exits 0
leaving no /dev/shm segment of that daemon and no child process behind.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from streamdet.client import Subscriber
from tests.helpers.faulty_media import readable_frames, truncated_clip, write_clip
from tests.helpers.procfs import children as child_processes
from tests.helpers.rtsp import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HEALTHY_FRAMES = 30
THINNED_FRAMES = 30
BAD = ("truncated", "empty", "text")
FINISHED = ("healthy", "thinned", *BAD)  # every camera but "looping" finishes for good


def shm_segments(pid: int) -> list[str]:
    return sorted(p.name for p in Path("/dev/shm").glob(f"streamdet_{pid}_*"))


def _stat(pid: int | str) -> tuple[str, list[str]] | None:
    """(state, fields after the state) of /proc/<pid>/stat, or None when there is no such process."""
    try:
        text = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return None
    rest = text[text.rindex(")") + 2 :].split()
    return rest[0], rest[1:]


def descendants(pid: int) -> dict[int, str]:
    """Every live process below ``pid``: pid -> start time (so a recycled pid is not taken for it)."""
    procs: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        st = _stat(entry.name)
        if st is not None:
            procs[int(entry.name)] = (int(st[1][0]), st[1][18])  # ppid, starttime
    found: dict[int, str] = {}
    frontier = {pid}
    while frontier:
        frontier = {p for p, (ppid, _) in procs.items() if ppid in frontier and p not in found}
        found.update({p: procs[p][1] for p in frontier})
    return found


def alive(pid: int, start: str) -> bool:
    """That very process (same start time) still exists and is not a zombie."""
    st = _stat(pid)
    return st is not None and st[0] != "Z" and st[1][18] == start


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")
    empty = d / "empty.mp4"
    empty.write_bytes(b"")
    text = d / "text.mp4"
    text.write_text("not a video\n" * 50)
    return {
        "healthy": write_clip(d / "healthy.mp4", 160, 120, HEALTHY_FRAMES),
        "looping": write_clip(d / "looping.mp4", 160, 120, 20),
        "thinned": write_clip(d / "thinned.mp4", 160, 120, THINNED_FRAMES),
        "truncated": truncated_clip(d / "truncated.mp4", 160, 120, frames=30, keep=0.6),
        "empty": empty,
        "text": text,
    }


def write_config(path: Path, weights: Path, endpoint: str, media: dict[str, Path]) -> Path:
    path.write_text(
        f"""
model: {{weights: "{weights}", img_size: 160, backend: torch}}
devices: [cpu]
publish: {{endpoint: "{endpoint}", stats_interval_s: 0.5}}
batching: {{max_batch: 4, max_wait_ms: 5}}
reconnect: {{initial_s: 0.2, max_s: 0.4}}
supervisor: {{hang_timeout_s: 3}}
cameras:
  - {{id: healthy, url: "{media['healthy']}", realtime: false}}
  - {{id: thinned, url: "{media['thinned']}", realtime: false, max_fps: 5}}
  - {{id: truncated, url: "{media['truncated']}", realtime: false}}
  - {{id: empty, url: "{media['empty']}", realtime: false}}
  - {{id: text, url: "{media['text']}", realtime: false}}
  - {{id: looping, url: "{media['looping']}", loop: true}}
"""
    )
    return path


def test_broken_files_end_failed_beside_healthy_cameras(tmp_path: Path, fixtures_dir: Path,
                                                        media: dict[str, Path]) -> None:
    weights = fixtures_dir / "yolov5" / "yolov5n_random.pt"
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    config = write_config(tmp_path / "cameras.yaml", weights, endpoint, media)
    readable = readable_frames(media["truncated"])
    assert 0 < len(readable) < 30
    log_path = tmp_path / "daemon.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "streamdet", "run", str(config)], stdout=log,
                                stderr=subprocess.STDOUT)
    sub = Subscriber(endpoint, stats=True)  # subscribed before the workers are ready: file frames wait for them
    dets: dict[str, list[dict]] = defaultdict(list)
    states: dict[str, str] = {}
    stats: list[dict] = []
    children: dict[int, str] = {}
    try:
        def done() -> bool:
            return (len(dets["healthy"]) >= HEALTHY_FRAMES and len(dets["truncated"]) >= len(readable)
                    and states.get("healthy") == "ended" and states.get("thinned") == "ended"
                    and all(states.get(c) == "failed" for c in BAD))

        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not done():
            children.update(descendants(proc.pid))
            msg = sub.recv(timeout=0.2)
            if msg is None:
                assert proc.poll() is None, log_path.read_text()[-3000:]
                continue
            if msg["type"] == "stats":
                stats.append(msg)
                states.update({cam: s["state"] for cam, s in msg["cameras"].items()})
            else:
                dets[msg["camera"]].append(msg)
        assert done(), (states, {c: len(m) for c, m in dets.items()}, log_path.read_text()[-3000:])
        settle = time.monotonic() + 2.0  # a retry loop would publish again or flip a state now
        while time.monotonic() < settle:
            msg = sub.recv(timeout=0.2)
            if msg is not None and msg["type"] == "stats":
                stats.append(msg)
                states.update({cam: s["state"] for cam, s in msg["cameras"].items()})
            elif msg is not None:
                dets[msg["camera"]].append(msg)
        assert proc.poll() is None, "the daemon keeps running"

        # each finished camera's decoder process and ring go away; the looping camera goes on
        def released() -> bool:
            comms = {p.comm for p in child_processes(proc.pid).values()}
            segments = shm_segments(proc.pid)
            return all(f"sd-decoder-{c}"[:15] not in comms and f"streamdet_{proc.pid}_{c}" not in segments
                       for c in FINISHED)

        def record(msg: dict | None) -> None:
            if msg is not None and msg["type"] == "stats":
                stats.append(msg)
            elif msg is not None:
                dets[msg["camera"]].append(msg)

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not released():
            record(sub.recv(timeout=0.2))
        assert released(), ({p.comm for p in child_processes(proc.pid).values()}, shm_segments(proc.pid))
        assert "sd-decoder-loop" in {p.comm for p in child_processes(proc.pid).values()}
        assert shm_segments(proc.pid) == [f"streamdet_{proc.pid}_looping"]
        seen_stats, seen_looping = len(stats), len(dets["looping"])
        settle = time.monotonic() + 3.0
        while time.monotonic() < settle:
            record(sub.recv(timeout=0.2))
        after = stats[seen_stats:]
        assert after and len(dets["looping"]) > seen_looping, (len(after), len(dets["looping"]) - seen_looping)
        final = after[-1]["cameras"]
        assert {c: final[c]["state"] for c in FINISHED} == {"healthy": "ended", "thinned": "ended",
                                                            "truncated": "failed", "empty": "failed",
                                                            "text": "failed"}
        assert final["looping"]["state"] == "streaming"
        for cam, words in (("truncated", "damaged data after frame"), ("empty", "the file is empty"),
                           ("text", "not a decodable video file")):
            assert words in final[cam]["last_error"], final[cam]
        assert proc.poll() is None
    finally:
        sub.close()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = None
    log_text = log_path.read_text()
    assert code == 0, log_text[-3000:]

    # every frame of the healthy camera, once, in order; the truncated file's readable frames, once
    assert [m["frame"] for m in dets["healthy"]] == list(range(HEALTHY_FRAMES))
    assert [m["frame"] for m in dets["truncated"]] == list(range(len(readable)))
    assert not dets["empty"] and not dets["text"] and dets["looping"]
    assert all((m["width"], m["height"]) == (160, 120) for c in ("healthy", "truncated") for m in dets[c])

    # final states stayed put; no reopen of a failed file
    assert states == {"healthy": "ended", "thinned": "ended", "truncated": "failed", "empty": "failed",
                      "text": "failed", "looping": "streaming"}
    last = {cam: s for msg in stats for cam, s in msg["cameras"].items()}
    assert all(last[c]["reconnects"] == 0 for c in BAD)
    for cam, words in (("truncated", "damaged data after frame"), ("empty", "the file is empty"),
                       ("text", "not a decodable video file")):
        lines = [ln for ln in log_text.splitlines() if f"camera={cam} " in ln and "camera failed, not retried" in ln]
        assert len(lines) == 1 and words in lines[0], lines
    assert "reconnecting in" not in log_text

    # max_fps: skipped frames are jumps in `frame`, and each det message's `dropped` counts the
    # frames skipped since the previous one; the stats count them as max_fps drops (docs/wire.md)
    thinned = dets["thinned"]
    frames = [m["frame"] for m in thinned]
    assert 4 <= len(thinned) < THINNED_FRAMES and frames == sorted(set(frames)) and frames[-1] > len(thinned)
    assert [m["dropped"] for m in thinned[1:]] == [b - a - 1 for a, b in zip(frames, frames[1:], strict=False)]
    skipped = sum(msg["cameras"]["thinned"].get("drops", {}).get("max_fps", 0) for msg in stats
                  if "thinned" in msg["cameras"])
    dropped = sum(msg["cameras"]["thinned"]["dropped"] for msg in stats if "thinned" in msg["cameras"])
    assert skipped == dropped == THINNED_FRAMES - len(thinned)

    # clean exit: nothing left in /dev/shm, no child process left running
    assert shm_segments(proc.pid) == []
    assert children, "the daemon had child processes"
    # (multiprocessing's resource tracker exits by itself once the last process holding its pipe
    # is gone: give it a moment)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and any(alive(*c) for c in children.items()):
        time.sleep(0.1)
    assert not [pid for pid, start in children.items() if alive(pid, start)]
