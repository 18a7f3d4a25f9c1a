"""Exception kinds raised by streamdet.

Library code raises these; only ``streamdet.cli`` turns them into exit codes
(0 ok, 1 runtime failure, 2 bad usage or configuration).
"""

from __future__ import annotations

# The base class and the wire's error are the light client's (streamdet_client), so that one
# ``except StreamdetError`` catches what the client and the daemon raise.
from streamdet_client.errors import StreamdetError as StreamdetError
from streamdet_client.errors import WireError as WireError


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
