"""The published message contract, version 1 (see docs/wire.md): topics, builders, encode/decode.

Stage: shared by both ends of the wire. Consumes message dicts (built here from a worker's
detections and counters, or received as ZeroMQ multipart frames); produces the two frames
``[topic, payload]`` (worker process, via ``streamdet.pipeline.worker.publish``) or validated dicts
(any subscriber process, via ``streamdet.client``). Standard library only (json), so the
client stays light and never pulls numpy or torch.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from streamdet_client.camera_id import CAMERA_ID_PATTERN as CAMERA_ID_PATTERN  # re-exported: part of the wire contract
from streamdet_client.camera_id import is_valid_camera_id
from streamdet_client.errors import WireError

VERSION = 1
"""Major version of the contract. Additive changes (new fields) keep it; anything else bumps it."""

DETECTIONS_PREFIX = b"det/"
"""Subscribe to this prefix to receive the detections of every camera."""

STATS_TOPIC = b"stats/"
"""Topic of the periodic stats messages."""

DETECTIONS = "detections"
STATS = "stats"

_JSON_SEPARATORS = (",", ":")


# --------------------------------------------------------------------------------------------
# Topics


def is_camera_id(value: object) -> bool:
    """True if ``value`` is a valid camera id: 1 to 64 of ``[A-Za-z0-9_-]``."""
    return is_valid_camera_id(value)


def detection_topic(camera_id: str) -> bytes:
    """The topic of one camera's detections, ``b"det/<camera_id>/"``.

    The trailing slash makes a subscription exact: ``det/cam1/`` is not a prefix of ``det/cam10/``.
    """
    if not is_camera_id(camera_id):
        raise WireError(f"invalid camera id {camera_id!r}: expected 1-64 characters of [A-Za-z0-9_-]")
    return DETECTIONS_PREFIX + camera_id.encode("ascii") + b"/"


# --------------------------------------------------------------------------------------------
# Builders (the publishing side): convert numpy scalars and the like into plain JSON types.


def _finite_or_none(value: float | None) -> float | None:
    """``float(value)``, or None when value is None, NaN or infinite (JSON has no NaN)."""
    if value is None:
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _finite(name: str, value: Any) -> float:
    """``float(value)``; WireError if it is not a finite number (strings and bools are not numbers)."""
    if isinstance(value, (str, bytes, bool)):
        raise WireError(f"{name}: expected a number, got {value!r}")
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise WireError(f"{name}: expected a number, got {value!r}") from None
    if not math.isfinite(f):
        raise WireError(f"{name}: expected a finite number, got {f!r}")
    return f


def _count(name: str, value: Any, minimum: int = 0) -> int:
    """``int(value)`` for integral values >= minimum; WireError otherwise."""
    if isinstance(value, bool):
        raise WireError(f"{name}: expected an integer, got {value!r}")
    try:
        i = int(value)
    except (TypeError, ValueError, OverflowError):
        raise WireError(f"{name}: expected an integer, got {value!r}") from None
    if i != value or i < minimum:
        raise WireError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return i


def _detection_record(i: int, record: Mapping[str, Any]) -> dict[str, Any]:
    """One detection in wire form; extra keys of the record are kept as they are."""
    where = f"detections[{i}]"
    try:
        box = record["box"]
        score, class_id, label = record["score"], record["class_id"], record["label"]
    except (KeyError, TypeError) as exc:
        raise WireError(f"{where}: expected a mapping with box, score, class_id, label ({exc!r})") from None
    try:
        coords = [_finite(f"{where}.box", v) for v in box]
    except TypeError:
        raise WireError(f"{where}.box: expected 4 numbers [x1, y1, x2, y2], got {box!r}") from None
    if len(coords) != 4:
        raise WireError(f"{where}.box: expected 4 numbers [x1, y1, x2, y2], got {len(coords)}")
    out = dict(record)
    out.update(
        box=coords,
        score=_finite(f"{where}.score", score),
        class_id=_count(f"{where}.class_id", class_id),
        label=str(label),
    )
    if "track_id" in record:
        out["track_id"] = _count(f"{where}.track_id", record["track_id"], 1)
    return out


def detection_message(
    *,
    camera: str,
    seq: int,
    frame: int,
    pts: float | None,
    ts_capture: float,
    width: int,
    height: int,
    detections: Iterable[Mapping[str, Any]],
    dropped: int = 0,
    ts_publish: float | None = None,
    inferred: bool | None = None,
) -> dict[str, Any]:
    """Build a v1 detections message for one frame of one camera.

    ``detections`` are records ``{"box": [x1, y1, x2, y2], "score", "class_id", "label"}`` in the
    pixels of a ``width`` x ``height`` frame (``postprocess.detection_records``); numpy scalars are accepted
    and converted. A NaN or infinite ``pts`` becomes None (JSON null): JSON has no NaN, and an
    unknown timestamp is what it means. ``ts_publish`` defaults to now. With tracking, records carry
    ``track_id`` (an integer >= 1) and ``inferred`` says whether the detector ran on this frame
    (None: the key is left out, as without tracking). Raises WireError on anything that cannot be
    represented (bad camera id, negative counts, non-finite boxes, a bad track id).
    """
    detection_topic(camera)  # validates the id
    msg = {
        "v": VERSION,
        "type": DETECTIONS,
        "camera": camera,
        "seq": _count("seq", seq),
        "frame": _count("frame", frame),
        "pts": _finite_or_none(pts),
        "ts_capture": _finite("ts_capture", ts_capture),
        "ts_publish": _finite("ts_publish", time.time() if ts_publish is None else ts_publish),
        "width": _count("width", width, 1),
        "height": _count("height", height, 1),
        "dropped": _count("dropped", dropped),
        "detections": [_detection_record(i, r) for i, r in enumerate(detections)],
    }
    if inferred is not None:
        msg["inferred"] = bool(inferred)
    return msg


_LATENCY_KEYS = ("p50", "p95", "max")
_OPTIONAL_LATENCY_KEYS = ("p99",)


def _camera_stats(camera: str, stats: Mapping[str, Any]) -> dict[str, Any]:
    """One camera's entry of a stats message, normalised to plain JSON types."""
    where = f"cameras.{camera}"
    try:
        latency = stats["latency_ms"]
        out = dict(stats)
        out.update(
            fps=_finite(f"{where}.fps", stats["fps"]),
            published=_count(f"{where}.published", stats["published"]),
            dropped=_count(f"{where}.dropped", stats["dropped"]),
            latency_ms={k: _finite_or_none(latency.get(k)) for k in _LATENCY_KEYS + _OPTIONAL_LATENCY_KEYS
                        if k in _LATENCY_KEYS or k in latency},
            state=str(stats["state"]),
            reconnects=_count(f"{where}.reconnects", stats["reconnects"]),
        )
    except (KeyError, AttributeError, TypeError) as exc:
        raise WireError(
            f"{where}: expected fps, published, dropped, latency_ms {{p50, p95, max}}, state, reconnects ({exc!r})"
        ) from None
    return out


