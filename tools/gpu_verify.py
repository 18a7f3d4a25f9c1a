#!/usr/bin/env python3
"""The GPU verification script: one prepared run on a device machine, within a time budget.

    python3 tools/gpu_verify.py [--out DIR] [--budget 520] [--resume [FILE]] [--dry-run] [--only STAGE,...]

Stages, most important first (``STAGES``, each with its own budget; 520 s in all by default):
probe (GPU, driver, libraries, NVDEC); e2e (the daemon with N paced 1080p30 file cameras on the
GPU: N grows with the device feed and NVDEC until p99 capture-to-publish > 200 ms or drops > 1 %,
then the same N with the host feed, see gpu_verify_search); inference (yolov5s-shaped FP16 at
batch 32/64, eager vs CUDA graphs, and the daemon's TorchBackend and GraphRunner); kernel (the
CUDA preprocessing kernel bit for bit against the CPU path on real decoded 1080p frames, then
its frames/s); bandwidth (H2D pageable, registered ring, pinned); nms; nvdec (decode rate with
several sessions); gpu_tests (the ``gpu``-marked tests, with what is left).

Each stage runs in its own process group (``--stage NAME``), under its own time limit, so a
stage that hangs or crashes costs only its budget; the parent imports no torch and never
initialises CUDA. Every stage writes exactly one JSON line, to stdout and to
``DIR/gpu_verify.jsonl`` as soon as it ends, so a run killed from outside still returns what
finished: ``{"stage", "status": ok|skipped|error|timeout, "seconds", "budget_s", "reason"?, ...}``.
A stage that needs something missing (no GPU, no CuPy, no NVDEC) reports ``skipped`` with the
reason. ``--dry-run`` runs every stage's checks and no measurement: on a machine without a GPU
every GPU stage reports why it would be skipped, and the exit status is 0. The exit status is 1
only when a stage ended in ``error`` or ``timeout``.

Resuming: ``--resume`` reads ``DIR/gpu_verify.jsonl`` (or ``--resume FILE``, e.g. the file an
earlier device call brought back, carried into the tree) before anything is written. A stage
recorded ``ok`` there is not run again: its line is copied into the new file, marked
``"resumed": true``. Every other stage runs, and gets its last earlier record (a timed-out e2e
stage continues its search from the runs it recorded).

On the device machine (docs/gpu-verification.md has the exact ``run`` command)::

    ../shared/device/wheels.sh           # here, once: av, pyzmq, pydantic wheels into .whl/
    # carry .whl and .fixtures; the command installs the wheels, then runs this script
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TOOLS = Path(__file__).resolve().parent
REPO = TOOLS.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # the device machine runs from a copy of the tree, not an install
if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))

from gpu_verify_common import RESULT_MARK, StageContext, run_stage_here  # noqa: E402

#: (name, budget in seconds, minimum worth starting with), in the order they run; the last one
#: (budget 0) takes what is left. The fixed budgets add up to 432 s of the default 520.
STAGES: tuple[tuple[str, float, float], ...] = (
    ("probe", 20, 5),
    ("e2e", 240, 90),
    ("inference", 55, 25),
    ("kernel", 35, 15),
    ("bandwidth", 25, 10),
    ("nms", 12, 5),
    ("nvdec", 45, 20),
    ("gpu_tests", 0, 30),
)
GRACE_S = 15.0  # beyond its budget before a stage's process group is killed
DEFAULT_BUDGET_S = 520.0  # with the grace and the wheel install, within 9 minutes of a 10-minute command
JSONL = "gpu_verify.jsonl"


def _default_out() -> Path:
    return Path(os.environ.get("OUT") or "/tmp/gpu_verify_out")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=None, help="where gpu_verify.jsonl goes (default $OUT, else "
                   "/tmp/gpu_verify_out)")
    p.add_argument("--work", type=Path, default=Path("/tmp/gpu_verify_work"), help="scratch folder (clips, "
                   "weights, configurations)")
    p.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, help="seconds for the whole run")
    p.add_argument("--dry-run", action="store_true", help="check every stage's requirements, measure nothing")
    p.add_argument("--only", default="", help="comma-separated stage names to run (default: all)")
    p.add_argument("--resume", nargs="?", type=Path, const=True, default=None, metavar="FILE",
                   help=f"skip the stages recorded ok in DIR/{JSONL} (or in FILE, from an earlier call)")
    p.add_argument("--e2e-ladder", default="", help="the end-to-end stage's search: START,STEP,MAX,RESOLUTION "
                   "cameras (default: the profile's, 160,64,320,16 on a GPU)")
    p.add_argument("--cpu-smoke", action="store_true", help="media stages (nvdec, e2e) with a small CPU profile: "
                   "checks this harness on a machine without a GPU")
    p.add_argument("--stage", default=None, help=argparse.SUPPRESS)  # internal: run one stage in this process
    p.add_argument("--stage-budget", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--prior", type=Path, default=None, help=argparse.SUPPRESS)  # internal: the stage's earlier record
    return p


def _emit(record: dict[str, Any], out: Path) -> None:
    line = json.dumps(record, sort_keys=False, default=str)
    print(line, flush=True)
    with (out / JSONL).open("a") as f:
        f.write(line + "\n")


def load_records(path: Path) -> list[dict[str, Any]]:
    """The stage records of a gpu_verify.jsonl, in order; a missing file is empty, and a line that
    is not a record (cut off by a kill) is left out."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("stage"), str):
            records.append(record)
    return records


