"""Drop and latency accounting from synthetic message lists and naive-loop logs."""

from __future__ import annotations

import math

import pytest

from streamdet.bench.accounting import (
    LatencySummary,
    TrialResult,
    account_daemon_window,
    account_schedule,
    count_kept,
    field_losses,
    is_kept,
)
from streamdet.pipeline.decode.pacing import Schedule

FPS = 25.0
T0 = 1_700_000_000.0


def msg(cam: str, frame: int, *, lat_ms: float = 30.0, dropped: int = 0, slip: float = 0.0) -> dict:
    """A detection message of a paced camera whose frame ``frame`` was captured on schedule (+ slip)."""
    cap = T0 + frame / FPS + slip
    return {"type": "detections", "camera": cam, "seq": frame, "frame": frame, "ts_capture": cap,
            "ts_publish": cap + lat_ms / 1000.0, "dropped": dropped}


def judge(messages: list[dict], cams: list[str], rate: float, *, clip: int = 250, t_start: float = T0,
          t_end: float = T0 + 10.0, stats: list[dict] | None = None, bound: float = 200.0) -> TrialResult:
    return account_daemon_window(messages, cams, rate=rate, fps=FPS, clip_frames=clip, t_start=t_start, t_end=t_end,
                                 stats=stats or [], latency_bound_ms=bound)


def test_kept_frames_follow_the_rate_and_restart_with_each_loop() -> None:
    assert [k for k in range(12) if is_kept(k, 5, FPS, 250)] == [0, 5, 10]
    assert all(is_kept(k, 25, FPS, 250) for k in range(30))
    # a 22-frame clip: 0, 5, 10, 15, 20 in each pass, the pass restarting at k = 22
    assert [k for k in range(44) if is_kept(k, 5, FPS, 22)] == [0, 5, 10, 15, 20, 22, 27, 32, 37, 42]
    assert count_kept(0, 43, 5, FPS, 22) == 10
    assert count_kept(7, 3, 5, FPS, 22) == 0


def test_a_perfect_camera_drops_nothing() -> None:
    msgs = [msg(c, k, lat_ms=20 + k % 7) for c in ("a", "b") for k in range(0, 250, 5)]
    r = judge(msgs, ["a", "b"], rate=5)
    assert (r.expected, r.published, r.dropped) == (100, 100, 0)
    assert r.drop_pct == 0.0
    assert 19.99 <= r.latency.p50 <= r.latency.p99 <= 26.01
    assert r.passed


def test_missing_frames_count_as_dropped_with_or_without_the_dropped_field() -> None:
    keep = [k for k in range(0, 250, 5) if k not in (50, 55, 120)]
    # 50 and 55 skipped by the ring (reported in the next message's `dropped`); 120 lost in transport
    msgs = [msg("a", k, dropped=2 if k == 60 else 0) for k in keep]
    r = judge(msgs, ["a"], rate=5)
    assert r.expected == 50 and r.published == 47 and r.dropped == 3
    assert r.drop_reasons["missing_frames"] == 3
    assert r.drop_pct == pytest.approx(6.0)
    assert not r.passed


def test_the_dropped_field_counts_when_indices_do_not_show_it() -> None:
    # at 25 fps: frames 0..9 all present, but message 5 says 2 frames were skipped before it (e.g.
    # a reopen that kept numbering): the larger of the two counts wins
    msgs = [msg("a", k, dropped=2 if k == 5 else 0) for k in range(10)]
    r = judge(msgs, ["a"], rate=25)
    assert (r.expected, r.published) == (12, 10)


def test_a_decoder_falling_behind_counts_as_drops() -> None:
    # frame indices contiguous, but from frame 100 on captured 1 s late: the paced decoder re-anchored
    msgs = [msg("a", k, slip=0.0 if k < 100 else 1.0) for k in range(0, 200)]
    r = judge(msgs, ["a"], rate=25)
    assert r.published == 200
    assert r.dropped == 25  # one second of a 25 fps camera
    assert r.drop_reasons["capture_slip"] == 25 and r.drop_reasons["missing_frames"] == 0
    # jitter below one frame period is not a drop
    jitter = [msg("a", k, slip=0.03 if k == 199 else 0.0) for k in range(200)]
    assert judge(jitter, ["a"], rate=25).dropped == 0


