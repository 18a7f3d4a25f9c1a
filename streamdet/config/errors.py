"""Pydantic errors to located problems: key path, line, short message; one ConfigError for all."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from streamdet.config.problems import _CROSS, _key_segment, _Problem
from streamdet.config.schema import (
    BatchingConfig,
    CameraConfig,
    Config,
    DecodeConfig,
    MetricsConfig,
    ModelConfig,
    PublishConfig,
    ReconnectConfig,
    RingConfig,
    SupervisorConfig,
    ThreadsConfig,
)
from streamdet.config.yaml_source import _Interpolation, _Node, _scrub
from streamdet.errors import ConfigError

_SECTIONS: dict[str, type[BaseModel]] = {
    "model": ModelConfig,
    "publish": PublishConfig,
    "batching": BatchingConfig,
    "ring": RingConfig,
    "decode": DecodeConfig,
    "reconnect": ReconnectConfig,
    "supervisor": SupervisorConfig,
    "metrics": MetricsConfig,
    "threads": ThreadsConfig,
}


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class whose keys live at ``loc`` (for 'did you mean' hints)."""
    if not loc:
        return Config
    if loc[0] == "cameras" and len(loc) == 2:
        return CameraConfig
    if len(loc) == 1:
        return _SECTIONS.get(loc[0])
    return None


def _type_name(value: Any) -> str:
    """A YAML-flavoured name for the type of ``value`` (never the value itself)."""
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


def _message(err: Mapping[str, Any]) -> str:
    """A short, friendly message for one pydantic error (no input values echoed)."""
    kind, msg, loc = err["type"], err["msg"], err["loc"]
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        model = _model_at(tuple(loc[:-1]))
        key = loc[-1]
        if model is None:
            return "unknown key"
        known = list(model.model_fields)
        close = difflib.get_close_matches(str(key), known, n=1)
        return f"unknown key (did you mean {close[0]!r}?)" if close else f"unknown key (valid: {', '.join(known)})"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping of keys, got {_type_name(err.get('input'))}"
    if kind in ("path_type", "path_parsing"):
        return f"expected a file path, got {_type_name(err.get('input'))}"
    if kind == "dict_keys_type" or msg == "Keys should be strings":
        return "keys must be strings"
    if kind in ("list_type", "tuple_type"):
        return f"expected a list, got {_type_name(err.get('input'))}"
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg


def _locate(root: _Node, loc: tuple[Any, ...], kind: str) -> tuple[str, int | None, bool]:
    """Map a pydantic ``loc`` to (key path, line, whether the key is in the file).

    The line is the key's for unknown keys and for mapping/list values, the value's for scalar
    values, and the parent mapping's (its key's line when it has one) for missing keys.
    """
    cur: _Node | None = root
    key_line: int | None = None  # line of the key through which `cur` was reached
    parent_line: int | None = root.line
    parts: list[str] = []
    for part in loc:
        if cur is None:
            parts.append(f"[{part}]" if isinstance(part, int) else _key_segment(part))
            continue
        is_map = isinstance(cur.node, yaml.MappingNode)
        if is_map and part not in cur.entries:  # pydantic spells non-string keys as str(key)
            part = next((k for k in cur.entries if not isinstance(k, str) and str(k) == part), part)
        segment = _key_segment(part) if is_map or not isinstance(part, int) else f"[{part}]"
        if is_map and part in cur.entries:
            parent_line = key_line if key_line is not None else cur.line
            key_node, child = cur.entries[part]
            key_line, cur = key_node.start_mark.line + 1, child
        elif isinstance(cur.node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(cur.items):
            parent_line = key_line if key_line is not None else cur.line
            key_line, cur = None, cur.items[part]
        elif not is_map and isinstance(part, str):
            continue  # a pydantic-internal part (union member tag); not a key in the file
        else:
            parent_line = key_line if key_line is not None else cur.line
            cur = None
        parts.append(segment)
    path = "".join(parts).removeprefix(".")
    if cur is None:
        return path, parent_line, False
    if kind == "extra_forbidden":
        return path, key_line or cur.line, True
    if isinstance(cur.node, yaml.ScalarNode):
        return path, cur.line, True
    return path, key_line or cur.line, True


def _problems_from(exc: ValidationError, root: _Node, interp: _Interpolation) -> list[_Problem]:
    """Turn pydantic errors into located problems, scrubbing interpolated secrets."""
    out: list[_Problem] = []
    for err in exc.errors(include_url=False):
        base = tuple(err["loc"])
        if err["type"] == _CROSS:
            ctx = err.get("ctx") or {}
            entries = [((*base, *p), m, (*base, *r) if r else None) for p, m, r in ctx.get("problems", [])]
        else:
            entries = [(base, _message(err), None)]
        for loc, msg, related in entries:
            if loc in interp.error_paths and err["type"] not in ("missing", "extra_forbidden"):
                continue  # already reported: unset variable
            path, line, _found = _locate(root, loc, err["type"])
            if related is not None:
                rpath, rline, rfound = _locate(root, related, "")
                msg += f" (also {rpath}, line {rline})" if rfound else f" (also {rpath})"
            scrub = [r for sl, reps in interp.secrets.items() if sl[: len(loc)] == loc or loc[: len(sl)] == sl
                     for r in reps]
            out.append(_Problem(path, line, _scrub(msg, scrub)))
    return out


def _raw_duplicate_ids(data: Mapping[str, Any], root: _Node, interp: _Interpolation) -> list[_Problem]:
    """Duplicate camera ids, found in the raw data so they are reported even when other
    validation errors keep pydantic's cross-field check from running."""
    cams = data.get("cameras")
    if not isinstance(cams, list):
        return []
    out: list[_Problem] = []
    first: dict[str, int] = {}
    for i, cam in enumerate(cams):
        cid = cam.get("id") if isinstance(cam, dict) else None
        if isinstance(cid, int) and not isinstance(cid, bool):
            cid = str(cid)
        if not isinstance(cid, str):
            continue
        if cid in first:
            path, line, _ = _locate(root, ("cameras", i, "id"), "")
            rpath, rline, _ = _locate(root, ("cameras", first[cid], "id"), "")
            msg = f"duplicate camera id {cid!r} (also {rpath}, line {rline})"
            out.append(_Problem(path, line, _scrub(msg, interp.secrets.get(("cameras", i, "id"), []))))
        else:
            first[cid] = i
    return out


def _fail(source: str, problems: list[_Problem]) -> ConfigError:
    """One ConfigError listing every problem, sorted by line; first line summarises."""
    unique: list[_Problem] = []
    for p in sorted(problems, key=lambda p: (p.line or 0, p.path)):
        if all(str(p) != str(q) for q in unique):
            unique.append(p)
    if len(unique) == 1:
        return ConfigError(f"{source}: {unique[0]}")
    lines = [f"{source}: {len(unique)} configuration errors:"] + [f"  {p}" for p in unique]
    return ConfigError("\n".join(lines))

