"""Live settings: one typed channel from the supervisor to a child process, for decoders and workers.

A reload swaps one settings object: the supervisor writes the child's whole settings (a frozen
dataclass with ``to_json`` / ``from_json``) to a JSON file, atomically (write, then rename), and
then increments a process-shared counter; the child compares the counter with the last it saw
(one shared-memory read, cheap enough for every frame) and reads the file only when it moved.
A file and a counter, not a queue or a lock: a child killed in the middle of a read cannot leave
anything held for its successor, and a child that starts later reads the latest settings.

The settings types: :class:`streamdet.pipeline.decode.contract.DecoderLive` (``max_fps`` per
camera) and :class:`streamdet.pipeline.worker.contract.WorkerLive` (rings, NMS settings,
tracking, finished cameras). No numpy: the supervisor imports this.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["LiveChannel", "LiveReader", "LiveSettings"]

log = logging.getLogger(__name__)


class LiveSettings(Protocol):
    """What travels on a channel: a frozen value that converts to and from JSON."""

    def to_json(self) -> dict[str, Any]: ...


S = TypeVar("S")


@dataclass
class LiveChannel:
    """The supervisor's side (``publish``) and the address a child reads from (``path`` and the
    shared ``generation`` counter, a ``RawValue("L")``); picklable for the spawn context."""

    path: str
    generation: Any  # a RawValue("L") in shared memory

    def publish(self, settings: LiveSettings) -> None:
        """Replace the child's settings: the file first, then the counter."""
        path = Path(self.path)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(settings.to_json()))
        tmp.replace(path)
        self.generation.value += 1

    def reader(self, parse: Callable[[dict[str, Any]], S], name: str = "") -> LiveReader[S]:
        """A child's reader, ``parse`` being the settings type's ``from_json`` (one reader per
        thread that reads them)."""
        return LiveReader(self, parse, name)


class LiveReader(Generic[S]):
    """A child's view of its channel: :meth:`poll` returns new settings once per change."""

    def __init__(self, channel: LiveChannel, parse: Callable[[dict[str, Any]], S], name: str = "") -> None:
        self.channel = channel
        self.parse = parse
        self.name = name  # for the log line of a bad file
        self.seen = 0
        #: the last settings read (None before the first)
        self.current: S | None = None

    def poll(self) -> S | None:
        """The new settings when the supervisor published since the last call, else None. A file
        that cannot be read or parsed is logged and skipped (the previous settings stay)."""
        generation = self.channel.generation.value
        if generation == self.seen:
            return None
        self.seen = generation
        try:
            settings = self.parse(json.loads(Path(self.channel.path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("%s: cannot read live settings %s, keeping the previous ones: %s", self.name,
                      self.channel.path, exc)
            return None
        self.current = settings
        return settings
