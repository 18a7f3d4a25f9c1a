"""The live-settings channel: one typed object per reload, read by a child only when it changed."""

from __future__ import annotations

import logging
import multiprocessing as mp
from pathlib import Path

import pytest

from streamdet.pipeline.decode.contract import DecoderLive
from streamdet.pipeline.live import LiveChannel
from streamdet.pipeline.settings import NmsSettings
from streamdet.pipeline.worker.contract import WorkerLive


def _channel(tmp_path: Path) -> LiveChannel:
    return LiveChannel(str(tmp_path / "w.live.json"), mp.get_context("spawn").RawValue("L", 0))


def test_a_reader_sees_each_publication_once_and_whole(tmp_path: Path) -> None:
    channel = _channel(tmp_path)
    reader = channel.reader(WorkerLive.from_json, "worker-cpu")
    assert reader.poll() is None and reader.current is None  # nothing published yet
    first = WorkerLive({"cam1": "ring1"}, NmsSettings(0.3, 0.5, (1, 2), 10), {"settings": {}, "cameras": {}})
    channel.publish(first)
    assert reader.poll() == first and reader.current == first
    assert reader.poll() is None  # no change since
    second = WorkerLive({"cam1": "ring1", "cam2": "ring2"}, NmsSettings(0.6), None, {"cam3": {"state": "ended"}})
    channel.publish(second)
    assert reader.poll() == second
    late = channel.reader(WorkerLive.from_json)  # a child that starts later reads the latest settings
    assert late.poll() == second


def test_only_the_counter_is_read_until_it_moves(tmp_path: Path) -> None:
    channel = _channel(tmp_path)
    channel.publish(DecoderLive({"cam1": 5.0}))
    reader = channel.reader(DecoderLive.from_json)
    assert reader.poll() == DecoderLive({"cam1": 5.0})
    Path(channel.path).unlink()  # the file is not read again while the counter stands still
    assert reader.poll() is None and reader.current == DecoderLive({"cam1": 5.0})


def test_a_bad_file_keeps_the_previous_settings_with_one_error_line(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    channel = _channel(tmp_path)
    channel.publish(DecoderLive({"cam1": 5.0}))
    reader = channel.reader(DecoderLive.from_json, "decoder-0")
    reader.poll()
    Path(channel.path).write_text('{"max_fps": {"cam1": "fast"}}')
    channel.generation.value += 1
    with caplog.at_level(logging.ERROR, logger="streamdet.pipeline.live"):
        assert reader.poll() is None
    assert reader.current == DecoderLive({"cam1": 5.0})
    assert len(caplog.records) == 1 and "decoder-0" in caplog.text and "keeping the previous" in caplog.text


def test_settings_survive_json_exactly() -> None:
    live = WorkerLive({"a": "r"}, NmsSettings(0.25, 0.45, None, 300, agnostic=True),
                      {"settings": {"high_thresh": 0.5}, "cameras": {"a": 3}}, {"b": {"state": "failed"}})
    assert WorkerLive.from_json(live.to_json()) == live
    assert DecoderLive.from_json(DecoderLive({"a": 0.0, "b": 12.5}).to_json()) == DecoderLive({"a": 0.0, "b": 12.5})
    with pytest.raises(ValueError, match="conf_thres"):
        WorkerLive.from_json({**live.to_json(), "nms": {**live.nms.to_json(), "conf_thres": 2}})
