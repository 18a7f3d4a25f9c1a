"""Public entry points: read YAML, interpolate ``${VAR}``, validate, raise one located ConfigError."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import yaml
from pydantic import ValidationError

from streamdet.config.errors import _fail, _problems_from, _raw_duplicate_ids, _type_name
from streamdet.config.problems import _Problem
from streamdet.config.schema import Config
from streamdet.config.yaml_source import _duplicate_keys, _index, _interpolate, _Interpolation
from streamdet.errors import ConfigError


def parse_config(text: str, base_dir: Path, env: Mapping[str, str] | None = None,
                 source: str = "<string>") -> Config:
    """Parse and validate YAML ``text``; relative paths resolve against ``base_dir``.

    ``env`` supplies ``${VAR}`` values (default: ``os.environ``). Raises ConfigError.
    """
    env = os.environ if env is None else env
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError(f"{source}: configuration is empty (expected a mapping with at least "
                              "'model' and 'cameras')")
        problems: list[_Problem] = []
        _duplicate_keys(node, (), set(), problems)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = " ".join(s for s in (e.context, e.problem) if s)
        raise ConfigError(f"{source}: invalid YAML{where}: {what}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: invalid YAML: {e}") from None
    finally:
        loader.dispose()
    if data is None:  # "---" alone, or "null"
        raise ConfigError(f"{source}: configuration is empty (expected a mapping with at least "
                          "'model' and 'cameras')")
    if not isinstance(data, dict):
        raise ConfigError(f"{source} (line {node.start_mark.line + 1}): the top level must be a mapping "
                          f"of keys (model:, cameras:, ...), got {_type_name(data)}")
    root = _index(loader, node)
    interp = _Interpolation()
    data = _interpolate(data, root, env, (), interp)
    problems.extend(interp.errors)
    config: Config | None = None
    try:
        config = Config.model_validate(data, context={"base_dir": Path(base_dir).absolute()})
    except ValidationError as e:
        problems.extend(_problems_from(e, root, interp))
        problems.extend(_raw_duplicate_ids(data, root, interp))
    if problems or config is None:
        raise _fail(source, problems)
    return config


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate the YAML file at ``path``; raises ConfigError with key paths and lines."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    return parse_config(text, path.absolute().parent, env=env, source=str(path))
