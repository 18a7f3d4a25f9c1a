"""A small registry of interchangeable implementations, imported only when asked for.

Optional stages (inference backends, later maybe decoders or preprocessors) live in modules that
import heavy optional libraries (onnxruntime, openvino, ...). A :class:`Registry` maps a short
name to a ``"module:attr"`` target plus the pip extra that provides its dependencies, so that

* listing or checking implementations never imports them (:meth:`Registry.available` asks
  :func:`importlib.util.find_spec` whether the dependencies are installed),
* :meth:`Registry.resolve` imports the chosen one on demand, and a missing optional dependency
  becomes :class:`ImplementationUnavailable` naming the package and the extra to install,
* an unknown name becomes :class:`UnknownImplementation` listing the known names.

Registries are instances (no module-level mutable state); the entries are immutable.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from streamdet.errors import StreamdetError

__all__ = ["Implementation", "ImplementationUnavailable", "Registry", "RegistryError", "UnknownImplementation"]


class RegistryError(StreamdetError, ValueError):
    """A registry lookup failed (base of the two errors below)."""


class UnknownImplementation(RegistryError):
    """No implementation has this name; the message lists the known names."""


class ImplementationUnavailable(RegistryError):
    """The implementation exists but an optional dependency of it is not installed."""

    def __init__(self, message: str, *, missing: str | None = None, extra: str | None = None) -> None:
        super().__init__(message)
        self.missing = missing  # top-level package that failed to import
        self.extra = extra  # pip extra that installs it, if any


@dataclass(frozen=True)
class Implementation:
    """Where an implementation lives and what it needs.

    ``target`` is ``"package.module:attr"``; ``extra`` the pip extra of streamdet that installs
    its optional dependencies (None: only core dependencies); ``requires`` the top-level modules
    it imports that may be missing (checked cheaply by :meth:`Registry.available`).
    """

    target: str
    extra: str | None = None
    requires: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        module, sep, attr = self.target.partition(":")
        if not (module and sep and attr):
            raise ValueError(f"target must be 'module:attr', got {self.target!r}")

    @property
    def module(self) -> str:
        """The module part of ``target``."""
        return self.target.partition(":")[0]

    @property
    def attr(self) -> str:
        """The attribute (dotted path allowed) part of ``target``."""
        return self.target.partition(":")[2]


def _spec_exists(module: str) -> bool:
    """True when ``module`` can be found without importing it (parents are imported, as Python must)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package, or a broken __spec__
        return False


class Registry:
    """Name -> :class:`Implementation`, resolved lazily.

    Args:
        kind: what the entries are, for messages (``"backend"``).
        entries: name -> Implementation, or name -> ``(target, extra)`` / ``(target, extra, requires)``.
    """

    def __init__(self, kind: str, entries: Mapping[str, Implementation | tuple[Any, ...]]) -> None:
        self.kind = kind
        built: dict[str, Implementation] = {}
        for name, entry in entries.items():
            built[name] = entry if isinstance(entry, Implementation) else Implementation(*entry)
        self._entries: Mapping[str, Implementation] = MappingProxyType(built)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._entries)

    def entry(self, name: str) -> Implementation:
        """The entry of ``name``; :class:`UnknownImplementation` (listing the known names) if none."""
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(self._entries) or "none"
            raise UnknownImplementation(f'unknown {self.kind} "{name}"; known: {known}') from None

    def available(self, name: str) -> bool:
        """Whether ``name`` could be imported: its module and every optional dependency are installed.

        Cheap: :func:`importlib.util.find_spec` only, no heavy library is imported.
        """
        entry = self.entry(name)
        return all(_spec_exists(m) for m in entry.requires) and _spec_exists(entry.module)

    def resolve(self, name: str) -> Any:
        """Import and return the implementation of ``name``.

        Raises :class:`UnknownImplementation` or, when an import fails for a missing module,
        :class:`ImplementationUnavailable` naming that module and the pip extra.
        """
        entry = self.entry(name)
        try:
            obj: Any = importlib.import_module(entry.module)
        except ModuleNotFoundError as e:
            if (e.name or "").split(".")[0] == __name__.split(".")[0]:  # our own module missing: a bug, not an extra
                raise RegistryError(f'{self.kind} "{name}": cannot import {entry.module} ({e})') from e
            raise self._unavailable(name, entry, e) from e
        for part in entry.attr.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError as e:
                raise RegistryError(f'{self.kind} "{name}": {entry.target} does not exist ({e})') from e
        return obj

    def _unavailable(self, name: str, entry: Implementation, e: ModuleNotFoundError) -> ImplementationUnavailable:
        missing = (e.name or entry.module).split(".")[0]
        message = f'{self.kind} "{name}" needs the optional dependency {missing}'
        if entry.extra:
            message += f": pip install 'streamdet[{entry.extra}]'"
        else:
            message += f", which is not installed ({e})"
        return ImplementationUnavailable(message, missing=missing, extra=entry.extra)
