"""A minimal progress bar for long command-line jobs (data generation, val, training data).

Redrawn in place at most ~10 times per second on a terminal; when the stream is not a terminal
(logs, CI), only the final line is written, so logs get one line per job instead of hundreds.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``update(n)`` or ``set(done)`` as work completes; ``close()`` writes the final line."""

    def __init__(self, total: int | None, label: str, stream: TextIO | None = None) -> None:
        self.total, self.label, self.done = total, label, 0
        self.stream = stream if stream is not None else sys.stderr
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = self._last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.set(self.done + n)

    def set(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        if self.live and (now - self._last >= 0.1 or (self.total is not None and done >= self.total)):
            self._last = now
            self.stream.write("\r" + self.line(now))
            self.stream.flush()

    def line(self, now: float | None = None) -> str:
        """The progress text: bar, count, rate, and for a known total the remaining time."""
        elapsed = max((time.monotonic() if now is None else now) - self.start, 1e-9)
        rate = self.done / elapsed
        if not self.total:
            return f"{self.label} {self.done} {rate:.1f}/s elapsed {elapsed:.0f}s"
        frac = min(self.done / self.total, 1.0)
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        return (f"{self.label} [{'#' * int(frac * 30):<30}] {self.done}/{self.total} {rate:.1f}/s "
                f"eta {eta:.0f}s elapsed {elapsed:.0f}s")

    def close(self) -> None:
        self.stream.write(("\r" if self.live else "") + self.line() + "\n")
        self.stream.flush()
