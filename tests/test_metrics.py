"""Prometheus exposition: totals from stats messages, ring status, the HTTP endpoint."""

from __future__ import annotations

import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest

from streamdet.metrics import CameraTotals, MetricsServer, render_metrics
from streamdet.supervisor import local_endpoint


def _stats(published: int, dropped: int) -> dict:
    return {"cameras": {"door": {"fps": 12.5, "published": published, "dropped": dropped, "state": "streaming",
                                 "latency_ms": {"p50": 40.0, "p95": 90.0, "max": 120.0}}}}


def test_totals_accumulate_intervals() -> None:
    t = CameraTotals()
    t.add(_stats(10, 1))
    t.add(_stats(7, 2))
    snap = t.snapshot()["door"]
    assert snap["published"] == 17 and snap["dropped"] == 3 and snap["fps"] == 12.5


def test_render_metrics() -> None:
    t = CameraTotals()
    t.add(_stats(10, 1))
    ring = SimpleNamespace(state="backoff", frames_decoded=1234, frames_skipped=5, reconnects=3, frames_behind=4,
                           frames_converted=0, decode_ns=2_500_000_000)
    text = render_metrics({"door": ring}, t.snapshot(), {"decoder-door": 2})
    lines = set(text.splitlines())
    assert 'streamdet_camera_up{camera="door"} 0' in lines
    assert 'streamdet_camera_frames_decoded_total{camera="door"} 1234' in lines
    assert 'streamdet_camera_reconnects_total{camera="door"} 3' in lines
    assert 'streamdet_camera_published_total{camera="door"} 10' in lines
    assert 'streamdet_camera_latency_ms{camera="door",quantile="0.95"} 90' in lines
    assert 'streamdet_child_restarts_total{child="decoder-door"} 2' in lines
    assert "# TYPE streamdet_camera_fps gauge" in lines


def test_server_serves_metrics_only() -> None:
    server = MetricsServer("127.0.0.1", 0, lambda: "streamdet_up 1\n").start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as r:
            assert r.status == 200 and r.read() == b"streamdet_up 1\n"
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/other", timeout=5)
        assert exc.value.code == 404
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("bound", "local"),
    [("tcp://*:5555", "tcp://127.0.0.1:5555"), ("tcp://0.0.0.0:7", "tcp://127.0.0.1:7"),
     ("tcp://127.0.0.1:5555", "tcp://127.0.0.1:5555"), ("ipc:///run/x.sock", "ipc:///run/x.sock")],
)
def test_local_endpoint(bound: str, local: str) -> None:
    assert local_endpoint(bound) == local


def test_drops_by_reason_and_worker_stages() -> None:
    t = CameraTotals()
    for overwritten in (2, 3):
        msg = _stats(10, overwritten + 1)
        msg["cameras"]["door"]["drops"] = {"overwritten": overwritten, "max_fps": 1, "behind": 0}
        msg["source"] = "worker-cpu"
        msg["worker"] = {"batch_size_mean": 3.5, "stage_ms": {"preprocess": 4.25, "inference": 80.0}}
        t.add(msg)
    ring = SimpleNamespace(state="streaming", frames_decoded=100, frames_skipped=7, reconnects=0, frames_behind=4,
                           frames_converted=9, decode_ns=2_500_000_000)
    lines = set(render_metrics({"door": ring}, t.snapshot(), {}, t.workers()).splitlines())
    assert 'streamdet_camera_drops_total{camera="door",reason="overwritten"} 5' in lines
    assert 'streamdet_camera_drops_total{camera="door",reason="max_fps"} 7' in lines
    assert 'streamdet_camera_drops_total{camera="door",reason="behind"} 4' in lines
    assert 'streamdet_camera_frames_converted_total{camera="door"} 9' in lines
    assert 'streamdet_camera_decode_seconds_total{camera="door"} 2.5' in lines
    assert 'streamdet_worker_stage_ms{worker="worker-cpu",stage="preprocess"} 4.25' in lines
    assert 'streamdet_worker_batch_size{worker="worker-cpu"} 3.5' in lines
