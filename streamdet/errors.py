"""Exception kinds raised by streamdet.

Library code raises these; only ``streamdet.cli`` turns them into exit codes
(0 ok, 1 runtime failure, 2 bad usage or configuration).
"""

from __future__ import annotations


class StreamdetError(Exception):
    """Base class of every error streamdet raises on purpose."""


class ConfigError(StreamdetError):
    """The configuration file is invalid; the message names the key path and YAML line."""


class ModelError(StreamdetError):
    """A model cannot be built or run (unknown module, bad architecture, shape mismatch)."""


class CheckpointError(ModelError):
    """A checkpoint file is unreadable, truncated, or not a YOLOv5 checkpoint."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint references a global outside the allow-list; nothing from it was run."""


class SourceError(StreamdetError):
    """A video source cannot be opened or read."""


class WireError(StreamdetError):
    """A published message does not follow the wire contract."""
