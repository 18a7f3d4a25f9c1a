"""YAML with locations: a node index for line numbers, duplicate keys, ``${VAR}`` interpolation.

Interpolation records which resolved values came from the environment so that later error
messages can be scrubbed of them (:func:`_scrub`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from streamdet.config.problems import _loc_str, _Problem

_ENV_RE = re.compile(r"\$\$\{|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)\}|\$\{")


@dataclass
class _Node:
    """A YAML node with its children, for mapping pydantic error locations to lines."""

    node: yaml.Node
    entries: dict[Any, tuple[yaml.Node, _Node]] = field(default_factory=dict)  # mapping key -> (key node, value)
    items: list[_Node] = field(default_factory=list)  # sequence items

    @property
    def line(self) -> int:
        """1-based line where the node starts."""
        return self.node.start_mark.line + 1



def _index(loader: yaml.SafeLoader, node: yaml.Node, ancestors: frozenset[int] = frozenset()) -> _Node:
    """Build the location tree of an already-constructed document (merge keys are flattened)."""
    out = _Node(node)
    if id(node) in ancestors:  # recursive alias: stop
        return out
    ancestors = ancestors | {id(node)}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            try:
                key = loader.construct_object(key_node, deep=True)
                hash(key)
            except Exception:  # unhashable or odd key: pydantic reports the mapping itself
                continue
            out.entries[key] = (key_node, _index(loader, value_node, ancestors))
    elif isinstance(node, yaml.SequenceNode):
        out.items = [_index(loader, item, ancestors) for item in node.value]
    return out


def _duplicate_keys(node: yaml.Node, loc: tuple[Any, ...], seen: set[int], out: list[_Problem]) -> None:
    """Report keys defined twice in one mapping (YAML silently keeps the last one)."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[tuple[str, Any], int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            if isinstance(key_node, yaml.ScalarNode):
                key = (key_node.tag, key_node.value)
                line = key_node.start_mark.line + 1
                if key in first:
                    out.append(_Problem(_loc_str((*loc, key_node.value)), line,
                                        f"duplicate key (first defined on line {first[key]})"))
                else:
                    first[key] = line
                _duplicate_keys(value_node, (*loc, key_node.value), seen, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _duplicate_keys(item, (*loc, i), seen, out)


@dataclass
class _Interpolation:
    """Bookkeeping of ``${VAR}`` substitution: errors, and what to scrub from later messages."""

    errors: list[_Problem] = field(default_factory=list)
    error_paths: set[tuple[Any, ...]] = field(default_factory=set)
    secrets: dict[tuple[Any, ...], list[tuple[str, str]]] = field(default_factory=dict)  # loc -> [(value, ref)]


def _interpolate(data: Any, idx: _Node | None, env: Mapping[str, str], loc: tuple[Any, ...],
                 result: _Interpolation, ancestors: frozenset[int] = frozenset()) -> Any:
    """Return a copy of ``data`` with ``${VAR}`` replaced in every string value."""
    if isinstance(data, str):
        return _interpolate_str(data, idx, env, loc, result)
    if id(data) in ancestors:
        return data
    ancestors = ancestors | {id(data)}
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            entry = idx.entries.get(key) if idx is not None else None
            out[key] = _interpolate(value, entry[1] if entry else None, env, (*loc, key), result, ancestors)
        return out
    if isinstance(data, list):
        items = idx.items if idx is not None else []
        return [
            _interpolate(v, items[i] if i < len(items) else None, env, (*loc, i), result, ancestors)
            for i, v in enumerate(data)
        ]
    return data


def _interpolate_str(text: str, idx: _Node | None, env: Mapping[str, str], loc: tuple[Any, ...],
                     result: _Interpolation) -> str:
    """Substitute one string; record unset variables as errors and resolved values for scrubbing."""
    if "${" not in text:
        return text
    line = idx.line if idx is not None else None
    pieces: list[str] = []
    pos = 0
    used: list[tuple[str, str]] = []
    for m in _ENV_RE.finditer(text):
        pieces.append(text[pos : m.start()])
        pos = m.end()
        token, name = m.group(0), m.group("name")
        if token == "$${":
            pieces.append("${")
        elif name is None:
            result.errors.append(_Problem(_loc_str(loc), line, "bad environment reference: write ${NAME} "
                                          "(letters, digits, _), or $${ for a literal ${"))
            result.error_paths.add(loc)
            return text
        elif name not in env:
            result.errors.append(_Problem(_loc_str(loc), line, f"environment variable {name} is not set"))
            result.error_paths.add(loc)
            pieces.append(token)
        else:
            value = env[name]
            pieces.append(value)
            used.append((value, "${" + name + "}"))
    pieces.append(text[pos:])
    resolved = "".join(pieces)
    if used:
        result.secrets[loc] = [(resolved, text), *used]
    return resolved


def _scrub(message: str, replacements: list[tuple[str, str]]) -> str:
    """Replace resolved environment values in ``message`` by the ``${VAR}`` text they came from."""
    for value, ref in sorted(replacements, key=lambda r: -len(r[0])):
        if len(value) >= 3:  # shorter values would garble the message; URL redaction still applies
            message = message.replace(value, ref)
    return message

