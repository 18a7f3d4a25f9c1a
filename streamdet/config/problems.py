"""Located configuration problems: key paths, the problem record, and cross-field pydantic errors.

Shared vocabulary of the schema (which raises cross-field errors), the YAML reader (which
reports duplicate keys and unset variables) and the error translation; it imports no sibling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic_core import PydanticCustomError

_CROSS = "streamdet_cross"  # pydantic error type carrying located cross-field problems


@dataclass
class _Problem:
    """One error: key path, line (1-based, or None), message."""

    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        if self.path:
            where = f"{self.path} (line {self.line})" if self.line else self.path
        else:
            where = f"line {self.line}" if self.line else "top level"
        return f"{where}: {self.message}"


def _loc_str(loc: tuple[Any, ...]) -> str:
    """('cameras', 1, 'url') -> 'cameras[1].url'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _key_segment(key: Any) -> str:
    """Path segment of a mapping key: '.name' (non-string keys spelled as YAML would)."""
    if isinstance(key, str):
        return f".{key}"
    if key is None:
        return ".null"
    if isinstance(key, bool):
        return ".true" if key else ".false"
    return f".{key}"



def _cross_error(
    problems: list[tuple[tuple[str | int, ...], str, tuple[str | int, ...] | None]],
) -> PydanticCustomError:
    """A pydantic error carrying cross-field problems as (path, message, related path).

    Paths are relative to the model that raises it; ``parse_config`` turns them into lines.
    """
    summary = "; ".join(
        _loc_str(p) + ": " + m + (f" (also {_loc_str(r)})" if r else "") for p, m, r in problems
    )
    return PydanticCustomError(_CROSS, "{summary}", {"summary": summary, "problems": problems})