def test_a_silent_camera_lost_everything_and_the_window_filters() -> None:
    msgs = [msg("a", k) for k in range(0, 500, 5)]  # 20 s of camera a, nothing from b
    r = judge(msgs, ["a", "b"], rate=5, t_start=T0 + 2.0, t_end=T0 + 12.0)
    a_expected = 50  # frames 50..295 of a, step 5
    assert r.published == a_expected
    assert r.expected == a_expected + 50  # b: 10 s x 5 fps
    assert r.drop_pct == pytest.approx(50.0)


def test_latency_percentiles_and_bound() -> None:
    msgs = [msg("a", k, lat_ms=250.0 if k % 50 == 0 else 40.0) for k in range(250)]  # 2 % slow frames
    r = judge(msgs, ["a"], rate=25)
    assert r.dropped == 0
    assert r.latency.p50 == pytest.approx(40.0)
    assert r.latency.p99 > 200.0 and r.latency.max == pytest.approx(250.0)
    assert not r.passed
    assert judge(msgs, ["a"], rate=25, bound=300.0).passed


def test_stats_losses_raise_the_drop_count_but_max_fps_skips_do_not() -> None:
    msgs = [msg("a", k) for k in range(0, 250, 5)]
    inside = {"type": "stats", "ts": T0 + 6.0, "interval_s": 2.0,
              "cameras": {"a": {"drops": {"overwritten": 3, "max_fps": 40, "behind": 1}}}}
    outside = {"type": "stats", "ts": T0 + 11.0, "interval_s": 2.0,
               "cameras": {"a": {"drops": {"overwritten": 99}}}}
    legacy = {"type": "stats", "ts": T0 + 8.0, "interval_s": 2.0, "cameras": {"a": {"dropped": 7}}}
    r = judge(msgs, ["a"], rate=5, stats=[inside, outside, legacy])
    assert r.published == 50 and r.dropped == 4
    assert r.drop_reasons == {"missing_frames": 0, "capture_slip": 0, "stats_overwritten": 3, "stats_max_fps": 40,
                              "stats_behind": 1}


def test_a_reopened_source_restarting_frame_numbers_is_accounted_per_segment() -> None:
    first = [msg("a", k) for k in range(0, 100, 5)]  # 0..95
    second = [dict(msg("a", k), ts_capture=T0 + 5.0 + k / FPS, ts_publish=T0 + 5.03 + k / FPS)
              for k in range(0, 100, 5) if k != 40]
    r = judge(first + second, ["a"], rate=5)
    assert r.published == 39 and r.expected == 40


def decoder_stream(cam: str, *, clip: int, rate: float, passes: int, lost: frozenset[int] = frozenset(),
                   lat_ms: float = 25.0) -> list[dict]:
    """The detection messages of one paced looping file camera at ``max_fps = rate``, numbered the
    way the decoder numbers them: ``frame`` counts every decoded frame across the loop passes (the
    ``max_fps`` skips included), pts restarts each pass with a fresh max_fps schedule, capture is on
    the wall-clock schedule, and ``dropped`` counts every frame not published since the camera's
    previous message (skips, and the kept frames in ``lost``), as the worker reports it."""
    out: list[dict] = []
    last_published = -1
    for p in range(passes):
        sched = Schedule(FPS, rate if rate < FPS else None, None)
        for j in range(clip):
            k = p * clip + j
            if not sched.keep(j / FPS) or k in lost:
                continue
            cap = T0 + k / FPS
            out.append({"type": "detections", "camera": cam, "seq": len(out), "frame": k, "pts": j / FPS,
                        "ts_capture": cap, "ts_publish": cap + lat_ms / 1000.0, "dropped": k - last_published - 1})
            last_published = k
    return out


def stats_stream(cam: str, *, seconds: int, rate: float, **losses: int) -> list[dict]:
    """One stats message per second over ``[T0, T0 + seconds]``: the ``max_fps`` skips of a 25 fps
    source at ``rate`` (intended), and the given losses in the first interval."""
    msgs = []
    for i in range(1, seconds + 1):
        drops = {"overwritten": 0, "max_fps": round(FPS - rate), "behind": 0, "unsent": 0}
        if i == 1:
            drops |= losses
        msgs.append({"type": "stats", "ts": T0 + i, "interval_s": 1.0, "cameras": {cam: {"drops": drops}}})
    return msgs


