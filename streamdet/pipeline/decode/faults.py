"""What went wrong with a source, in words, and whether trying again can fix it.

The decoder (:mod:`streamdet.pipeline.decode.reader`) asks :func:`classify_failure` after every failed
session. Network streams are always retried (a camera comes back). A file is retried only when
the failure can be transient and retrying replays nothing:

- "No such file", permission, I/O and timeout errors while opening: retried with backoff (the
  file may appear later, e.g. an NFS mount).
- a file that opens as nothing decodable (empty, not a video, unknown codec, no video stream,
  no decodable frame), or whose data is damaged: permanent.
- any failure of a non-looping file after it wrote frames: permanent, since reopening would
  play those frames again (a looping file replays by design, so it is retried).
"""

from __future__ import annotations

import os
from typing import NamedTuple

import av

from streamdet.errors import SourceError
from streamdet.pipeline.decode.source import CameraSource
from streamdet.redact import redact_text

__all__ = ["Failure", "ReadTimedOut", "SourceDamaged", "SourceUnusable", "Stalled", "classify_failure",
           "describe_error"]


class SourceDamaged(SourceError):
    """A file's data could not be read past some point (truncated or corrupt)."""


class SourceUnusable(SourceError):
    """A source that cannot give frames: no video stream, no decodable frame."""


class ReadTimedOut(TimeoutError):
    """No data arrived for the read limit (:attr:`CameraSource.read_limit_s`)."""


class Stalled(TimeoutError):
    """Data arrived but no frame was decoded for ``stall_timeout_s``."""


class Failure(NamedTuple):
    """Why a session failed (redacted, for logs and the ring) and whether to stop retrying."""

    reason: str
    permanent: bool


#: FFmpeg errors meaning "this input is not something we can decode", when opening a file.
_UNDECODABLE = (av.error.InvalidDataError, av.error.DecoderNotFoundError, av.error.DemuxerNotFoundError,
                av.error.PatchWelcomeError)


def describe_error(exc: BaseException) -> str:
    """``Type: message`` with FFmpeg's ``[Errno N]`` prefix dropped, redacted."""
    text = str(exc)
    if isinstance(exc, av.error.FFmpegError) and text.startswith("[Errno"):
        text = text.split("] ", 1)[-1]
    return redact_text(f"{type(exc).__name__}: {text}")


def _file_size(path: str) -> int | None:
    try:
        return os.path.getsize(path)
    except OSError:
        return None


def classify_failure(exc: BaseException, source: CameraSource, *, opening: bool, open_elapsed_s: float,
                     frames_written: int) -> Failure:
    """The failure of one session of ``source``: ``opening`` = it failed before the first read;
    ``frames_written`` = frames this reader wrote so far (all sessions)."""
    if isinstance(exc, av.error.ExitError):  # PyAV's interrupt callback: open or read timeout
        reason = (f"timed out opening the source ({source.open_timeout_s:g} s)" if opening
                  else f"timed out: no data for {source.read_limit_s:g} s")
    elif isinstance(exc, (SourceError, TimeoutError)) and not isinstance(exc, av.error.FFmpegError):
        reason = redact_text(str(exc))
    else:
        reason = describe_error(exc)
        if opening and open_elapsed_s >= source.open_timeout_s * 0.95:
            reason = f"timed out opening the source ({source.open_timeout_s:g} s): {reason}"
    if source.is_live:
        return Failure(reason, permanent=False)
    if isinstance(exc, (SourceDamaged, SourceUnusable)):
        return Failure(reason, permanent=True)
    if opening and isinstance(exc, _UNDECODABLE):
        empty = " (the file is empty)" if _file_size(source.url) == 0 else ""
        return Failure(f"not a decodable video file{empty}: {reason}", permanent=True)
    if not source.loop and frames_written > 0:
        return Failure(f"{reason}; not reopened after {frames_written} frames (it would play them again)",
                       permanent=True)
    return Failure(reason, permanent=False)
