"""A human summary of a validated configuration (``streamdet check``); URLs are redacted."""

from __future__ import annotations

from streamdet.config.schema import Config, CurveConfig


def _fmt_s(seconds: float) -> str:
    """Seconds for humans: 10 -> '10 s'."""
    return f"{seconds:g} s"


def _curve(curve: CurveConfig | None) -> str:
    """', CURVE (N client keys)' for the publish line: the *.key files in ``authorized_keys``; just
    ', CURVE' when that directory is not here (systemd credentials may supply it at start)."""
    if curve is None:
        return ""
    try:
        n = sum(1 for p in curve.authorized_keys.glob("*.key") if p.is_file())
    except OSError:
        n = -1
    if n < 0 or not curve.authorized_keys.is_dir():
        return ", CURVE"
    return f", CURVE ({n} client key{'s' if n != 1 else ''})"


def _devices(config: Config) -> str:
    """The devices line: the configured list, or what ``auto`` means (resolved when the daemon starts)."""
    if config.auto_devices:
        return "auto (one worker per visible GPU, found without initialising CUDA when the daemon starts; cpu if none)"
    n = len(config.devices)
    return f"{', '.join(config.devices)} ({n} worker{'s' if n != 1 else ''})"


def _mqtt(config: Config) -> str:
    """The MQTT bridge in one line: broker, topics, QoS, queue, login (never the password)."""
    q = config.mqtt
    assert q is not None
    s = q.bridge_settings()
    login = f", user {q.username}" if q.username else ""
    tls = "" if q.tls is None else (", TLS without host name check" if q.tls.insecure else ", TLS")
    return (f"{s.broker} topics {q.topic_prefix}/{q.gateway_id}/... (MQTT {q.protocol}, qos {q.qos}, "
            f"up to {q.max_queued} queued{tls}{login})")


def summarize(config: Config) -> str:
    """A multi-line human summary (``streamdet check``); URLs are redacted."""
    m = config.model
    classes = "all" if m.classes is None else ",".join(map(str, m.classes))
    enabled = len(config.enabled_cameras)
    ring = config.ring
    per_cam = ring.slots * ring.slot_bytes
    lines = [
        f"model:      {m.weights}",
        f"            img_size={m.img_size if m.img_size is not None else 'from the checkpoint'} "
        f"conf_thres={m.conf_thres:g} iou_thres={m.iou_thres:g} "
        f"classes={classes} max_det={m.max_det} half={'yes' if m.half else 'no'} backend={m.backend} "
        f"preprocess={m.preprocess}",
        f"devices:    {_devices(config)}",
        f"publish:    {config.publish.endpoint} (hwm {config.publish.hwm}, stats every "
        f"{_fmt_s(config.publish.stats_interval_s)}{_curve(config.publish.curve)})",
        "metrics:    " + ("off" if config.metrics.port is None
                          else f"http://{config.metrics.host}:{config.metrics.port}/metrics"),
        f"cameras:    {len(config.cameras)} ({enabled} enabled)",
    ]
    if config.mqtt is not None:
        lines.insert(-1, f"mqtt:       {_mqtt(config)}")
    if config.web is not None:
        w = config.web
        lines.insert(-1, f"web:        http://{w.host}:{w.port}/ (live view, at most {w.max_fps:g} pictures/s per "
                         f"camera, {'HTTP Basic auth' if w.auth else 'no auth: loopback only'})")
    width = max(len(c.id) for c in config.cameras)
    for cam in config.cameras:
        settings = [f"max_fps={cam.max_fps:g}" if cam.max_fps else "max_fps=source"]
        if cam.is_file:
            settings.append("realtime" if cam.realtime else "as fast as possible")
            settings.append("loop" if cam.loop else "no loop")
        elif cam.url.lower().startswith(("rtsp://", "rtsps://")):
            settings.append(f"rtsp_transport={cam.rtsp_transport}")
        if cam.decode != "auto":
            settings.append(f"decode={cam.decode}")
        state = "" if cam.enabled else "  [disabled]"
        kind = "file" if cam.is_file else "url "
        lines.append(f"  {cam.id:<{width}}  {kind} {cam.redacted_url}  {' '.join(settings)}{state}")
    lines += [
        f"batching:   max_batch={config.batching.max_batch} max_wait_ms={config.batching.max_wait_ms:g}",
        f"ring:       {ring.slots} slots of up to {ring.max_width}x{ring.max_height} YUV 4:2:0 "
        f"({per_cam / 2**20:.1f} MiB shared memory per camera, {per_cam * enabled / 2**20:.1f} MiB total)",
        f"decode:     {config.decode.cameras_per_process} camera(s) per process, timeouts "
        f"open={_fmt_s(config.decode.open_timeout_s)} read={_fmt_s(config.decode.read_timeout_s)} "
        f"stall={_fmt_s(config.decode.stall_timeout_s)}",
        f"threads:    inference lanes={config.threads.lanes} threads per lane={config.threads.inference}",
        f"reconnect:  backoff {_fmt_s(config.reconnect.initial_s)} doubling to "
        f"{_fmt_s(config.reconnect.max_s)}, jitter {config.reconnect.jitter:.0%}",
        f"supervisor: at most {config.supervisor.restart_limit} restarts per "
        f"{_fmt_s(config.supervisor.restart_window_s)}, hang after "
        f"{_fmt_s(config.supervisor.hang_timeout_s)} without heartbeat "
        f"(start-up {_fmt_s(config.supervisor.startup_timeout_s)}), stop grace "
        f"{_fmt_s(config.supervisor.stop_timeout_s)}",
        f"log_level:  {config.log_level}",
    ]
    return "\n".join(lines)
