"""Prometheus text exposition of the daemon's health, served by the supervisor.

Sources: the rings' headers (decoder state and counters, read directly from shared memory), the
workers' stats messages (fps, drops, latency per camera; received on the public endpoint like
any subscriber) and the supervisor's restart counts. Labels carry camera ids only, never URLs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger("streamdet.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class CameraTotals:
    """Running totals per camera, accumulated from per-interval stats messages (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._published: dict[str, int] = {}
        self._dropped: dict[str, int] = {}
        self._overwritten: dict[str, int] = {}
        self._latest: dict[str, dict] = {}
        self._workers: dict[str, dict] = {}

    def add(self, stats_msg: Mapping) -> None:
        with self._lock:
            for cam, s in stats_msg.get("cameras", {}).items():
                self._published[cam] = self._published.get(cam, 0) + int(s.get("published", 0))
                self._dropped[cam] = self._dropped.get(cam, 0) + int(s.get("dropped", 0))
                overwritten = (s.get("drops") or {}).get("overwritten", 0)
                self._overwritten[cam] = self._overwritten.get(cam, 0) + int(overwritten or 0)
                self._latest[cam] = dict(s)
            worker = stats_msg.get("worker")
            if isinstance(worker, Mapping):
                self._workers[str(stats_msg.get("source", worker.get("name", "?")))] = dict(worker)

    def workers(self) -> dict[str, dict]:
        """The latest ``worker`` figures of each publisher (batches, per-stage times)."""
        with self._lock:
            return {name: dict(w) for name, w in self._workers.items()}

    def snapshot(self) -> dict[str, dict]:
        with self._lock:
            return {
                cam: {**self._latest[cam], "published": self._published[cam], "dropped": self._dropped[cam],
                      "overwritten_total": self._overwritten[cam]}
                for cam in self._latest
            }


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class _Family:
    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name, self.kind, self.help = name, kind, help_text
        self.samples: list[str] = []

    def add(self, value: float | int | None, **labels: str) -> None:
        if value is None:
            return
        lab = ",".join(f'{k}="{_label(str(v))}"' for k, v in labels.items())
        self.samples.append(f"{self.name}{{{lab}}} {float(value):g}" if lab else f"{self.name} {float(value):g}")

    def render(self) -> str:
        return f"# HELP {self.name} {self.help}\n# TYPE {self.name} {self.kind}\n" + "".join(
            s + "\n" for s in self.samples
        )


def render_metrics(rings: Mapping[str, Any], cameras: Mapping[str, dict], restarts: Mapping[str, int],
                   workers: Mapping[str, dict] | None = None) -> str:
    """The exposition text: ``rings`` maps camera -> RingStatus, ``cameras`` is CameraTotals.snapshot(),
    ``workers`` is CameraTotals.workers()."""
    up = _Family("streamdet_camera_up", "gauge", "1 while the camera's decoder is streaming")
    decoded = _Family("streamdet_camera_frames_decoded_total", "counter", "Frames decoded from the source")
    skipped = _Family("streamdet_camera_frames_skipped_total", "counter", "Frames skipped by the max_fps cap")
    reconnects = _Family("streamdet_camera_reconnects_total", "counter", "Times the source was reopened")
    published = _Family("streamdet_camera_published_total", "counter", "Detection messages published")
    behind = _Family("streamdet_camera_frames_behind_total", "counter",
                     "Frames of a paced file decoded but not used because the decoder was behind schedule")
    converted = _Family("streamdet_camera_frames_converted_total", "counter",
                        "Frames whose pixel format or size the decoder had to convert")
    decode_s = _Family("streamdet_camera_decode_seconds_total", "counter", "Time decoders spent decoding and copying")
    dropped = _Family("streamdet_camera_dropped_total", "counter", "Frames not published, for any reason")
    drops = _Family("streamdet_camera_drops_total", "counter",
                    "Frames not published by reason: overwritten (worker behind), max_fps, behind (decoder behind)")
    stage = _Family("streamdet_worker_stage_ms", "gauge", "Mean milliseconds per batch in each stage, last interval")
    batch = _Family("streamdet_worker_batch_size", "gauge", "Mean frames per batch over the last stats interval")
    fps = _Family("streamdet_camera_fps", "gauge", "Messages per second over the last stats interval")
    latency = _Family("streamdet_camera_latency_ms", "gauge", "Capture-to-publish latency, last stats interval")
    child = _Family("streamdet_child_restarts_total", "counter", "Restarts of a supervised child process")
    for cam, status in rings.items():
        up.add(1 if status.state == "streaming" else 0, camera=cam)
        decoded.add(status.frames_decoded, camera=cam)
        skipped.add(status.frames_skipped, camera=cam)
        reconnects.add(status.reconnects, camera=cam)
        behind.add(status.frames_behind, camera=cam)
        converted.add(status.frames_converted, camera=cam)
        decode_s.add(status.decode_ns / 1e9, camera=cam)
        drops.add(status.frames_skipped, camera=cam, reason="max_fps")
        drops.add(status.frames_behind, camera=cam, reason="behind")
    for cam, s in cameras.items():
        published.add(s.get("published"), camera=cam)
        dropped.add(s.get("dropped"), camera=cam)
        drops.add(s.get("overwritten_total"), camera=cam, reason="overwritten")
        fps.add(s.get("fps"), camera=cam)
        for q, key in (("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99"), ("1", "max")):
            latency.add((s.get("latency_ms") or {}).get(key), camera=cam, quantile=q)
    for name, n in restarts.items():
        child.add(n, child=name)
    for name, w in (workers or {}).items():
        for key, ms in (w.get("stage_ms") or {}).items():
            stage.add(ms, worker=name, stage=key)
        batch.add(w.get("batch_size_mean"), worker=name)
    families = (up, decoded, skipped, behind, converted, decode_s, reconnects, published, dropped, drops, fps,
                latency, stage, batch, child)
    return "".join(f.render() for f in families)


class MetricsServer:
    """HTTP server on ``host:port`` answering ``GET /metrics`` with ``render()``; runs in a thread."""

    def __init__(self, host: str, port: int, render: Callable[[], str]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics is served")
                    return
                body = render().encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:  # scrapes are not events worth a log line
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="streamdet-metrics", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(2)
