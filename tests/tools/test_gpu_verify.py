"""tools/gpu_verify.py: the dry run (every stage's checks, each GPU stage skipped with its reason on a
machine without a GPU, exit 0) and the result lines of a stage that fails or is skipped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"
sys.path.insert(0, str(TOOLS))

import gpu_verify  # noqa: E402
import gpu_verify_common  # noqa: E402
import gpu_verify_probe  # noqa: E402


@pytest.mark.slow
def test_dry_run_reports_every_stage_and_exits_0(tmp_path: Path) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    proc = subprocess.run([sys.executable, str(TOOLS / "gpu_verify.py"), "--dry-run", "--out", str(out),
                           "--work", str(work)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = [json.loads(line) for line in (out / "gpu_verify.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in records] == [name for name, _, _ in gpu_verify.STAGES]
    probe = records[0]
    assert probe["status"] == "ok" and "discovery" in probe and "nvdec" in probe and probe["headline"]
    for r in records[1:]:  # a GPU stage: skipped here for want of a GPU (on a GPU machine: "dry run")
        assert r["status"] == "skipped" and r["reason"], r
        assert "budget_s" in r and "seconds" in r
    assert (out / "gpu_verify_summary.txt").read_text().splitlines()[0].startswith("stage")
    for line in proc.stdout.splitlines()[:len(records)]:  # the same lines on stdout, as they finish
        assert json.loads(line)["stage"] in {r["stage"] for r in records}


def _one_stage(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
               stage: object) -> dict:
    monkeypatch.setattr(gpu_verify_probe, "probe_stage", stage)
    ctx = gpu_verify_common.StageContext(name="probe", budget_s=10, out=tmp_path, work=tmp_path)
    assert gpu_verify_common.run_stage_here(ctx) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(gpu_verify_common.RESULT_MARK)]
    assert len(lines) == 1
    return json.loads(lines[0][len(gpu_verify_common.RESULT_MARK):])


def test_a_stage_that_raises_is_an_error_record(monkeypatch, capsys, tmp_path: Path) -> None:
    def broken(ctx: object) -> dict:
        raise ValueError("boom")

    record = _one_stage(monkeypatch, capsys, tmp_path, broken)
    assert (record["stage"], record["status"], record["reason"]) == ("probe", "error", "ValueError: boom")
    assert "Traceback" in record["traceback"]


def test_a_stage_that_skips_names_the_reason(monkeypatch, capsys, tmp_path: Path) -> None:
    def missing(ctx: object) -> dict:
        raise gpu_verify_common.Skip("no CuPy")

    assert _one_stage(monkeypatch, capsys, tmp_path, missing) == {"stage": "probe", "status": "skipped",
                                                                  "reason": "no CuPy"}


def test_summary_table_lists_each_stage() -> None:
    table = gpu_verify.summary_table([{"stage": "probe", "status": "ok", "seconds": 1.0, "headline": "H200"},
                                      {"stage": "nms", "status": "skipped", "seconds": 0.1, "reason": "no GPU"}])
    lines = table.splitlines()
    assert lines[2].split()[:3] == ["probe", "ok", "1.0"] and lines[2].endswith("H200")
    assert lines[3].split()[:2] == ["nms", "skipped"] and lines[3].endswith("no GPU")


# -- resuming -------------------------------------------------------------------------------------


def _write(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


EARLIER = [
    {"stage": "probe", "status": "ok", "headline": "H100", "seconds": 3.0},
    {"stage": "e2e", "status": "timeout", "partial": True, "runs": [{"phase": "grow", "cameras": 160}]},
    {"stage": "inference", "status": "error", "reason": "boom"},
    {"stage": "kernel", "status": "ok", "headline": "exact"},
    {"stage": "nms", "status": "skipped", "reason": "out of time"},
]


def test_load_records_leaves_out_lines_cut_by_a_kill(tmp_path: Path) -> None:
    path = tmp_path / "gpu_verify.jsonl"
    path.write_text('{"stage": "probe", "status": "ok"}\n[1, 2]\n{"no_stage": 1}\n{"stage": "e2e", "stat')
    assert gpu_verify.load_records(path) == [{"stage": "probe", "status": "ok"}]
    assert gpu_verify.load_records(tmp_path / "missing.jsonl") == []


def test_resume_plan_keeps_the_last_ok_and_hands_the_rest_their_last_record() -> None:
    records = [*EARLIER, {"stage": "inference", "status": "ok", "headline": "second try"},
               {"stage": "e2e", "status": "error", "reason": "later"}]
    done, priors = gpu_verify.resume_plan(records)
    assert set(done) == {"probe", "kernel", "inference"} and done["inference"]["headline"] == "second try"
    assert set(priors) == {"e2e", "nms"} and priors["e2e"]["reason"] == "later"


def _fake_children(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict | None]]:
    calls: list[tuple[str, dict | None]] = []

    def child(name: str, budget: float, args: object, prior: dict | None) -> dict:
        calls.append((name, prior))
        return {"stage": name, "status": "ok", "headline": f"new {name}"}

    monkeypatch.setattr(gpu_verify, "_run_child", child)
    return calls


def test_resume_runs_only_what_is_not_recorded_ok(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _write(out / "gpu_verify.jsonl", EARLIER)
    calls = _fake_children(monkeypatch)
    assert gpu_verify.main(["--resume", "--out", str(out), "--work", str(tmp_path / "w")]) == 0
    stages = [name for name, _, _ in gpu_verify.STAGES]
    assert [name for name, _ in calls] == [s for s in stages if s not in ("probe", "kernel")]
    priors = dict(calls)
    assert priors["e2e"] == EARLIER[1] and priors["inference"] == EARLIER[2] and priors["bandwidth"] is None
    records = gpu_verify.load_records(out / "gpu_verify.jsonl")
    assert [r["stage"] for r in records] == stages  # one line per stage, in order, the old ones included
    by_stage = {r["stage"]: r for r in records}
    assert by_stage["probe"]["resumed"] and by_stage["probe"]["headline"] == "H100"
    assert by_stage["e2e"]["headline"] == "new e2e" and "resumed" not in by_stage["e2e"]
    assert "(earlier call) H100" in (out / "gpu_verify_summary.txt").read_text()
    calls.clear()  # resumed again: everything is ok now
    assert gpu_verify.main(["--resume", "--out", str(out), "--work", str(tmp_path / "w")]) == 0
    assert calls == [] and len(gpu_verify.load_records(out / "gpu_verify.jsonl")) == len(stages)


def test_resume_from_a_file_of_an_earlier_call(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    earlier = tmp_path / "carried" / "gpu_verify.jsonl"
    _write(earlier, EARLIER)
    calls = _fake_children(monkeypatch)
    out = tmp_path / "fresh_out"
    assert gpu_verify.main(["--resume", str(earlier), "--out", str(out), "--work", str(tmp_path / "w"),
                            "--only", "probe,e2e"]) == 0
    assert calls == [("e2e", EARLIER[1])]
    assert [r["stage"] for r in gpu_verify.load_records(out / "gpu_verify.jsonl")] == ["probe", "e2e"]
    assert gpu_verify.load_records(earlier) == EARLIER  # the source is only read


def test_without_resume_every_stage_runs_afresh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _write(out / "gpu_verify.jsonl", EARLIER)
    calls = _fake_children(monkeypatch)
    assert gpu_verify.main(["--out", str(out), "--work", str(tmp_path / "w")]) == 0
    assert [name for name, _ in calls] == [name for name, _, _ in gpu_verify.STAGES]
    assert all(prior is None for _, prior in calls)
    assert not any(r.get("resumed") for r in gpu_verify.load_records(out / "gpu_verify.jsonl"))


def test_the_prior_record_reaches_the_stage(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Parent side: the stage's command names a file holding its prior; child side: ctx.prior is it."""
    seen: dict = {}

    class FakeProc:
        pid = 999_999_999
        returncode = 0

        def __init__(self, cmd: list[str], **kw: object) -> None:
            seen["cmd"] = cmd

        def communicate(self, timeout: float | None = None) -> tuple[str, str]:
            line = gpu_verify_common.RESULT_MARK + json.dumps({"stage": "e2e", "status": "ok"})
            return line + "\n", ""

    monkeypatch.setattr(gpu_verify.subprocess, "Popen", FakeProc)
    args = gpu_verify.build_parser().parse_args(["--out", str(tmp_path), "--work", str(tmp_path)])
    assert gpu_verify._run_child("e2e", 10.0, args, EARLIER[1])["status"] == "ok"
    cmd = seen["cmd"]
    prior_path = Path(cmd[cmd.index("--prior") + 1])
    assert json.loads(prior_path.read_text()) == EARLIER[1]

    def stage(ctx: gpu_verify_common.StageContext) -> dict:
        seen["prior"], seen["ladder"] = ctx.prior, ctx.e2e_ladder
        return {"headline": "ok"}

    monkeypatch.setattr(gpu_verify_probe, "probe_stage", stage)
    assert gpu_verify.main(["--stage", "probe", "--prior", str(prior_path), "--out", str(tmp_path),
                            "--e2e-ladder", "8,8,64,4"]) == 0
    assert seen["prior"] == EARLIER[1] and seen["ladder"] == (8, 8, 64, 4)
    assert gpu_verify.main(["--stage", "probe", "--out", str(tmp_path), "--e2e-ladder", "8,8"]) == 2


def test_stage_budgets_fit_the_default_budget() -> None:
    fixed = sum(budget for _, budget, _ in gpu_verify.STAGES)
    last_name, last_budget, last_min = gpu_verify.STAGES[-1]
    assert last_name == "gpu_tests" and last_budget == 0  # the gpu tests take what is left, last
    assert fixed + last_min + 5 * len(gpu_verify.STAGES) <= gpu_verify.DEFAULT_BUDGET_S
    assert [name for name, _, _ in gpu_verify.STAGES][:3] == ["probe", "e2e", "inference"]
