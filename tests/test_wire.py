"""The wire contract v1: topics, builders, encode/decode round trip, every validation error."""

from __future__ import annotations

import json
import math
import time
from typing import Any

import numpy as np
import pytest
import zmq

from streamdet import wire
from streamdet.errors import WireError

TS = 1_700_000_000.25


def det_msg(**overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(
        camera="cam1",
        seq=7,
        frame=120,
        pts=4.0,
        ts_capture=TS,
        ts_publish=TS + 0.03,
        width=1920,
        height=1080,
        dropped=2,
        detections=[{"box": [10.5, 20.0, 110.25, 220.0], "score": 0.875, "class_id": 0, "label": "person"}],
    )
    kwargs.update(overrides)
    return wire.detection_message(**kwargs)


CAM_STATS = {
    "fps": 24.5,
    "published": 245,
    "dropped": 3,
    "latency_ms": {"p50": 31.0, "p95": 48.5, "max": 60.0},
    "state": "running",
    "reconnects": 0,
}


def stats_msg(**overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(source="worker-cuda:0", interval_s=10.0, cameras={"cam1": CAM_STATS}, ts=TS)
    kwargs.update(overrides)
    return wire.stats_message(**kwargs)


def frames_of(msg: dict[str, Any], topic: bytes | None = None) -> list[bytes]:
    """Frames for a hand-made (possibly invalid) message, bypassing encode's validation."""
    if topic is None:
        topic = wire.detection_topic(msg["camera"]) if msg.get("type") == "detections" else wire.STATS_TOPIC
    return [topic, json.dumps(msg).encode()]


# --- topics ---------------------------------------------------------------------------------


def test_topics() -> None:
    assert wire.detection_topic("cam1") == b"det/cam1/"
    assert wire.detection_topic("A-b_9") == b"det/A-b_9/"
    assert wire.detection_topic("x" * 64) == b"det/" + b"x" * 64 + b"/"
    assert wire.DETECTIONS_PREFIX == b"det/"
    assert wire.STATS_TOPIC == b"stats/"
    assert not wire.detection_topic("cam10").startswith(wire.detection_topic("cam1"))
    assert wire.detection_topic("cam10").startswith(wire.DETECTIONS_PREFIX)


@pytest.mark.parametrize("bad", ["", "x" * 65, "cam/1", "cam 1", "cam1\n", "kaméra", "cam.1", None, 1, b"cam1"])
def test_invalid_camera_ids(bad: Any) -> None:
    with pytest.raises(WireError, match="camera id"):
        wire.detection_topic(bad)


def test_topic_exact_over_real_pub_sub() -> None:
    """A subscription to cam1 receives cam1 and never cam10 (real sockets, loopback only)."""
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    sub = ctx.socket(zmq.SUB)
    try:
        for s in (pub, sub):
            s.setsockopt(zmq.LINGER, 0)
        pub.bind("tcp://127.0.0.1:*")
        sub.connect(pub.getsockopt(zmq.LAST_ENDPOINT).decode())
        sub.setsockopt(zmq.SUBSCRIBE, wire.detection_topic("cam1"))
        got: list[str] = []
        deadline = time.monotonic() + 10
        seq = 0
        while len(got) < 5 and time.monotonic() < deadline:
            for cam in ("cam10", "cam1", "cam1x"):
                pub.send_multipart(wire.encode(det_msg(camera=cam, seq=seq)))
            seq += 1
            while sub.poll(10):
                got.append(wire.decode(sub.recv_multipart())["camera"])
        assert len(got) >= 5
        assert set(got) == {"cam1"}
    finally:
        pub.close()
        sub.close()
        ctx.term()


# --- builders and round trip ----------------------------------------------------------------


def test_detection_round_trip() -> None:
    msg = det_msg()
    frames = wire.encode(msg)
    assert frames[0] == b"det/cam1/"
    assert b" " not in frames[1]  # compact JSON
    out = wire.decode(frames)
    assert out == msg
    assert out["v"] == 1 and out["type"] == "detections"
    assert out["detections"][0] == {
        "box": [10.5, 20.0, 110.25, 220.0],
        "score": 0.875,
        "class_id": 0,
        "label": "person",
    }


def test_detection_message_fields_and_defaults() -> None:
    before = time.time()
    msg = wire.detection_message(camera="c", seq=0, frame=0, pts=None, ts_capture=TS, width=2, height=1, detections=[])
    assert set(msg) == {
        "v", "type", "camera", "seq", "frame", "pts", "ts_capture", "ts_publish",
        "width", "height", "dropped", "detections",
    }  # fmt: skip
    assert msg["dropped"] == 0 and msg["pts"] is None and msg["detections"] == []
    assert before <= msg["ts_publish"] <= time.time()
    assert wire.decode(wire.encode(msg)) == msg


def test_detection_message_converts_numpy() -> None:
    np = pytest.importorskip("numpy")
    det = np.array([[1, 2, 3, 4, 0.5, 2]], dtype=np.float32)[0]
    msg = det_msg(
        seq=np.int64(3),
        width=np.int32(640),
        pts=np.float32(1.5),
        detections=[{"box": det[:4], "score": det[4], "class_id": det[5], "label": "car"}],
    )
    out = wire.decode(wire.encode(msg))
    assert out["seq"] == 3 and out["width"] == 640 and out["pts"] == 1.5
    assert out["detections"] == [{"box": [1.0, 2.0, 3.0, 4.0], "score": 0.5, "class_id": 2, "label": "car"}]


def test_unicode_label_round_trip() -> None:
    msg = det_msg(detections=[{"box": [0, 0, 1, 1], "score": 1, "class_id": 3, "label": "voiture é 車"}])
    assert wire.decode(wire.encode(msg))["detections"][0]["label"] == "voiture é 車"


@pytest.mark.parametrize("pts", [math.nan, math.inf, -math.inf])
def test_non_finite_pts_becomes_null(pts: float) -> None:
    assert det_msg(pts=pts)["pts"] is None
    hand_made = {**det_msg(), "pts": pts}  # encode maps it too
    frames = wire.encode(hand_made)
    assert b'"pts":null' in frames[1]
    assert wire.decode(frames)["pts"] is None
    assert math.isnan(hand_made["pts"]) or math.isinf(hand_made["pts"])  # caller's dict untouched


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(camera="cam/1"), "camera id"),
        (dict(seq=-1), "seq"),
        (dict(seq=1.5), "seq"),
        (dict(seq=True), "seq"),
        (dict(frame="3"), "frame"),
        (dict(width=0), "width"),
        (dict(dropped=-2), "dropped"),
        (dict(ts_capture=math.nan), "ts_capture"),
        (dict(ts_publish=math.inf), "ts_publish"),
        (dict(detections=[{"box": [0, 0, 1], "score": 1, "class_id": 0, "label": "a"}]), r"detections\[0\]\.box"),
        (dict(detections=[{"box": [0, 0, 1, math.nan], "score": 1, "class_id": 0, "label": "a"}]), "box"),
        (dict(detections=[{"box": 5, "score": 1, "class_id": 0, "label": "a"}]), "box"),
        (dict(detections=[{"box": [0, 0, 1, 1], "score": math.nan, "class_id": 0, "label": "a"}]), "score"),
        (dict(detections=[{"box": [0, 0, 1, 1], "score": 1, "class_id": -1, "label": "a"}]), "class_id"),
        (dict(detections=[{"box": [0, 0, 1, 1], "score": 1, "class_id": 0}]), "label"),
        (dict(detections=[[0, 0, 1, 1, 1, 0]]), r"detections\[0\]"),
    ],
)
def test_detection_message_rejects(overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(WireError, match=match):
        det_msg(**overrides)


def test_stats_round_trip_and_nan_latency() -> None:
    msg = stats_msg()
    frames = wire.encode(msg)
    assert frames[0] == b"stats/"
    assert wire.decode(frames) == msg
    idle = stats_msg(
        cameras={
            "cam2": {
                "fps": 0,
                "published": 0,
                "dropped": 0,
                "latency_ms": {"p50": math.nan, "p95": None, "max": math.nan},
                "state": "reconnecting",
                "reconnects": 4,
            }
        }
    )
    assert idle["cameras"]["cam2"]["latency_ms"] == {"p50": None, "p95": None, "max": None}
    assert wire.decode(wire.encode(idle)) == idle
    assert set(msg) == {"v", "type", "ts", "source", "interval_s", "cameras"}


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(source=""), "source"),
        (dict(interval_s="10"), "interval_s"),
        (dict(cameras={"bad id": {}}), "camera id"),
        (dict(cameras={"cam1": {"fps": 1}}), "cameras.cam1"),
        (dict(cameras={"cam1": {**CAM_STATS, "published": -1}}), "published"),
        (dict(cameras={"cam1": {**CAM_STATS, "fps": "1"}}), "fps"),
    ],
)
def test_stats_message_rejects(overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(WireError, match=match):
        stats_msg(**overrides)


def test_encode_rejects_invalid_messages() -> None:
    with pytest.raises(WireError, match="ts_capture"):
        wire.encode({**det_msg(), "ts_capture": math.nan})
    with pytest.raises(WireError, match="type"):
        wire.encode({**det_msg(), "type": "frames"})
    with pytest.raises(WireError, match="JSON-serialisable"):
        wire.encode({**det_msg(), "extra": object()})
    with pytest.raises(WireError, match="JSON-serialisable"):
        wire.encode({**det_msg(), "extra": math.nan})


# --- decode validation ----------------------------------------------------------------------


def test_extra_fields_are_kept() -> None:
    msg = det_msg()
    msg["future_field"] = {"x": 1}
    msg["detections"][0]["track_id"] = 12
    out = wire.decode(wire.encode(msg))
    assert out["future_field"] == {"x": 1} and out["detections"][0]["track_id"] == 12
    stats = stats_msg()
    stats["cameras"]["cam1"]["gpu_ms"] = 4.5
    assert wire.decode(wire.encode(stats))["cameras"]["cam1"]["gpu_ms"] == 4.5


GOOD = frames_of(det_msg())


@pytest.mark.parametrize(
    "frames, match",
    [
        ([GOOD[0]], "2 frames"),
        ([*GOOD, b""], "2 frames"),
        ([GOOD[0], b"\xff\xfe{}"], "UTF-8"),
        ([GOOD[0], b"{not json"], "not JSON"),
        ([GOOD[0], b""], "not JSON"),
        ([GOOD[0], b"[1, 2]"], "JSON object"),
        ([GOOD[0], b'{"v": NaN}'], "NaN"),
        ([GOOD[0], b"[" * 100_000], "not JSON|nested"),
    ],
)
def test_decode_rejects_frames(frames: list[bytes], match: str) -> None:
    with pytest.raises(WireError, match=match):
        wire.decode(frames)


def _without(msg: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in msg.items() if k != key}


REQUIRED = ["camera", "seq", "frame", "pts", "ts_capture", "ts_publish", "width", "height", "dropped", "detections"]


@pytest.mark.parametrize("key", ["v", "type", *REQUIRED])
def test_decode_rejects_missing_field(key: str) -> None:
    msg = _without(det_msg(), key)
    topic = wire.detection_topic("cam1")
    with pytest.raises(WireError, match=f"missing field '{key}'"):
        wire.decode([topic, json.dumps(msg).encode()])


@pytest.mark.parametrize("key", ["ts", "source", "interval_s", "cameras"])
def test_decode_rejects_missing_stats_field(key: str) -> None:
    with pytest.raises(WireError, match=f"missing field '{key}'"):
        wire.decode(frames_of(_without(stats_msg(), key)))


def _det_with(**changes: Any) -> dict[str, Any]:
    msg = det_msg()
    msg.update(changes)
    return msg


def _first_det_with(**changes: Any) -> dict[str, Any]:
    msg = det_msg()
    msg["detections"][0].update(changes)
    return msg


@pytest.mark.parametrize(
    "msg, match",
    [
        (_det_with(v=2), "unsupported wire version 2"),
        (_det_with(v=0), "unsupported wire version 0"),
        (_det_with(v="1"), "'v'"),
        (_det_with(v=True), "'v'"),
        (_det_with(v=1.0), "'v'"),
        (_det_with(type="frames"), "unknown message type"),
        (_det_with(seq=-1), "'seq'"),
        (_det_with(seq=1.5), "'seq'"),
        (_det_with(seq=False), "'seq'"),
        (_det_with(frame="12"), "'frame'"),
        (_det_with(pts="4.0"), "'pts'"),
        (_det_with(ts_capture=None), "'ts_capture'"),
        (_det_with(ts_publish="now"), "'ts_publish'"),
        (_det_with(width=0), "'width'"),
        (_det_with(height=-5), "'height'"),
        (_det_with(dropped=None), "'dropped'"),
        (_det_with(detections={}), "'detections'"),
        (_det_with(detections=[5]), r"detections\[0\]"),
        (_first_det_with(box=[1, 2, 3]), "'box'"),
        (_first_det_with(box=[1, 2, 3, "4"]), "'box'"),
        (_first_det_with(box=None), "'box'"),
        (_first_det_with(score="high"), "'score'"),
        (_first_det_with(score=True), "'score'"),
        (_first_det_with(class_id=1.5), "'class_id'"),
        (_first_det_with(class_id=-1), "'class_id'"),
        (_first_det_with(label=3), "'label'"),
        (_first_det_with(track_id=0), "'track_id'"),
        (_first_det_with(track_id=2.5), "'track_id'"),
        (_first_det_with(track_id="7"), "'track_id'"),
        (_det_with(inferred=1), "'inferred'"),
        (_det_with(inferred="yes"), "'inferred'"),
    ],
)
def test_decode_rejects_bad_detection_fields(msg: dict[str, Any], match: str) -> None:
    with pytest.raises(WireError, match=match):
        wire.decode([wire.detection_topic("cam1"), json.dumps(msg).encode()])


def test_tracking_fields_round_trip_and_are_checked_when_built() -> None:
    det = {"box": [1.0, 2.0, 3.0, 4.0], "score": 0.5, "class_id": 0, "label": "a", "track_id": np.int64(12)}
    msg = wire.detection_message(camera="cam1", seq=0, frame=0, pts=0.0, ts_capture=1.0, width=8, height=8,
                                 detections=[det], inferred=False)
    assert msg["inferred"] is False and msg["detections"][0]["track_id"] == 12
    assert type(msg["detections"][0]["track_id"]) is int
    topic, payload = wire.encode(msg)
    assert wire.decode([topic, payload]) == msg
    plain = wire.detection_message(camera="cam1", seq=0, frame=0, pts=0.0, ts_capture=1.0, width=8, height=8,
                                   detections=[])
    assert "inferred" not in plain
    with pytest.raises(WireError, match="track_id"):
        wire.detection_message(camera="cam1", seq=0, frame=0, pts=0.0, ts_capture=1.0, width=8, height=8,
                               detections=[{**det, "track_id": -3}])


def test_decode_rejects_missing_detection_keys() -> None:
    for key in ("box", "score", "class_id", "label"):
        msg = det_msg()
        del msg["detections"][0][key]
        with pytest.raises(WireError, match=f"missing field detections\\[0\\]\\.'{key}'"):
            wire.decode(frames_of(msg))


def test_decode_rejects_bad_camera_field() -> None:
    msg = _det_with(camera="cam/1")
    with pytest.raises(WireError, match="camera"):
        wire.decode([b"det/cam/1/", json.dumps(msg).encode()])
    with pytest.raises(WireError, match="camera"):
        wire.decode([b"det/5/", json.dumps(_det_with(camera=5)).encode()])


@pytest.mark.parametrize("topic", [b"det/cam2/", b"det/cam1", b"det/cam1/x", b"det/", b"stats/", b""])
def test_decode_rejects_topic_mismatch(topic: bytes) -> None:
    with pytest.raises(WireError, match="topic"):
        wire.decode([topic, GOOD[1]])


def test_decode_rejects_stats_on_detection_topic() -> None:
    with pytest.raises(WireError, match="topic"):
        wire.decode([b"det/cam1/", wire.encode(stats_msg())[1]])


def _stats_cam_with(**changes: Any) -> dict[str, Any]:
    msg = stats_msg()
    msg["cameras"]["cam1"].update(changes)
    return msg


@pytest.mark.parametrize(
    "msg, match",
    [
        ({**stats_msg(), "ts": "x"}, "'ts'"),
        ({**stats_msg(), "source": 3}, "'source'"),
        ({**stats_msg(), "interval_s": None}, "'interval_s'"),
        ({**stats_msg(), "cameras": []}, "'cameras'"),
        ({**stats_msg(), "cameras": {"bad id": {}}}, "camera id"),
        ({**stats_msg(), "cameras": {"cam1": 3}}, "cameras.cam1"),
        (_stats_cam_with(fps="fast"), "'fps'"),
        (_stats_cam_with(published=-1), "'published'"),
        (_stats_cam_with(dropped=0.5), "'dropped'"),
        (_stats_cam_with(state=None), "'state'"),
        (_stats_cam_with(reconnects="0"), "'reconnects'"),
        (_stats_cam_with(latency_ms=[1, 2, 3]), "'latency_ms'"),
        (_stats_cam_with(latency_ms={"p50": 1, "p95": 2}), "missing field cameras.cam1.latency_ms.'max'"),
        (_stats_cam_with(latency_ms={"p50": "1", "p95": 2, "max": 3}), "'p50'"),
        (_without(stats_msg(), "cameras"), "missing field 'cameras'"),
    ],
)
def test_decode_rejects_bad_stats_fields(msg: dict[str, Any], match: str) -> None:
    with pytest.raises(WireError, match=match):
        wire.decode([wire.STATS_TOPIC, json.dumps(msg).encode()])


def test_decode_accepts_buffers_and_integral_numbers() -> None:
    msg = _det_with(pts=4, ts_capture=1_700_000_000)
    out = wire.decode([bytearray(wire.detection_topic("cam1")), memoryview(json.dumps(msg).encode())])
    assert out["pts"] == 4 and out["ts_capture"] == 1_700_000_000


def test_detection_records() -> None:
    det = np.array([[1.234, 5.678, 100.0, 200.499, 0.876543, 2.0], [-0.0, 0.0, 1.0, 1.0, 0.5, 80.0]], np.float32)
    from streamdet.wire import detection_records

    recs = detection_records(det, ["a", "b", "c"])
    assert recs[0] == {"box": [1.23, 5.68, 100.0, 200.5], "score": 0.8765, "class_id": 2, "label": "c"}
    assert recs[1]["label"] == "80" and recs[1]["class_id"] == 80
    assert type(recs[0]["score"]) is float and type(recs[0]["class_id"]) is int
    assert all(type(v) is float for v in recs[0]["box"])
    assert json.dumps(recs[1]["box"]) == "[0.0, 0.0, 1.0, 1.0]"  # no "-0.0"
    assert detection_records(np.zeros((0, 6), np.float32), ["a"]) == []
    assert detection_records(det, {2: "two"})[0]["label"] == "two"


def test_detection_message_is_built_once_and_encodes_like_the_contract() -> None:
    from streamdet.wire import DetectionMessage, detection_records

    det = np.array([[1.234, 5.678, 100.0, 200.499, 0.876543, 2.0]], np.float32)
    msg = DetectionMessage.build(camera="cam1", seq=3, frame=7, pts=float("nan"), ts_capture=1.5, ts_publish=2.0,
                                 width=640, height=480, dropped=1, det=det, names=["a", "b", "c"], track_ids=[9],
                                 inferred=True)
    reference = wire.detection_message(camera="cam1", seq=3, frame=7, pts=None, ts_capture=1.5, ts_publish=2.0,
                                       width=640, height=480, dropped=1, inferred=True,
                                       detections=detection_records(det, ["a", "b", "c"], [9]))
    assert dict(msg) == reference and msg["detections"][0]["track_id"] == 9 and msg.pts is None
    assert msg.frames() == wire.encode(reference)  # byte for byte what the validating encoder makes
    assert wire.decode(msg.frames()) == reference
    plain = DetectionMessage.build(camera="cam1", seq=0, frame=0, pts=0.0, ts_capture=1.0, width=8, height=8,
                                   dropped=0, det=np.zeros((0, 6), np.float32), names=[])
    assert "inferred" not in plain and plain["detections"] == []


@pytest.mark.parametrize("change, match", [
    ({"camera": "bad id"}, "camera id"),
    ({"seq": -1}, "seq"),
    ({"width": 0}, "width"),
    ({"ts_capture": float("inf")}, "ts_capture"),
    ({"det": np.array([[0, 0, 1, float("nan"), 0.5, 0]], np.float32)}, "finite"),
    ({"track_ids": [0]}, "track ids"),
    ({"det": np.array([[0, 0, 1, 1, 0.5, -1]], np.float32)}, "class_id"),
])
def test_detection_message_refuses_what_breaks_the_contract(change: dict[str, Any], match: str) -> None:
    from streamdet.wire import DetectionMessage

    args: dict[str, Any] = dict(camera="cam1", seq=0, frame=0, pts=0.0, ts_capture=1.0, width=8, height=8, dropped=0,
                                det=np.array([[0, 0, 1, 1, 0.5, 0]], np.float32), names=["a"], track_ids=None)
    args.update(change)
    with pytest.raises(WireError, match=match):
        DetectionMessage.build(**args)
