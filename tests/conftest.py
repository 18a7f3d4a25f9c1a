"""Shared test fixtures: where the reference fixtures live, markers for GPU tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _fixtures_dir() -> Path:
    env = os.environ.get("STREAMDET_FIXTURES")
    return Path(env) if env else REPO.parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The official reference fixtures (../shared/fixtures); read in place, never copied."""
    path = _fixtures_dir()
    if not (path / "README.md").is_file():
        pytest.fail(f"reference fixtures not found at {path} (set STREAMDET_FIXTURES)")
    return path


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _private_runtime_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Daemons started by the tests keep their pid file and sockets in a directory of the session's
    own, never in a real streamdet's runtime directory (subprocesses inherit the variable)."""
    os.environ["RUNTIME_DIRECTORY"] = str(tmp_path_factory.mktemp("runtime"))