@pytest.mark.parametrize(("rate", "clip"), [(5.0, 250), (5.0, 22), (10.0, 22), (7.0, 37)])
def test_a_loss_free_stream_at_max_fps_drops_nothing(rate: float, clip: int) -> None:
    # the issue: every message says 4 frames were dropped (the max_fps skips) and the old
    # accounting expected the source's 25 fps
    msgs = decoder_stream("a", clip=clip, rate=rate, passes=math.ceil(10 * FPS / clip) + 1)
    assert any(m["dropped"] > 0 for m in msgs)
    r = judge(msgs, ["a"], rate, clip=clip, stats=stats_stream("a", seconds=10, rate=rate))
    in_window = [m for m in msgs if m["ts_capture"] < T0 + 10.0]
    assert r.published == len(in_window)
    assert r.expected == r.published and r.dropped == 0
    assert r.drop_reasons["missing_frames"] == 0 and r.drop_reasons["stats_max_fps"] > 0
    assert r.passed


def test_the_issue_trial_expects_what_was_due_at_5_fps() -> None:
    # one camera, a 5 s window at 5 fps of the 22-frame clip the --quick bench renders
    msgs = decoder_stream("cam0", clip=22, rate=5.0, passes=7)
    r = judge(msgs, ["cam0"], 5.0, clip=22, t_start=T0 + 1.0, t_end=T0 + 6.0)
    # kept frames of each 22-frame pass: 0, 5, 10, 15, 20 (0.88 s) -> 28 or 29 in 5 s, not 121
    assert r.expected == r.published == len([m for m in msgs if T0 + 1.0 <= m["ts_capture"] < T0 + 6.0])
    assert 27 <= r.expected <= 30
    assert r.passed


def test_real_drops_at_max_fps_count_and_skips_do_not() -> None:
    lost = frozenset({50, 55, 120, 255})  # kept frames; 255 is frame 5 of the clip's second pass
    msgs = decoder_stream("a", clip=250, rate=5.0, passes=2, lost=lost)
    after_gap = next(m for m in msgs if m["frame"] == 60)
    assert after_gap["dropped"] == 14  # frames 46..59: 12 skips and the 2 lost kept frames
    r = judge(msgs, ["a"], 5.0, t_end=T0 + 20.0)
    assert r.published == 50 + 50 - len(lost) and r.expected == 100
    assert r.dropped == len(lost) and r.drop_reasons["missing_frames"] == len(lost)
    assert r.drop_pct == pytest.approx(4.0) and not r.passed


def test_stats_losses_at_max_fps_are_counted_once() -> None:
    # the worker lost frames 50 and 55 to ring overwrites and the decoder was behind for 120: the
    # stats say so too; both sources agree, so they are not added up
    msgs = decoder_stream("a", clip=250, rate=5.0, passes=1, lost=frozenset({50, 55, 120}))
    stats = stats_stream("a", seconds=9, rate=5.0, overwritten=2, behind=1)
    r = judge(msgs, ["a"], 5.0, stats=stats)
    assert r.dropped == 3
    assert (r.drop_reasons["stats_overwritten"], r.drop_reasons["stats_behind"]) == (2, 1)
    # losses only the stats see (here: more overwrites than index gaps) still count
    r = judge(decoder_stream("a", clip=250, rate=5.0, passes=1), ["a"], 5.0,
              stats=stats_stream("a", seconds=9, rate=5.0, overwritten=3, unsent=1))
    assert r.published == 50 and r.dropped == 4 and not r.passed


def test_the_dropped_field_beyond_the_skips_is_a_loss() -> None:
    # kept frames all present, but the message of frame 60 reports 2 frames more than the 4 skips
    # before it (e.g. numbering kept across a reopen)
    msgs = decoder_stream("a", clip=250, rate=5.0, passes=1)
    for m in msgs:
        if m["frame"] == 60:
            m["dropped"] += 2
    r = judge(msgs, ["a"], 5.0)
    assert (r.expected, r.published, r.dropped) == (52, 50, 2)


def test_field_losses_subtracts_the_intended_skips() -> None:
    # 25 -> 5 fps, previous message at frame 0: frames 1..9 between, 8 of them skips
    assert field_losses(0, {"frame": 10, "dropped": 9}, 5.0, FPS, 250) == 1  # frame 5 lost
    assert field_losses(0, {"frame": 5, "dropped": 4}, 5.0, FPS, 250) == 0
    assert field_losses(0, {"frame": 5}, 5.0, FPS, 250) == 0  # no field: nothing to add
    assert field_losses(3, {"frame": 4, "dropped": 2}, 25.0, FPS, 250) == 2  # at the source rate all count


def test_kept_frames_follow_the_decoder_rule_at_other_rates() -> None:
    # 25 -> 10 fps: the decoder keeps a frame once its pts reaches the next 0.1 s step
    assert [k for k in range(11) if is_kept(k, 10, FPS, 250)] == [0, 3, 5, 8, 10]
    assert count_kept(0, 249, 10, FPS, 250) == 100
    with pytest.raises(ValueError, match="clip_frames"):
        is_kept(3, 5, FPS, 0)


