"""Resource probes for the soak test (tools/soak.py): what a running daemon holds, read from /proc.

``sample_processes(pid)`` reads the supervisor and every descendant (found through the parent pid
in ``/proc/<pid>/stat``): resident memory (``VmRSS``, ``RssAnon``), open file descriptors and the
process name, which gives the role (children name themselves ``sd-decoder-<cam>`` and
``sd-worker-<dev>``) and the CPU time used so far. ``shm_usage(pid)`` counts the supervisor's
``/dev/shm/streamdet_<pid>_*`` rings; ``machine_busy_s()`` is the CPU time the whole machine has
spent busy, so that the soak can tell how much CPU other processes took from the daemon (on a
shared machine, the latency figures mean little without it). Linux only; a process that exits
while it is read is left out rather than failing.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

PROC = Path("/proc")
SHM = Path("/dev/shm")
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcSample:
    """One process at one moment."""

    pid: int
    ppid: int
    name: str
    role: str
    rss_kb: int
    anon_kb: int
    fds: int
    cpu_s: float  # user + system CPU seconds since the process started

    def as_dict(self) -> dict[str, int | str]:
        return asdict(self)


def role_of(name: str, is_root: bool) -> str:
    """``supervisor``, ``decoder``, ``worker`` or ``other`` (e.g. multiprocessing's resource tracker)."""
    if is_root:
        return "supervisor"
    if name.startswith("sd-decoder"):
        return "decoder"
    if name.startswith("sd-worker"):
        return "worker"
    return "other"


def _stat(pid: int, proc: Path) -> tuple[str, int, float] | None:
    """(name, ppid, CPU seconds) of ``pid``, or None when it is gone or a zombie (no memory, no fds)."""
    try:
        text = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    name = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return name, int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICKS


def machine_busy_s(proc: Path = PROC) -> float:
    """CPU seconds all CPUs have spent busy (not idle, not waiting for I/O) since boot."""
    fields = [int(v) for v in (proc / "stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / _TICKS  # guest time is already counted in user time


def own_cpu_s() -> float:
    """CPU seconds this process has used."""
    t = os.times()
    return t.user + t.system


def descendants(root: int, proc: Path = PROC) -> dict[int, tuple[str, int, float]]:
    """Every live descendant of ``root``: pid -> (name, ppid, CPU seconds)."""
    table: dict[int, tuple[str, int, float]] = {}
    for entry in proc.iterdir():
        if entry.name.isdigit():
            info = _stat(int(entry.name), proc)
            if info is not None:
                table[int(entry.name)] = info
    found: dict[int, tuple[str, int, float]] = {}
    frontier = {root}
    while frontier:
        kids = {pid for pid, (_, ppid, _) in table.items() if ppid in frontier and pid not in found}
        found.update({pid: table[pid] for pid in kids})
        frontier = kids
    return found


def _memory_kb(pid: int, proc: Path) -> tuple[int, int] | None:
    """(VmRSS, RssAnon) in kB, or None when the process is gone."""
    values = {"VmRSS": 0, "RssAnon": 0}
    try:
        with open(proc / str(pid) / "status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in values:
                    values[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return values["VmRSS"], values["RssAnon"]


def _fd_count(pid: int, proc: Path) -> int | None:
    try:
        return len(os.listdir(proc / str(pid) / "fd"))
    except OSError:
        return None


def sample_processes(root: int, proc: Path = PROC) -> list[ProcSample]:
    """The supervisor ``root`` and its descendants; processes that vanish meanwhile are skipped."""
    own = _stat(root, proc)
    if own is None:
        return []
    members = {root: own, **descendants(root, proc)}
    out = []
    for pid, (name, ppid, cpu) in sorted(members.items()):
        mem, fds = _memory_kb(pid, proc), _fd_count(pid, proc)
        if mem is None or fds is None:
            continue
        out.append(ProcSample(pid, ppid, name, role_of(name, pid == root), mem[0], mem[1], fds, round(cpu, 2)))
    return out


def shm_usage(supervisor_pid: int, shm: Path = SHM) -> tuple[int, int]:
    """(segment count, total bytes) of ``/dev/shm/streamdet_<pid>_*``."""
    count = size = 0
    for entry in shm.glob(f"streamdet_{supervisor_pid}_*"):
        try:
            size += entry.stat().st_size
        except OSError:
            continue
        count += 1
    return count, size
