"""Logging set-up shared by the supervisor and its children: one line per event.

Under systemd (``JOURNAL_STREAM`` set) journald adds the timestamp and the priority is given as
an ``<N>`` prefix, so lines stay short; elsewhere each line starts with a UTC timestamp.
"""

from __future__ import annotations

import logging
import os
import sys

_SYSLOG_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


class _JournalFormatter(logging.Formatter):
    """Prefix each line with the syslog priority journald understands (``<6>``)."""

    def format(self, record: logging.LogRecord) -> str:
        prio = _SYSLOG_PRIORITY.get(record.levelno, 6)
        return f"<{prio}>" + super().format(record).replace("\n", " | ")


class _LineFormatter(logging.Formatter):
    """Keep every event on one line, tracebacks included."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", " | ")


def setup_logging(level: str = "info", process_name: str = "streamdet") -> None:
    """Configure the root logger of this process (called once per process, at its entry point)."""
    handler = logging.StreamHandler(sys.stderr)
    fmt = f"{process_name}[%(process)d] %(levelname)s %(name)s: %(message)s"
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter(fmt))
    else:
        formatter = _LineFormatter("%(asctime)s " + fmt, "%Y-%m-%dT%H:%M:%S")
        handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
