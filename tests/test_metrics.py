"""Prometheus metrics: stats messages and ring status in, exposition scraped over HTTP out."""

from __future__ import annotations

import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamdet.metrics import ChildInfo, DaemonMetrics
from streamdet.pipeline.ring.layout import RingStatus
from streamdet.pipeline.worker.stats import CameraStats, StageTimer
from streamdet.supervisor import local_endpoint
from streamdet.wire import stats_message

SECRET_URL = "rtsp://admin:hunter2@10.0.0.7/stream1"


def _ring(state: str = "streaming", **counters: int) -> RingStatus:
    base = dict(camera="door", slots=4, slot_bytes=1, latest_seq=0, message_seq=0, heartbeat=0.0, state=state,
                state_since=0.0, decoder_pid=1, reconnects=0, frames_decoded=0, frames_skipped=0,
                last_error=f"cannot open {SECRET_URL}", error_time=0.0, created=0.0)
    return RingStatus(**{**base, **counters})


def _stats(published: int = 10, overwritten: int = 2, latencies: tuple[float, ...] = (20.0, 40.0, 400.0),
           worker: dict | None = None, cam: str = "door", unsent: int = 0) -> dict:
    """A stats message as a worker builds it (the worker's own summary code)."""
    s = CameraStats(published=published, overwritten=overwritten, latencies_ms=list(latencies), unsent=unsent)
    entry = s.summary(1.0, {"decoded": 0, "skipped": 1, "behind": 0, "decode_ns": 0})
    entry.update(state="streaming", reconnects=0)
    return stats_message(source="worker-cpu", interval_s=1.0, cameras={cam: entry}, worker=worker)


def _worker(*batches: int, **extra: object) -> dict:
    t = StageTimer()
    for frames in batches:
        t.add("inference", 0.05, frames=frames)
    return {"name": "worker-cpu", "device": "cpu", **t.summary(), **extra}


