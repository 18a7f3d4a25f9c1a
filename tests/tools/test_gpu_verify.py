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