def resume_plan(records: Sequence[dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """(the stages done: stage -> its last ok record; the rest: stage -> its last record, the
    prior a rerun of that stage continues from)."""
    done: dict[str, dict[str, Any]] = {}
    last: dict[str, dict[str, Any]] = {}
    for r in records:
        last[r["stage"]] = r
        if r.get("status") == "ok":
            done[r["stage"]] = r
    return done, {name: r for name, r in last.items() if name not in done}


def _tail(text: str, n: int = 1500) -> str:
    return text[-n:] if len(text) > n else text


def _run_child(name: str, budget: float, args: argparse.Namespace, prior: dict[str, Any] | None) -> dict[str, Any]:
    """Run stage ``name`` in its own process group; its result, or a timeout/crash record."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--stage", name, "--stage-budget", f"{budget:.1f}",
           "--out", str(args.out), "--work", str(args.work), "--e2e-ladder", args.e2e_ladder]
    if prior is not None:
        path = args.work / f"prior_{name}.json"
        path.write_text(json.dumps(prior, default=str))
        cmd += ["--prior", str(path)]
    if args.dry_run:
        cmd.append("--dry-run")
    if args.cpu_smoke:
        cmd.append("--cpu-smoke")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True, cwd=REPO)
    timed_out = False
    try:
        stdout, stderr = proc.communicate(timeout=budget + GRACE_S)
    except subprocess.TimeoutExpired:
        timed_out = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
    with contextlib.suppress(ProcessLookupError, PermissionError):  # what the stage left in its group
        os.killpg(proc.pid, signal.SIGKILL)
    results = [line[len(RESULT_MARK):] for line in stdout.splitlines() if line.startswith(RESULT_MARK)]
    last: dict[str, Any] = json.loads(results[-1]) if results else {}
    if timed_out:
        return {**last, "stage": name, "status": "timeout", "partial": bool(last),
                "reason": f"killed after {budget + GRACE_S:.0f} s", "stderr_tail": _tail(stderr)}
    if not results or last.get("status") == "partial":
        return {**last, "stage": name, "status": "error", "reason": f"the stage process exited {proc.returncode} "
                "without a result", "stderr_tail": _tail(stderr)}
    if last.get("status") == "error":
        last.setdefault("stderr_tail", _tail(stderr))
    return last


def summary_table(records: Sequence[dict[str, Any]]) -> str:
    """One line per stage: status, seconds, and the headline or the reason."""
    lines = [f"{'stage':<10} {'status':<8} {'s':>6}  detail", "-" * 78]
    for r in records:
        detail = ("(earlier call) " if r.get("resumed") else "") + str(r.get("headline") or r.get("reason") or "")
        lines.append(f"{r['stage']:<10} {r['status']:<8} {r.get('seconds', 0):>6.1f}  {detail[:600]}")
    return "\n".join(lines)


def run_all(args: argparse.Namespace) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = only - {name for name, _, _ in STAGES}
    if unknown:
        print(f"unknown stage(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    done: dict[str, dict[str, Any]] = {}
    priors: dict[str, dict[str, Any]] = {}
    if args.resume is not None:
        source = args.out / JSONL if args.resume is True else Path(args.resume)
        done, priors = resume_plan(load_records(source))  # read before the file is started again
        print(f"resuming from {source}: done {', '.join(done) or 'nothing'}", flush=True)
    (args.out / JSONL).unlink(missing_ok=True)
    t_start = time.monotonic()
    records: list[dict[str, Any]] = []
    for name, budget, minimum in STAGES:
        if only and name not in only:
            continue
        if name in done:
            record = {**done[name], "resumed": True}
            records.append(record)
            _emit(record, args.out)
            continue
        left = args.budget - (time.monotonic() - t_start)
        allowed = left - 5 if budget == 0 else min(budget, left - 5)
        t0 = time.monotonic()
        if allowed < minimum and not args.dry_run:
            record = {"stage": name, "status": "skipped", "reason": f"out of time ({left:.0f} s left of the budget)"}
        else:
            record = _run_child(name, max(allowed, minimum), args, priors.get(name))
        record = {"stage": name, **{k: v for k, v in record.items() if k != "stage"},
                  "seconds": round(time.monotonic() - t0, 1), "budget_s": round(max(allowed, 0), 1)}
        records.append(record)
        _emit(record, args.out)
    table = summary_table(records)
    print("\n" + table, flush=True)
    (args.out / "gpu_verify_summary.txt").write_text(table + "\n")
    failed = [r["stage"] for r in records if r["status"] in ("error", "timeout")]
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.out = (args.out or _default_out()).resolve()
    if args.stage is not None:
        ladder = tuple(int(n) for n in args.e2e_ladder.split(",") if n.strip())
        if ladder and len(ladder) != 4:
            print("--e2e-ladder: expected START,STEP,MAX,RESOLUTION", file=sys.stderr)
            return 2
        prior = json.loads(args.prior.read_text()) if args.prior is not None else None
        ctx = StageContext(name=args.stage, budget_s=args.stage_budget, out=args.out, work=args.work,
                           dry_run=args.dry_run, cpu_smoke=args.cpu_smoke,
                           e2e_ladder=(ladder[0], ladder[1], ladder[2], ladder[3]) if ladder else None, prior=prior)
        return run_stage_here(ctx)
    return run_all(args)


if __name__ == "__main__":
    sys.exit(main())
