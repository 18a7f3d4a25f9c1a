"""Subscriber: exact camera filtering, stats, invalid messages skipped; subscribe_main output; CURVE keys.

A background thread publishes continuously (a PUB socket cannot know when a subscriber has
joined), and every wait is bounded by a deadline. Sockets bind 127.0.0.1 only.
"""

from __future__ import annotations

import io
import json
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from streamdet import wire
from streamdet.client import KeyFileError, Subscriber, subscribe_main
from streamdet.errors import StreamdetError, WireError
from tests.helpers.curve import make_keys

DEADLINE_S = 10.0
CAMERAS = ("cam1", "cam10", "cam2")


def _detections(camera: str, seq: int) -> list[bytes]:
    return wire.encode(
        wire.detection_message(
            camera=camera,
            seq=seq,
            frame=seq,
            pts=seq / 25,
            ts_capture=time.time(),
            width=320,
            height=240,
            detections=[{"box": [1, 2, 3, 4], "score": 0.9, "class_id": 1, "label": "bicycle"}],
        )
    )


def _stats(seq: int) -> list[bytes]:
    cam = {"fps": 25.0, "published": seq, "dropped": 0, "latency_ms": {"p50": 1, "p95": 2, "max": 3}}
    return wire.encode(
        wire.stats_message(
            source="test", interval_s=1.0, cameras={"cam1": {**cam, "state": "running", "reconnects": 0}}
        )
    )


def default_frames(seq: int) -> list[list[bytes]]:
    """One round of messages: each camera once, plus a stats message."""
    return [*(_detections(c, seq) for c in CAMERAS), _stats(seq)]


class FeedThread:
    """Publishes ``make(seq)`` rounds every few ms on a PUB bound to 127.0.0.1 until stopped."""

    def __init__(self, make: Callable[[int], list[list[bytes]]] = default_frames) -> None:
        self._make = make
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.PUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind("tcp://127.0.0.1:*")
        self.endpoint = self._sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)  # the socket moves to it

    def _run(self) -> None:
        seq = 0
        deadline = time.monotonic() + 3 * DEADLINE_S
        while not self._stop.is_set() and time.monotonic() < deadline:
            for frames in self._make(seq):
                self._sock.send_multipart(frames)
            seq += 1
            self._stop.wait(0.005)
        self._sock.close(linger=0)

    def __enter__(self) -> FeedThread:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(DEADLINE_S)
        self._ctx.term()


@pytest.fixture
def feed() -> Iterator[FeedThread]:
    with FeedThread() as f:
        yield f


