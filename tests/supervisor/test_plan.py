"""Plans: decoders per camera (or sticky groups), workers per device with sticky placement."""

from __future__ import annotations

from pathlib import Path

from streamdet.config import parse_config
from streamdet.supervisor.plan import make_plan, place_cameras

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo" / "shapes_yolov5n.pt"


def _config(tmp_path: Path, cameras: list[str], extra: str = ""):
    for name in ("a.mp4",):
        (tmp_path / name).write_bytes(b"\0")
    cams = "\n".join(f"  - {{id: {c}, url: a.mp4}}" for c in cameras)
    return parse_config(f'model: {{weights: "{DEMO}"}}\n{extra}\ncameras:\n{cams}\n', tmp_path)


def test_one_decoder_per_camera_named_after_it(tmp_path: Path) -> None:
    plan = make_plan(_config(tmp_path, ["door", "yard"]), cpus=2)
    assert [d.name for d in plan.decoders] == ["decoder-door", "decoder-yard"]
    assert [(w.name, w.cameras) for w in plan.workers] == [("worker-cpu", ("door", "yard"))]


def test_decoder_groups_are_sticky_across_reloads(tmp_path: Path) -> None:
    extra = "decode: {cameras_per_process: 2}"
    first = make_plan(_config(tmp_path, ["a", "b", "c"], extra), cpus=2)
    assert [(d.name, d.cameras) for d in first.decoders] == [("decoder-0", ("a", "b")), ("decoder-1", ("c",))]
    # 'a' removed, 'd' added: b keeps its group, c keeps its group, d gets a new one
    second = make_plan(_config(tmp_path, ["b", "c", "d"], extra), cpus=2, previous=first)
    assert [(d.name, d.cameras) for d in second.decoders] == [
        ("decoder-0", ("b",)), ("decoder-1", ("c",)), ("decoder-2", ("d",))]


def test_restart_key_ignores_max_fps_only(tmp_path: Path) -> None:
    a = make_plan(_config(tmp_path, ["a"]), cpus=2).decoders[0]
    b_cfg = parse_config(f'model: {{weights: "{DEMO}"}}\ncameras: [{{id: a, url: a.mp4, max_fps: 3}}]\n', tmp_path)
    c_cfg = parse_config(f'model: {{weights: "{DEMO}"}}\ncameras: [{{id: a, url: a.mp4, loop: true}}]\n', tmp_path)
    b = make_plan(b_cfg, cpus=2).decoders[0]
    c = make_plan(c_cfg, cpus=2).decoders[0]
    assert a.restart_key() == b.restart_key() and a.sources != b.sources
    assert a.restart_key() != c.restart_key()


def test_placement_is_sticky_and_balances_new_cameras(tmp_path: Path) -> None:
    cfg = _config(tmp_path, ["a", "b", "c", "d"], 'devices: ["cuda:0", "cuda:1"]')
    cams = list(cfg.cameras)
    first = place_cameras(cams, ("cuda:0", "cuda:1"), {})
    assert sorted(first.values()) == ["cuda:0", "cuda:0", "cuda:1", "cuda:1"]
    # a third GPU appears: nobody moves; two new cameras go to the emptiest device
    cfg2 = _config(tmp_path, ["a", "b", "c", "d", "e", "f"])
    second = place_cameras(list(cfg2.cameras), ("cuda:0", "cuda:1", "cuda:2"), first)
    assert {c: second[c] for c in "abcd"} == first
    assert second["e"] == "cuda:2"
    # a GPU removed: only its cameras move
    third = place_cameras(list(cfg2.cameras), ("cuda:0", "cuda:2"), second)
    assert all(third[c] == second[c] for c in second if second[c] != "cuda:1")
    assert {third[c] for c in second if second[c] == "cuda:1"} <= {"cuda:0", "cuda:2"}


def test_placement_weighs_cameras_by_pixel_rate(tmp_path: Path) -> None:
    cfg = _config(tmp_path, ["big", "s1", "s2"])
    rates = {"big": 1920 * 1080 * 30.0, "s1": 640 * 480 * 5.0, "s2": 640 * 480 * 5.0}
    placed = place_cameras(list(cfg.cameras), ("cuda:0", "cuda:1"), {}, rates)
    assert placed["s1"] == placed["s2"] != placed["big"]


def test_worker_plan_splits_live_settings_from_restart_settings(tmp_path: Path) -> None:
    base = make_plan(_config(tmp_path, ["a"]), cpus=2).workers[0]
    thr = make_plan(_config(tmp_path, ["a"], "").model_copy(
        update={"model": _config(tmp_path, ["a"]).model.model_copy(update={"conf_thres": 0.6})}), cpus=2).workers[0]
    assert base.restart_key() == thr.restart_key() and base.nms() != thr.nms()
    size = make_plan(_config(tmp_path, ["a"]).model_copy(
        update={"model": _config(tmp_path, ["a"]).model.model_copy(update={"img_size": 320})}), cpus=2).workers[0]
    assert base.restart_key() != size.restart_key()


def test_children_get_the_configurations_own_frozen_sections(tmp_path: Path) -> None:
    cfg = _config(tmp_path, ["a"], "decode: {read_timeout_s: 4}\nreconnect: {initial_s: 0.5}")
    plan = make_plan(cfg, cpus=2)
    (src,) = plan.decoders[0].sources  # what the decoder process reads the camera with
    assert src.camera is cfg.cameras[0] and src.timeouts is cfg.decode
    assert src.reconnect is cfg.reconnect and src.ring is cfg.ring
    assert (src.camera_id, src.read_timeout_s, src.backoff_initial_s, src.max_width) == ("a", 4, 0.5, 1920)
    (worker,) = plan.workers
    assert worker.model is cfg.model and worker.batching is cfg.batching


def test_worker_side_camera_keys_do_not_restart_the_decoder(tmp_path: Path) -> None:
    base = make_plan(_config(tmp_path, ["a"], "tracking: {enabled: true}"), cpus=2).decoders[0]
    cfg = _config(tmp_path, ["a"], "tracking: {enabled: true}")
    changed = cfg.model_copy(update={"cameras": (cfg.cameras[0].model_copy(update={"detect_every": 3,
                                                                                    "max_fps": 5.0}),)})
    other = make_plan(changed, cpus=2).decoders[0]
    assert other.restart_key() == base.restart_key()  # applied live (max_fps by the decoder, the rest by the worker)
    rtsp = changed.model_copy(update={"cameras": (cfg.cameras[0].model_copy(update={"rtsp_transport": "udp"}),)})
    assert make_plan(rtsp, cpus=2).decoders[0].restart_key() != base.restart_key()
