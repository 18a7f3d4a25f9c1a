"""The exception kinds of the light client, shared with the daemon (``streamdet.errors`` re-exports them).

``StreamdetError`` is the base of every error streamdet raises on purpose, in the client and in the
daemon alike, so ``except StreamdetError`` catches both.
"""

from __future__ import annotations


class StreamdetError(Exception):
    """Base class of every error streamdet raises on purpose."""


class WireError(StreamdetError):
    """A published message does not follow the wire contract."""


class KeyFileError(StreamdetError):
    """A key or certificate file is missing, unreadable or malformed; the message names the file."""