def collect(sub: Subscriber, until: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
    """Receive until ``until(messages)`` holds or the deadline passes."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + DEADLINE_S
    while not until(got) and time.monotonic() < deadline:
        msg = sub.recv(timeout=0.1)
        if msg is not None:
            got.append(msg)
    return got


def kinds(msgs: list[dict[str, Any]]) -> set[str]:
    return {m["camera"] if m["type"] == "detections" else "stats" for m in msgs}


def test_client_never_imports_torch() -> None:
    code = (
        "import sys, streamdet.client, streamdet.transport.keys\n"
        "from streamdet.client import Subscriber, subscribe_main\n"
        "heavy = ('torch', 'numpy', 'cv2', 'av', 'pydantic', 'yaml')\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in heavy)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_one_camera_is_exact(feed: FeedThread) -> None:
    with Subscriber(feed.endpoint, cameras=["cam1"]) as sub:
        got = collect(sub, lambda m: len(m) >= 20)
    assert len(got) >= 20
    assert kinds(got) == {"cam1"}  # never cam10, never stats


def test_several_cameras(feed: FeedThread) -> None:
    with Subscriber(feed.endpoint, cameras=("cam10", "cam2", "cam10")) as sub:
        assert sub.topics == (b"det/cam10/", b"det/cam2/")
        got = collect(sub, lambda m: len(m) >= 20 and kinds(m) == {"cam10", "cam2"})
    assert kinds(got) == {"cam10", "cam2"}


def test_all_cameras_without_stats(feed: FeedThread) -> None:
    with Subscriber(feed.endpoint) as sub:
        got = collect(sub, lambda m: len(m) >= 20 and kinds(m) == set(CAMERAS))
    assert kinds(got) == set(CAMERAS)


def test_stats_only_and_all_with_stats(feed: FeedThread) -> None:
    with Subscriber(feed.endpoint, cameras=[], stats=True) as sub:
        got = collect(sub, lambda m: len(m) >= 3)
    assert len(got) >= 3 and kinds(got) == {"stats"}
    assert got[0]["source"] == "test" and got[0]["cameras"]["cam1"]["state"] == "running"
    with Subscriber(feed.endpoint, stats=True) as sub:
        got = collect(sub, lambda m: kinds(m) == {*CAMERAS, "stats"})
    assert kinds(got) == {*CAMERAS, "stats"}


def test_iteration_and_seq_gaps() -> None:
    def gappy(seq: int) -> list[list[bytes]]:
        return [_detections("cam1", 2 * seq)]  # every other seq missing: 1 lost per message

    with FeedThread(gappy) as feed, Subscriber(feed.endpoint, cameras=["cam1"]) as sub:
        got = []
        for msg in sub:  # blocks until a message arrives; the feed thread keeps publishing
            got.append(msg)
            if len(got) == 5:
                break
        assert [m["seq"] % 2 for m in got] == [0] * 5
        assert sub.received == 5
        assert sub.lost == (got[-1]["seq"] - got[0]["seq"]) // 2 >= 4


def test_invalid_messages_are_skipped_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    good = _detections("cam1", 0)
    v2 = json.loads(good[1])
    v2["v"] = 2

    def noisy(seq: int) -> list[list[bytes]]:
        return [
            [b"det/cam1/", b"{not json"],
            [b"det/cam1/", json.dumps(v2).encode()],
            [b"det/cam1/", good[1], b"extra frame"],
            [b"det/cam1/x", good[1]],
            [b"det/cam1/"],
            _detections("cam1", seq),
        ]

    caplog.set_level(logging.WARNING, logger="streamdet.client.subscriber")
    with FeedThread(noisy) as feed, Subscriber(feed.endpoint, cameras=["cam1"]) as sub:
        got = collect(sub, lambda m: len(m) >= 3 and sub.invalid >= 5)
        assert len(got) >= 3 and all(m["camera"] == "cam1" for m in got)
        assert sub.invalid >= 5 and sub.received == len(got)
    text = caplog.text
    assert "skipped invalid message" in text
    assert "unsupported wire version 2" in text and "not JSON" in text and "2 frames" in text


def test_recv_timeout_without_publisher() -> None:
    with Subscriber("tcp://127.0.0.1:9") as sub:  # nothing listens on the discard port
        assert sub.recv(timeout=0) is None
        assert sub.recv(timeout=0.05) is None
    assert sub.closed
    with pytest.raises(StreamdetError, match="closed"):
        sub.recv(0)
    assert list(sub) == []  # a closed subscriber iterates nothing


def test_constructor_errors() -> None:
    with pytest.raises(WireError, match="camera id"):
        Subscriber("tcp://127.0.0.1:5555", cameras=["cam/1"])
    with pytest.raises(StreamdetError, match="nothing to subscribe"):
        Subscriber("tcp://127.0.0.1:5555", cameras=[])
    with pytest.raises(StreamdetError, match="cannot connect to 'bogus://x'"):
        Subscriber("bogus://x")
    with pytest.raises(StreamdetError, match="out of range"):
        Subscriber("tcp://127.0.0.1:70000")
    sub = Subscriber("tcp://127.0.0.1:5555", cameras="cam1")  # a lone id is one camera, not 4 letters
    assert sub.topics == (b"det/cam1/",)
    sub.close()


def test_subscribe_main_prints_count_json_lines(feed: FeedThread) -> None:
    out = io.StringIO()
    assert subscribe_main(feed.endpoint, ["cam2"], stats=True, count=8, timeout=DEADLINE_S, out=out) == 0
    lines = out.getvalue().splitlines()
    assert len(lines) == 8
    msgs = [json.loads(line) for line in lines]
    assert kinds(msgs) <= {"cam2", "stats"}
    assert all(m["v"] == 1 for m in msgs)


def test_subscribe_main_timeout_without_messages(capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    assert subscribe_main("tcp://127.0.0.1:9", None, count=1, timeout=0.05, out=out) == 1
    assert out.getvalue() == ""
    err = capsys.readouterr().err
    assert "no message within 0.05 s" in err and "tcp://127.0.0.1:9" in err


def test_subscribe_main_broken_pipe(feed: FeedThread) -> None:
    class ClosedPipe(io.StringIO):
        def write(self, s: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    assert subscribe_main(feed.endpoint, None, timeout=DEADLINE_S, out=ClosedPipe()) == 0


def test_subscribe_main_piped_into_head(feed: FeedThread) -> None:
    """``streamdet subscribe | head -n 1``: exits 0 with no traceback once the reader is gone."""
    code = f"import sys; from streamdet.client import subscribe_main; sys.exit(subscribe_main({feed.endpoint!r}, None))"
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        try:
            assert proc.stdout is not None and proc.stderr is not None
            first = proc.stdout.readline()
            assert json.loads(first)["type"] == "detections"
            proc.stdout.close()  # like head exiting
            rc = proc.wait(timeout=DEADLINE_S)
            err = proc.stderr.read().decode()
        finally:
            proc.kill()
            proc.wait()
    assert rc == 0, err
    assert err == ""


def test_subscribe_main_ctrl_c_exits_0() -> None:
    code = (
        "import sys\n"
        "from streamdet.client import subscribe_main\n"
        "print('ready', file=sys.stderr, flush=True)\n"
        "sys.exit(subscribe_main('tcp://127.0.0.1:9', None))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None
        assert proc.stderr.readline() == b"ready\n"
        time.sleep(0.3)  # let it reach the blocking wait
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=DEADLINE_S)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, err.decode()
    assert out == b"" and err == b""


def _summary_round(seq: int) -> list[list[bytes]]:
    """Detections of cam1 and a stats message covering cam1 and cam2 (cam2 has had a reconnect)."""
    cams = {"cam1": {"fps": 25.0, "published": 25, "objects": 50, "dropped": 1,
                     "drops": {"overwritten": 1, "max_fps": 0, "behind": 0, "unsent": 0},
                     "latency_ms": {"p50": 40.0, "p95": 50.0, "p99": 60.0, "max": 70.0},
                     "state": "streaming", "reconnects": 0},
            "cam2": {"fps": 0.0, "published": 0, "objects": 0, "dropped": 0,
                     "latency_ms": {"p50": None, "p95": None, "p99": None, "max": None},
                     "state": "backoff", "reconnects": 1, "last_error": "connection refused", "last_error_ts": 1.0}}
    return [_detections("cam1", seq), wire.encode(wire.stats_message(source="test", interval_s=1.0, cameras=cams))]


def test_subscribe_summary_prints_one_line_per_camera_per_stats_message(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamdet_client import subscriber  # where subscribe_main looks Subscriber up

    topics: list[tuple[bytes, ...]] = []

    class Recording(Subscriber):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            topics.append(self.topics)

    monkeypatch.setattr(subscriber, "Subscriber", Recording)
    with FeedThread(_summary_round) as feed:
        out = io.StringIO()
        assert subscribe_main(feed.endpoint, None, count=2, timeout=DEADLINE_S, out=out, summary=True) == 0
        lines = out.getvalue().splitlines()
        assert [line.split()[1] for line in lines] == ["cam1:", "cam2:", "cam1:", "cam2:"]  # 2 messages, 2 cameras
        assert lines[0].endswith(" cam1: 25.0 fps, latency p50 40 ms p99 60 ms, 2.00 objects/frame, "
                                 "1 dropped (overwritten 1), streaming")
        assert lines[1].endswith(", backoff (last error at " + time.strftime("%H:%M:%S", time.localtime(1.0))
                                 + ": connection refused)")
        out = io.StringIO()
        assert subscribe_main(feed.endpoint, ["cam2"], stats=True, count=3, timeout=DEADLINE_S, out=out,
                              summary=True) == 0
        assert [line.split()[1] for line in out.getvalue().splitlines()] == ["cam2:"] * 3
    assert topics == [(wire.STATS_TOPIC,), (wire.STATS_TOPIC,)]  # the summary never pulls the detection stream


def test_subscribe_summary_for_a_camera_no_stats_cover(capsys: pytest.CaptureFixture[str]) -> None:
    with FeedThread(_summary_round) as feed:
        out = io.StringIO()
        assert subscribe_main(feed.endpoint, ["cam3"], count=1, timeout=0.5, out=out, summary=True) == 1
    assert out.getvalue() == ""
    err = capsys.readouterr().err
    assert "no stats for camera(s) cam3 within 0.5 s" in err and "covered only other cameras" in err
    with pytest.raises(WireError, match="camera id"):
        subscribe_main("tcp://127.0.0.1:9", ["cam/3"], summary=True)


def test_cli_subscribe_summary(capsys: pytest.CaptureFixture[str]) -> None:
    from streamdet import cli

    with FeedThread(_summary_round) as feed:
        assert cli.main(["subscribe", "--endpoint", feed.endpoint, "--summary", "--camera", "cam1", "--count", "2",
                         "--timeout", str(DEADLINE_S)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(" cam1: 25.0 fps, " in line for line in lines)


# -- CurveZMQ ---------------------------------------------------------------------------------------------
def test_curve_argument_errors(tmp_path: Path) -> None:
    keys = make_keys(tmp_path)
    with pytest.raises(StreamdetError, match="server_key without client_key"):
        Subscriber("tcp://127.0.0.1:5555", server_key=keys.server_public)
    with pytest.raises(StreamdetError, match="client_key without server_key"):
        Subscriber("tcp://127.0.0.1:5555", client_key=keys.alice_secret)
    with pytest.raises(KeyFileError, match=r"server key .*absent.key: no such file"):
        Subscriber("tcp://127.0.0.1:5555", server_key=tmp_path / "absent.key", client_key=keys.alice_secret)
    with pytest.raises(KeyFileError, match=r"client key .*alice.key: has no secret key"):
        Subscriber("tcp://127.0.0.1:5555", server_key=keys.server_public, client_key=keys.alice_public)
    with Subscriber("tcp://127.0.0.1:5555", server_key=keys.server_public, client_key=keys.alice_secret) as sub:
        assert sub.curve


def test_cli_subscribe_needs_both_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from streamdet import cli

    keys = make_keys(tmp_path)
    assert cli.main(["subscribe", "--server-key", str(keys.server_public)]) == 2
    assert "--server-key and --client-key go together" in capsys.readouterr().err
    assert cli.main(["subscribe", "--server-key", str(keys.server_public), "--client-key",
                     str(tmp_path / "nope.key_secret")]) == 1
    err = capsys.readouterr().err
    assert "nope.key_secret: no such file" in err
    for secret in keys.secrets():
        assert secret not in err


def test_subscribe_main_over_curve(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   caplog: pytest.LogCaptureFixture) -> None:
    from streamdet.pipeline.worker.publish import Publisher
    from streamdet.transport.keys import load_server_keys
    from streamdet.transport.proxy import PublishProxy

    caplog.set_level(logging.DEBUG)
    keys = make_keys(tmp_path)
    internal = f"ipc://{tmp_path}/i.sock"
    server = load_server_keys(keys.server_secret, keys.authorized_dir)
    with PublishProxy(internal, "tcp://127.0.0.1:*", curve=server) as proxy, Publisher(internal) as pub:
        assert proxy.bound_endpoint is not None
        stop = threading.Event()

        def feed() -> None:
            seq = 0
            while not stop.is_set():
                pub.send(wire.decode(_detections("cam1", seq)))
                seq += 1
                stop.wait(0.005)

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        try:
            out = io.StringIO()
            rc = subscribe_main(proxy.bound_endpoint, ["cam1"], count=3, timeout=DEADLINE_S, out=out,
                                server_key=str(keys.server_public), client_key=str(keys.alice_secret))
            assert rc == 0 and len(out.getvalue().splitlines()) == 3
            # a stranger times out, and the hint says what to check
            rc = subscribe_main(proxy.bound_endpoint, ["cam1"], count=1, timeout=0.5, out=io.StringIO(),
                                server_key=str(keys.server_public), client_key=str(keys.mallory_secret))
            assert rc == 1
            assert "authorized_keys" in capsys.readouterr().err
        finally:
            stop.set()
            feeder.join(DEADLINE_S)
    for secret in keys.secrets():
        assert secret not in caplog.text