def _scrape(m: DaemonMetrics) -> tuple[str, dict[tuple[str, frozenset], float], set[str]]:
    """The text, every sample by (name, labels), and the families' names (over HTTP)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{m.port}/metrics", timeout=5) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    families = list(text_string_to_metric_families(text))
    samples = {(s.name, frozenset(s.labels.items())): s.value for f in families for s in f.samples}
    return text, samples, {f.name for f in families}


def _v(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


@pytest.fixture
def metrics():
    rings = {"door": _ring("backoff", frames_decoded=1234, frames_skipped=5, reconnects=3, frames_behind=4,
                           frames_converted=9, decode_ns=2_500_000_000)}
    children = {"decoder-door": ChildInfo(restarts=2), "worker-cpu": ChildInfo(restarts=1, phase="serving")}
    m = DaemonMetrics(rings=lambda: rings, children=lambda: children, rejected=lambda: 7).start("127.0.0.1", 0)
    yield m
    m.stop()


def test_scrape_has_exact_figures_from_rings_stats_and_children(metrics: DaemonMetrics) -> None:
    metrics.observe_stats(_stats(published=10, overwritten=2, worker=_worker(2, 1), unsent=1))
    metrics.observe_stats(_stats(published=7, overwritten=3, worker=_worker(2, queue_depth={"prepared": 1})))
    _, s, _ = _scrape(metrics)
    cam = {"camera": "door"}
    assert _v(s, "streamdet_camera_up", **cam) == 0
    assert _v(s, "streamdet_camera_state", camera="door", state="backoff") == 1
    assert _v(s, "streamdet_camera_state", camera="door", state="streaming") == 0
    assert _v(s, "streamdet_camera_frames_decoded_total", **cam) == 1234
    assert _v(s, "streamdet_camera_reconnects_total", **cam) == 3
    assert _v(s, "streamdet_camera_frames_converted_total", **cam) == 9
    assert _v(s, "streamdet_camera_decode_seconds_total", **cam) == 2.5
    assert _v(s, "streamdet_camera_frames_inferred_total", **cam) == 6  # 3 latencies per message
    assert _v(s, "streamdet_camera_published_total", **cam) == 17
    assert _v(s, "streamdet_camera_dropped_total", **cam) == (2 + 1 + 1) + (3 + 1)
    assert _v(s, "streamdet_camera_drops_total", camera="door", reason="overwritten") == 5
    assert _v(s, "streamdet_camera_drops_total", camera="door", reason="unsent") == 1
    assert _v(s, "streamdet_camera_drops_total", camera="door", reason="max_fps") == 5  # the ring's total
    assert _v(s, "streamdet_camera_drops_total", camera="door", reason="behind") == 4
    assert _v(s, "streamdet_camera_fps", **cam) == 7.0  # the last interval
    assert _v(s, "streamdet_worker_batch_size_count", worker="worker-cpu") == 3
    assert _v(s, "streamdet_worker_batch_size_sum", worker="worker-cpu") == 5
    assert _v(s, "streamdet_worker_batch_size_bucket", worker="worker-cpu", le="1.0") == 1
    assert _v(s, "streamdet_worker_batch_size_bucket", worker="worker-cpu", le="2.0") == 3
    assert _v(s, "streamdet_worker_stage_seconds_total", worker="worker-cpu", stage="inference") == pytest.approx(0.15)
    assert _v(s, "streamdet_worker_queue_depth", worker="worker-cpu", queue="prepared") == 1
    assert _v(s, "streamdet_worker_phase", worker="worker-cpu", phase="serving") == 1
    assert _v(s, "streamdet_worker_phase", worker="worker-cpu", phase="loading") == 0
    assert _v(s, "streamdet_child_restarts_total", child="decoder-door") == 2
    assert _v(s, "streamdet_publish_rejected_handshakes_total") == 7


def test_tracked_only_torn_and_the_feed(metrics: DaemonMetrics) -> None:
    s = CameraStats(published=5, latencies_ms=[10.0] * 5, tracked_only=3, torn=2)
    entry = s.summary(1.0, {"decoded": 0, "skipped": 0, "behind": 0, "decode_ns": 0})
    assert (entry["inferred"], entry["tracked_only"], entry["drops"]["torn"]) == (2, 3, 2)
    entry.update(state="streaming", reconnects=0)
    feed = {"preprocess": "cuda", "pinned": False, "graphs": "eager", "torn": 2}
    for _ in range(2):
        metrics.observe_stats(stats_message(source="worker-cpu", interval_s=1.0, cameras={"door": entry},
                                            worker=_worker(2, **feed)))
    _, samples, _ = _scrape(metrics)
    assert _v(samples, "streamdet_camera_frames_inferred_total", camera="door") == 4
    assert _v(samples, "streamdet_camera_frames_tracked_only_total", camera="door") == 6
    assert _v(samples, "streamdet_camera_drops_total", camera="door", reason="torn") == 4
    assert _v(samples, "streamdet_worker_feed_info", worker="worker-cpu", preprocess="cuda", pinned="no",
              graphs="eager") == 1


def test_latency_histogram_accumulates_across_messages(metrics: DaemonMetrics) -> None:
    metrics.observe_stats(_stats(latencies=(20.0, 40.0, 400.0)))
    metrics.observe_stats(_stats(latencies=(5.0, 3000.0)))
    _, s, _ = _scrape(metrics)

    def bucket(le: str) -> float:
        return _v(s, "streamdet_camera_latency_seconds_bucket", camera="door", le=le)

    assert [bucket(le) for le in ("0.01", "0.025", "0.05", "0.5", "2.0", "+Inf")] == [1, 2, 3, 4, 4, 5]
    assert _v(s, "streamdet_camera_latency_seconds_count", camera="door") == 5
    assert _v(s, "streamdet_camera_latency_seconds_sum", camera="door") == pytest.approx(3.465)


def test_output_names_cameras_but_never_urls_or_errors(metrics: DaemonMetrics) -> None:
    msg = _stats()
    msg["cameras"]["door"]["url"] = SECRET_URL  # a field the collector does not know is not exported
    metrics.observe_stats(msg)
    text, _, _ = _scrape(metrics)
    assert 'camera="door"' in text
    assert "rtsp://" not in text and "hunter2" not in text and "cannot open" not in text


def test_gpu_memory_only_from_cuda_workers(metrics: DaemonMetrics) -> None:
    metrics.observe_stats(_stats(worker=_worker(1)))  # a CPU worker sends none
    _, _, names = _scrape(metrics)
    assert "streamdet_worker_gpu_memory" not in names and "streamdet_worker_gpu_memory_bytes" not in names
    metrics.observe_stats(_stats(worker=_worker(1, gpu_memory_bytes={"allocated": 1024, "reserved": 4096})))
    _, s, _ = _scrape(metrics)
    assert _v(s, "streamdet_worker_gpu_memory_bytes", worker="worker-cpu", kind="reserved") == 4096


def test_phase_from_the_stats_message_when_the_supervisor_has_none() -> None:
    with DaemonMetrics(children=lambda: {"worker-cpu": ChildInfo(restarts=0)}).start("127.0.0.1", 0) as m:
        m.observe_stats(_stats(worker=_worker(1, phase="warming_up")))
        _, s, _ = _scrape(m)
        assert _v(s, "streamdet_worker_phase", worker="worker-cpu", phase="warming_up") == 1
        m.observe_stats(_stats(worker=_worker(1, phase="paused")))  # an unknown phase is exported as is
        _, s, _ = _scrape(m)
        assert _v(s, "streamdet_worker_phase", worker="worker-cpu", phase="paused") == 1
        assert _v(s, "streamdet_worker_phase", worker="worker-cpu", phase="serving") == 0


def test_children_as_dicts_with_liveness() -> None:
    children = {"worker-cpu": {"kind": "worker", "restarts": 3, "phase": "loading", "alive": True, "parked": False},
                "decoder-door": {"kind": "decoder", "restarts": 0, "phase": None, "alive": False, "parked": True}}
    with DaemonMetrics(children=lambda: children).start("127.0.0.1", 0) as m:
        m.observe_stats(_stats(worker=_worker(1, phase="serving")))  # an older message: the supervisor knows better
        _, s, _ = _scrape(m)
    assert _v(s, "streamdet_child_restarts_total", child="worker-cpu") == 3
    assert _v(s, "streamdet_child_up", child="worker-cpu") == 1
    assert _v(s, "streamdet_child_up", child="decoder-door") == 0
    assert _v(s, "streamdet_child_parked", child="decoder-door") == 1
    assert _v(s, "streamdet_worker_phase", worker="worker-cpu", phase="loading") == 1
    assert _v(s, "streamdet_worker_phase", worker="worker-cpu", phase="serving") == 0
    assert ("streamdet_worker_phase", frozenset({("worker", "decoder-door"), ("phase", "loading")})) not in s


def test_a_bad_camera_or_a_failing_source_spoils_nothing_else() -> None:
    def broken_rings() -> dict:
        raise OSError("ring closed")

    with DaemonMetrics(rings=broken_rings).start("127.0.0.1", 0) as m:
        msg = _stats()
        good = dict(msg["cameras"]["door"])
        msg["cameras"] = {"door": {**good, "published": -1}, "yard": good}
        msg["cameras"]["door"]["latency_hist_ms"] = {"le": [1, 2], "counts": [3]}
        m.observe_stats(msg)
        m.observe_stats({"type": "detections", "camera": "yard"})  # not a stats message: ignored
        _, s, names = _scrape(m)
    assert _v(s, "streamdet_camera_published_total", camera="yard") == 10
    assert ("streamdet_camera_published_total", frozenset({("camera", "door")})) not in s
    assert "streamdet_camera_frames_decoded" not in names  # the ring source failed, the rest is served


def test_server_binds_the_host_and_stops() -> None:
    m = DaemonMetrics().start("127.0.0.1", 0)
    port = m.port
    assert m._server.server_address[0] == "127.0.0.1"
    with pytest.raises(RuntimeError):
        m.start("127.0.0.1", 0)
    m.stop()
    m.stop()  # twice is fine
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
    with pytest.raises(RuntimeError):
        _ = m.port


def test_a_port_in_use_is_a_clear_error() -> None:
    with DaemonMetrics().start("127.0.0.1", 0) as first, pytest.raises(OSError, match="metrics: cannot listen on"):
        DaemonMetrics().start("127.0.0.1", first.port)


def test_ring_status_without_stats_yet() -> None:
    with DaemonMetrics(rings=lambda: {"door": SimpleNamespace(**vars(_ring("connecting")))}).start() as m:
        _, s, names = _scrape(m)
    assert _v(s, "streamdet_camera_state", camera="door", state="connecting") == 1
    assert "streamdet_camera_published" not in names and "streamdet_camera_latency_seconds" not in names


@pytest.mark.parametrize(
    ("bound", "local"),
    [("tcp://*:5555", "tcp://127.0.0.1:5555"), ("tcp://0.0.0.0:7", "tcp://127.0.0.1:7"),
     ("tcp://127.0.0.1:5555", "tcp://127.0.0.1:5555"), ("ipc:///run/x.sock", "ipc:///run/x.sock")],
)
def test_local_endpoint(bound: str, local: str) -> None:
    assert local_endpoint(bound) == local
