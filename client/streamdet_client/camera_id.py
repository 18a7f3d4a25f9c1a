"""The camera id pattern, defined once for the config schema and the wire (topics ``det/<id>/``).

Standard library only: the client-side wire module imports it and must stay free of pydantic/yaml.
"""

from __future__ import annotations

import re

__all__ = ["CAMERA_ID_PATTERN", "CAMERA_ID_RE", "is_valid_camera_id"]

CAMERA_ID_PATTERN = r"[A-Za-z0-9_-]{1,64}"
"""1 to 64 ASCII letters, digits, ``_`` or ``-`` (so a camera id is safe in topics and file names)."""

CAMERA_ID_RE = re.compile(CAMERA_ID_PATTERN)
"""Compiled :data:`CAMERA_ID_PATTERN`; use ``fullmatch``."""


def is_valid_camera_id(value: object) -> bool:
    """True if ``value`` is a string of 1 to 64 characters from ``[A-Za-z0-9_-]``."""
    return isinstance(value, str) and CAMERA_ID_RE.fullmatch(value) is not None
