"""The shape of the code, checked on its import statements (read with ``ast``, nothing imported).

- layers: ``streamdet.pipeline`` never imports the supervisor, the CLI, the benchmark, the metrics
  or the ``Detector`` facade (the pipeline is what those are built from);
- no import cycles between modules, counting every import: top-level, inside functions (lazy) and
  under ``TYPE_CHECKING``;
- no private name (``_name``) imported from another package;
- the stage packages' ``__init__`` import nothing.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "streamdet"
FORBIDDEN_FOR_PIPELINE = ("streamdet.supervisor", "streamdet.cli", "streamdet.bench", "streamdet.metrics",
                          "streamdet.detector")


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[tuple[str, str | None, int]]:
    """(module, imported name or None, line) of every import statement in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                yield module, alias.name, node.lineno


def _graph() -> dict[str, set[str]]:
    """Module -> the streamdet modules it imports (``from package import module`` counts as the module)."""
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        deps = set()
        for module, attr, _ in _imports(name, path):
            target = f"{module}.{attr}" if attr and f"{module}.{attr}" in MODULES else module
            if target in MODULES and target != name:
                deps.add(target)
        graph[name] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_checker_sees_the_code() -> None:
    graph = _graph()
    assert len(graph) > 100
    assert "streamdet.pipeline.worker.contract" in graph["streamdet.supervisor.core"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_pipeline_never_imports_the_layers_above_it() -> None:
    bad = [f"{name} -> {dep}" for name, deps in _graph().items() if name.startswith("streamdet.pipeline")
           for dep in deps if dep.startswith(FORBIDDEN_FOR_PIPELINE)]
    assert bad == []


def test_no_import_cycles_counting_lazy_and_type_checking_imports() -> None:
    assert _cycles(_graph()) == []


def test_no_private_names_imported_across_packages() -> None:
    bad = []
    for name, path in MODULES.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for module, attr, line in _imports(name, path):
            if not module.startswith("streamdet") or not attr or not attr.startswith("_") or attr.startswith("__"):
                continue
            source_package = module if module in MODULES and MODULES[module].name == "__init__.py" else (
                module.rpartition(".")[0])
            if source_package != package:
                bad.append(f"{path.relative_to(ROOT.parent)}:{line}: {attr} from {module}")
    assert bad == []


QUIET_PACKAGES = ("streamdet.pipeline", "streamdet.pipeline.decode", "streamdet.pipeline.ring",
                  "streamdet.pipeline.preprocess", "streamdet.pipeline.postprocess", "streamdet.pipeline.cuda",
                  "streamdet.pipeline.worker", "streamdet.transport")


def test_stage_packages_import_nothing() -> None:
    """Their ``__init__`` only lists the modules: importing one stage's module loads no other's."""
    for name in QUIET_PACKAGES:
        path = MODULES[name]
        assert path.name == "__init__.py", name
        imports = [(module, attr) for module, attr, _ in _imports(name, path) if module != "__future__"]
        assert imports == [], f"{name}/__init__.py imports {imports}"
