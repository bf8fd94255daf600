"""Throw-away copies of the Kedro project for session-level tests (imported by tests)."""
from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def make_project_copy(parent: Path) -> Path:
    """A copy of the project's config under ``parent`` with empty data folders."""
    root = parent / "project"
    root.mkdir()
    shutil.copy(PROJECT_ROOT / "pyproject.toml", root)
    shutil.copy(PROJECT_ROOT / ".telemetry", root)
    shutil.copytree(PROJECT_ROOT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    (root / "src").mkdir()  # the package itself is imported from the installed project
    for layer in ("01_raw", "02_intermediate", "03_primary", "04_feature", "05_model_input",
                  "06_models", "07_model_output", "08_reporting"):
        (root / "data" / layer).mkdir(parents=True)
    return root


def only_version(folder: Path) -> Path:
    """The one versioned copy of a dataset folder (``<folder>/<version>/<name>``); fails if there are several."""
    versions = sorted(p for p in folder.iterdir() if p.is_dir())
    assert len(versions) == 1, f"expected one version under {folder}, got {versions}"
    return versions[0] / folder.name



@contextlib.contextmanager
def project_runs(parent: Path, *runs: list[str], env: str = "test") -> Iterator[Path]:
    """A project copy in which each of ``runs`` (a list of pipeline names) ran as one Kedro session.

    The working directory is the copy and ``MLFLOW_TRACKING_URI`` is unset while the block
    runs (each copy tracks into its own ``mlflow.db``); both come back afterwards.
    """
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    project = make_project_copy(parent)
    cwd, uri = os.getcwd(), os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.chdir(project)
    try:
        bootstrap_project(project)
        for names in runs:
            with KedroSession.create(project_path=project, env=env) as session:
                session.run(pipeline_names=names)
        yield project
    finally:
        os.chdir(cwd)
        if uri is not None:
            os.environ["MLFLOW_TRACKING_URI"] = uri