def stats_message(
    *,
    source: str,
    interval_s: float,
    cameras: Mapping[str, Mapping[str, Any]],
    ts: float | None = None,
    worker: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build a v1 stats message: one publisher's counters over the last ``interval_s`` seconds.

    ``cameras`` maps camera id to ``{fps, published, dropped, latency_ms: {p50, p95, max},
    state, reconnects}``; latency values may be None (no message in the interval; NaN also
    becomes None). ``ts`` defaults to now. ``worker`` (optional) is the publisher's own figures
    (batches, per-stage times; see docs/wire.md), passed through as given.
    """
    if not isinstance(source, str) or not source:
        raise WireError(f"source: expected a non-empty string, got {source!r}")
    for camera in cameras:
        detection_topic(camera)
    msg: dict[str, Any] = {
        "v": VERSION,
        "type": STATS,
        "ts": _finite("ts", time.time() if ts is None else ts),
        "source": source,
        "interval_s": _finite("interval_s", interval_s),
        "cameras": {camera: _camera_stats(camera, s) for camera, s in cameras.items()},
    }
    if worker is not None:
        msg["worker"] = dict(worker)
    return msg


# --------------------------------------------------------------------------------------------
# Validation (the receiving side): strict on required fields, tolerant of extra ones.


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, float) and math.isfinite(value)
    )


def _require(msg: Mapping[str, Any], key: str, where: str = "") -> Any:
    if key not in msg:
        raise WireError(f"missing field {where}{key!r}")
    return msg[key]


def _check_int(msg: Mapping[str, Any], key: str, minimum: int = 0, where: str = "") -> None:
    value = _require(msg, key, where)
    if not _is_int(value) or value < minimum:
        raise WireError(f"field {where}{key!r}: expected an integer >= {minimum}, got {value!r}")


def _check_number(msg: Mapping[str, Any], key: str, where: str = "", nullable: bool = False) -> None:
    value = _require(msg, key, where)
    if value is None and nullable:
        return
    if not _is_number(value):
        kind = "a number or null" if nullable else "a number"
        raise WireError(f"field {where}{key!r}: expected {kind}, got {value!r}")


def _check_str(msg: Mapping[str, Any], key: str, where: str = "") -> None:
    value = _require(msg, key, where)
    if not isinstance(value, str):
        raise WireError(f"field {where}{key!r}: expected a string, got {value!r}")


def _validate_detections(msg: Mapping[str, Any]) -> None:
    camera = _require(msg, "camera")
    if not is_camera_id(camera):
        raise WireError(f"field 'camera': invalid camera id {camera!r}")
    _check_int(msg, "seq")
    _check_int(msg, "frame")
    _check_number(msg, "pts", nullable=True)
    _check_number(msg, "ts_capture")
    _check_number(msg, "ts_publish")
    _check_int(msg, "width", 1)
    _check_int(msg, "height", 1)
    _check_int(msg, "dropped")
    dets = _require(msg, "detections")
    if not isinstance(dets, list):
        raise WireError(f"field 'detections': expected a list, got {type(dets).__name__}")
    for i, det in enumerate(dets):
        where = f"detections[{i}]."
        if not isinstance(det, dict):
            raise WireError(f"detections[{i}]: expected an object, got {type(det).__name__}")
        box = _require(det, "box", where)
        if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
            raise WireError(f"field {where}'box': expected 4 numbers [x1, y1, x2, y2], got {box!r}")
        _check_number(det, "score", where)
        _check_int(det, "class_id", 0, where)
        _check_str(det, "label", where)
        if "track_id" in det:
            _check_int(det, "track_id", 1, where)
    if "inferred" in msg and not isinstance(msg["inferred"], bool):
        raise WireError(f"field 'inferred': expected true or false, got {msg['inferred']!r}")


def _validate_stats(msg: Mapping[str, Any]) -> None:
    _check_number(msg, "ts")
    _check_str(msg, "source")
    _check_number(msg, "interval_s")
    cameras = _require(msg, "cameras")
    if not isinstance(cameras, dict):
        raise WireError(f"field 'cameras': expected an object, got {type(cameras).__name__}")
    for camera, stats in cameras.items():
        if not is_camera_id(camera):
            raise WireError(f"field 'cameras': invalid camera id {camera!r}")
        where = f"cameras.{camera}."
        if not isinstance(stats, dict):
            raise WireError(f"field {where[:-1]!r}: expected an object, got {type(stats).__name__}")
        _check_number(stats, "fps", where)
        _check_int(stats, "published", 0, where)
        _check_int(stats, "dropped", 0, where)
        _check_str(stats, "state", where)
        _check_int(stats, "reconnects", 0, where)
        latency = _require(stats, "latency_ms", where)
        if not isinstance(latency, dict):
            raise WireError(f"field {where}'latency_ms': expected an object, got {type(latency).__name__}")
        for key in _LATENCY_KEYS:
            _check_number(latency, key, f"{where}latency_ms.", nullable=True)


def validate(msg: Mapping[str, Any]) -> bytes:
    """Check a message against contract v1 and return the topic it belongs on; WireError if not."""
    if not isinstance(msg, Mapping):
        raise WireError(f"message: expected a JSON object, got {type(msg).__name__}")
    v = _require(msg, "v")
    if not _is_int(v):
        raise WireError(f"field 'v': expected an integer version, got {v!r}")
    if v != VERSION:
        raise WireError(f"unsupported wire version {v} (this reader understands version {VERSION})")
    kind = _require(msg, "type")
    if kind == DETECTIONS:
        _validate_detections(msg)
        return detection_topic(msg["camera"])
    if kind == STATS:
        _validate_stats(msg)
        return STATS_TOPIC
    raise WireError(f"field 'type': unknown message type {kind!r} (expected 'detections' or 'stats')")


# --------------------------------------------------------------------------------------------
# Frames


def encode(msg: Mapping[str, Any]) -> list[bytes]:
    """Validate ``msg`` and return the multipart frames ``[topic, payload]``.

    The topic is derived from the message (type and camera). The payload is compact UTF-8 JSON;
    a NaN or infinite ``pts`` is sent as null, any other non-finite number is a WireError.
    """
    pts = msg.get("pts") if isinstance(msg, Mapping) else None
    if isinstance(pts, float) and not math.isfinite(pts):
        msg = {**msg, "pts": None}
    topic = validate(msg)
    try:
        payload = json.dumps(msg, separators=_JSON_SEPARATORS, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise WireError(f"message is not JSON-serialisable: {exc}") from None
    return [topic, payload.encode("utf-8")]


def _reject_constant(name: str) -> Any:
    raise WireError(f"payload: {name} is not valid JSON")


def decode(frames: Sequence[bytes | bytearray | memoryview]) -> dict[str, Any]:
    """Parse and validate the multipart frames ``[topic, payload]`` of one message.

    Returns the message dict (extra fields kept: forward compatibility). Raises WireError naming
    the problem: wrong frame count, bad UTF-8 or JSON, unsupported version, a missing or mistyped
    field, or a topic that does not match the message.
    """
    if len(frames) != 2:
        raise WireError(f"expected 2 frames [topic, payload], got {len(frames)}")
    topic, payload = (bytes(f) for f in frames)
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WireError(f"payload is not UTF-8: {exc}") from None
    try:
        msg = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise WireError(f"payload is not JSON: {exc}") from None
    except RecursionError:
        raise WireError("payload is nested too deeply") from None
    if not isinstance(msg, dict):
        raise WireError(f"payload: expected a JSON object, got {type(msg).__name__}")
    expected = validate(msg)
    if topic != expected:
        raise WireError(f"topic {topic!r} does not match the message (expected {expected!r})")
    return msg
