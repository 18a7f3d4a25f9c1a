"""The live view as the supervisor runs it: model, detection subscriber and HTTP server together."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from streamdet.config.web import WebConfig
from streamdet.pipeline.ring.layout import RingStatus
from streamdet.web.auth import BasicAuth
from streamdet.web.detections import DetectionFeed
from streamdet.web.live import LiveView
from streamdet.web.routes import WebApp
from streamdet.web.server import WebServer

__all__ = ["WebService"]

log = logging.getLogger("streamdet.web")


class WebService:
    """Everything of the live view; ``start()`` binds (StreamdetError naming the address if it
    cannot), ``stop()`` ends it all. See :class:`~streamdet.web.live.LiveView` for the callables."""

    def __init__(self, config: WebConfig, *, cameras: Callable[[], Sequence[str]],
                 ring_names: Callable[[], Mapping[str, str]],
                 statuses: Callable[[], Mapping[str, RingStatus]] | None = None,
                 sizes: Callable[[], Mapping[str, tuple[int, int] | None]] | None = None,
                 proxy: Callable[[], Any] = lambda: None) -> None:
        self.config = config
        self.live = LiveView(config, cameras=cameras, ring_names=ring_names, statuses=statuses, sizes=sizes)
        auth = None
        if config.auth is not None:
            auth = BasicAuth(config.auth.username, config.auth.password.get_secret_value())
        self.app = WebApp(self.live, auth=auth, max_streams=config.max_streams)
        self.server = WebServer(self.app, config.host, config.port, threads=config.threads)
        self.detections = DetectionFeed(proxy, self.live.watched, self.live.on_detections)

    def start(self) -> WebService:
        self.server.start()
        self.live.start()
        self.detections.start()
        return self

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        host = self.config.host
        shown = f"[{host.strip('[]')}]" if ":" in host else host
        return f"http://{shown}:{self.port}/"

    def on_stats(self, msg: Mapping[str, Any]) -> None:
        self.live.on_stats(msg)

    def stop(self) -> None:
        self.live.stop()  # wakes every stream: they end
        self.detections.stop()
        self.server.stop()