def test_naive_schedule_accounting() -> None:
    t0 = 100.0
    # camera 0 processed every kept frame 0.05 s after it was due; camera 1 missed frames 30 and 35
    records = {0: [(k, t0 + k / FPS + 0.05) for k in range(0, 75, 5)],
               1: [(k, t0 + k / FPS + 0.05) for k in range(0, 75, 5) if k not in (30, 35)]}
    r = account_schedule(records, 2, t0=t0, rate=5, fps=FPS, clip_frames=250, t_start=t0 + 1.0, t_end=t0 + 2.0)
    # due in [1 s, 2 s): frames 25..49 -> kept 25, 30, 35, 40, 45 per camera
    assert r.expected == 10 and r.published == 8 and r.dropped == 2
    assert r.latency.p99 == pytest.approx(50.0)
    assert r.n == 2 and r.window_s == pytest.approx(1.0)
    # a frame the detection rate skips is neither expected nor published, on this side too
    records[1].append((31, t0 + 31 / FPS + 0.05))
    r = account_schedule(records, 2, t0=t0, rate=5, fps=FPS, clip_frames=250, t_start=t0 + 1.0, t_end=t0 + 2.0)
    assert (r.expected, r.published) == (10, 8)


def test_trial_result_pass_rule_and_json() -> None:
    lat = LatencySummary.from_ms([10.0, 20.0, 30.0])
    assert TrialResult(1, 5, 10, expected=200, published=199, latency=lat).passed  # 0.5 %
    assert not TrialResult(1, 5, 10, expected=100, published=99, latency=lat).passed  # exactly 1 %: not < 1
    assert not TrialResult(1, 5, 10, expected=0, published=0, latency=LatencySummary.from_ms([])).passed
    d = TrialResult(2, 25, 10, expected=100, published=90, latency=lat).to_dict()
    assert d["dropped"] == 10 and d["drop_pct"] == 10.0 and d["passed"] is False
    assert d["latency_ms"]["p50"] == 20.0 and d["latency_ms"]["count"] == 3


def tracked(msgs: list[dict], every: int) -> list[dict]:
    """The same messages as a camera with ``detect_every = every`` publishes them: every frame, the
    detector's one in ``every`` with ``inferred: true``, the others ``inferred: false``."""
    return [dict(m, inferred=i % every == 0) for i, m in enumerate(msgs)]


def tracking_stats(cam: str, msgs: list[dict], every: int, *, seconds: int, rate: float) -> list[dict]:
    """Stats of such a camera, one per second: ``inferred``/``tracked_only`` split, max_fps skips only."""
    out = []
    for i in range(1, seconds + 1):
        in_interval = [m for m in msgs if T0 + i - 1 <= m["ts_capture"] < T0 + i]
        only = sum(1 for m in in_interval if not m["inferred"])
        entry = {"published": len(in_interval), "inferred": len(in_interval) - only, "tracked_only": only,
                 "drops": {"overwritten": 0, "max_fps": round(FPS - rate), "behind": 0, "unsent": 0, "torn": 0}}
        out.append({"type": "stats", "ts": T0 + i, "interval_s": 1.0, "cameras": {cam: entry}})
    return out


@pytest.mark.parametrize(("rate", "every"), [(25.0, 3), (5.0, 3), (25.0, 1)])
def test_tracked_only_frames_are_published_not_lost(rate: float, every: int) -> None:
    msgs = tracked(decoder_stream("a", clip=250, rate=rate, passes=1), every)
    assert any(not m["inferred"] for m in msgs) == (every > 1)
    r = judge(msgs, ["a"], rate, stats=tracking_stats("a", msgs, every, seconds=10, rate=rate))
    in_window = [m for m in msgs if m["ts_capture"] < T0 + 10.0]
    assert r.published == r.expected == len(in_window) and r.dropped == 0
    assert "stats_tracked_only" not in r.drop_reasons and r.passed


def test_a_lost_tracked_only_frame_is_still_a_loss() -> None:
    # frames 4 and 5 (both tracked-only with detect_every 3) never arrive: dropped like any frame
    msgs = tracked(decoder_stream("a", clip=250, rate=25.0, passes=1), 3)
    assert not msgs[4]["inferred"] and not msgs[5]["inferred"]
    r = judge(msgs[:4] + msgs[6:], ["a"], 25.0)
    assert r.dropped == 2 and r.drop_reasons["missing_frames"] == 2
