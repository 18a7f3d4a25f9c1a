"""Processes as /proc shows them, without psutil: children, descendants, names, memory, fds.

A pid alone is not an identity (the kernel recycles pids), so processes are remembered as
``(pid, start time)`` pairs: :func:`alive` is true only for that very process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcInfo:
    """One process: its name (``comm``), state letter, parent pid and start time (clock ticks)."""

    pid: int
    comm: str
    state: str
    ppid: int
    start: int


def proc_info(pid: int | str) -> ProcInfo | None:
    """What /proc/<pid>/stat says, or None when there is no such process."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    comm = text[text.index("(") + 1 : text.rindex(")")]
    rest = text[text.rindex(")") + 2 :].split()
    return ProcInfo(int(pid), comm, rest[0], int(rest[1]), int(rest[19]))


def all_processes() -> list[ProcInfo]:
    out = []
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            info = proc_info(entry.name)
            if info is not None:
                out.append(info)
    return out


def children(pid: int) -> dict[int, ProcInfo]:
    """The live (not zombie) direct children of ``pid``."""
    return {p.pid: p for p in all_processes() if p.ppid == pid and p.state != "Z"}


def descendants(pid: int) -> dict[int, ProcInfo]:
    """Every live process below ``pid`` (children, their children, ...)."""
    procs = [p for p in all_processes() if p.state != "Z"]
    found: dict[int, ProcInfo] = {}
    frontier = {pid}
    while frontier:
        new = {p.pid: p for p in procs if p.ppid in frontier and p.pid not in found}
        found.update(new)
        frontier = set(new)
    return found


def alive(info: ProcInfo) -> bool:
    """That very process (same start time) still exists and is not a zombie."""
    now = proc_info(info.pid)
    return now is not None and now.state != "Z" and now.start == info.start


def rss_kib(pid: int) -> int:
    """Resident memory (VmRSS) of ``pid`` in KiB."""
    for line in (PROC / str(pid) / "status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise LookupError(f"no VmRSS for pid {pid}")


def open_fd_count() -> int:
    """How many file descriptors this process has open (the one listing them included, every time)."""
    return len(os.listdir("/proc/self/fd"))
