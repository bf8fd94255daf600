"""Shared fixtures: a throw-away copy of the Kedro project for session-level tests."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from project_copy import PROJECT_ROOT, make_project_copy  # noqa: F401 - re-exported for tests

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")


@pytest.fixture
def kedro_project(tmp_path, monkeypatch) -> Path:
    """A copy of the project's config in a temp dir, as the cwd, with empty data folders.

    Session tests run against it so they never touch the real ``data/`` or ``mlflow.db``.
    """
    root = make_project_copy(tmp_path)
    monkeypatch.chdir(root)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return root


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread, and the suite may share the CPU."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
