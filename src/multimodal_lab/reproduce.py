"""``multimodal-lab reproduce <mlflow-run-id>``: rerun a tracked run from its recorded code and data
versions, and put its metrics beside the original's.

What a run records (``hooks.ProjectHooks``, the ``data_versions.json`` artefact): the git commit and
whether the tree was dirty, the pipelines, the Kedro environment and runtime parameters, and the
version of every versioned dataset it loaded and saved. Reproducing:

1. refuses when the project's working tree is at another commit or has uncommitted changes to
   tracked files (``--worktree DIR`` checks the recorded commit out in a git worktree instead and
   reproduces there, with this project's ``data/`` and ``mlflow.db``);
2. reruns the run's pipelines with the same environment and runtime parameters — a model family's
   pipeline as its model part (``<family>_model``), reading the corpus the original run prepared
   (its saved versions, pinned with ``load_versions``), so the corpus is not drawn again — and pins
   every other input to the version the original read;
3. compares every metrics dataset (``mlflow: metrics`` in the catalog) the original saved with the
   rerun's, and exits 1 when any value differs (CPU runs are deterministic here: equal means equal).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ReproduceError(RuntimeError):
    """The run cannot be reproduced here (the message says why and what to do)."""


@dataclass
class Recorded:
    """What a tracked run recorded about itself."""

    run_id: str
    versions: dict[str, Any]  # data_versions.json: loaded, saved, pipelines, env, runtime_params, git
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def commit(self) -> str | None:
        return (self.versions.get("git") or {}).get("git_commit")


def tracking_uri(project: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(project / 'mlflow.db').resolve()}"


def read_run(run_id: str, uri: str) -> Recorded:
    """The run's ``data_versions.json`` and metrics from the tracking store at ``uri``."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri=uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as error:
        raise ReproduceError(f"no MLflow run {run_id!r} in {uri}: {error.message}") from None
    try:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="data_versions.json",
                                                   tracking_uri=uri)
    except Exception as error:  # noqa: BLE001 - any failure means the run did not record its versions
        raise ReproduceError(f"run {run_id} has no data_versions.json artefact (it did not finish, or it was "
                             f"made before runs recorded their versions): {error}") from None
    versions = json.loads(Path(path).read_text())
    if "pipelines" not in versions:
        raise ReproduceError(f"run {run_id} was recorded before runs kept their pipelines and parameters; "
                             f"its rerun command is: {versions.get('rerun_command')}")
    return Recorded(run_id, versions, dict(run.data.metrics))


def check_code(recorded: Recorded, project: Path) -> None:
    """Refuse unless the project is a clean checkout of the run's commit."""
    from multimodal_lab.hooks import git_state

    git = recorded.versions.get("git") or {}
    if not git:
        raise ReproduceError(f"run {recorded.run_id} recorded no git commit (its project was not a git checkout), "
                             "so its code cannot be pinned")
    if git.get("git_dirty") == "true":
        raise ReproduceError(f"run {recorded.run_id} ran on commit {git['git_commit'][:12]} with uncommitted changes; "
                             "its code was never recorded, so it cannot be reproduced")
    here = git_state(project)
    if not here:
        raise ReproduceError(f"{project} is not a git checkout; reproduce from a clone of the project")
    if here["git_commit"] != git["git_commit"]:
        raise ReproduceError(f"the run used commit {git['git_commit'][:12]}, this checkout is at "
                             f"{here['git_commit'][:12]}: check it out (git checkout {git['git_commit'][:12]}) or "
                             f"pass --worktree DIR to reproduce in a worktree of that commit")
    if here["git_dirty"] == "true":
        raise ReproduceError("the working tree has uncommitted changes to tracked files; commit or stash them "
                             "(or pass --worktree DIR)")


def plan(recorded: Recorded, pipelines: Mapping[str, Any], overrides: Mapping[str, str] | None = None,
         ) -> tuple[list[str], dict[str, str]]:
    """The pipelines to run and the versions to pin.

    A model family's pipeline becomes its model part when the original run prepared the family's
    corpus (the model part's inputs are among what it saved): those saved versions are pinned, so the
    corpus is read, not drawn again. Every free input of what is rerun that the original loaded or
    saved is pinned to that version; ``overrides`` replace pinned versions (name -> version).
    """
    names = list(recorded.versions.get("pipelines") or []) or ["__default__"]
    loaded, saved = recorded.versions.get("loaded", {}), recorded.versions.get("saved", {})
    chosen = []
    for name in names:
        if name not in pipelines:
            raise ReproduceError(f"the run's pipeline {name!r} does not exist in this code")
        model_part = f"{name}_model"
        if model_part in pipelines and all(
                i in saved or i in loaded for i in _free_datasets(pipelines[model_part])):
            chosen.append(model_part)
        else:
            chosen.append(name)
    pinned = {}
    for name in chosen:
        for dataset in _free_datasets(pipelines[name]):
            version = loaded.get(dataset) or saved.get(dataset)
            if version:
                pinned[dataset] = version
    for dataset, version in (overrides or {}).items():
        pinned[dataset] = version
    return chosen, pinned


def _free_datasets(pipeline) -> list[str]:
    return sorted(i for i in pipeline.inputs() if not (i == "parameters" or i.startswith("params:")))


def compare(original: Mapping[str, float], rerun: Mapping[str, float]) -> list[tuple[str, float, float]]:
    """The (metric, original, rerun) triples that differ (NaN equals NaN; a metric on one side only differs)."""
    differ = []
    for key in sorted(set(original) | set(rerun)):
        a, b = original.get(key, math.nan), rerun.get(key, math.nan)
        same = (a == b) or (math.isnan(a) and math.isnan(b) and key in original and key in rerun)
        if not same:
            differ.append((key, a, b))
    return differ


def reproduce(run_id: str, project: Path, *, overrides: Mapping[str, str] | None = None,
              check_git: bool = True, echo: Callable[[str], None] = print) -> int:
    """Rerun ``run_id`` in ``project`` (see the module docstring); 0 when every metric is identical, 1 when not.

    Raises:
        ReproduceError: the run cannot be reproduced here (not found, other commit, dirty tree, ...).
    """
    from kedro.framework.project import pipelines
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from multimodal_lab.hooks import flat_numbers

    project = Path(project).resolve()
    recorded = read_run(run_id, tracking_uri(project))
    if check_git:
        check_code(recorded, project)
    bootstrap_project(project)
    chosen, pinned = plan(recorded, pipelines, overrides)
    env = recorded.versions.get("env")
    echo(f"reproducing run {run_id} (commit {(recorded.commit or '?')[:12]}, env {env or 'local'}): "
         f"{', '.join(chosen)} with {len(pinned)} pinned input version(s)")
    for dataset, version in sorted(pinned.items()):
        echo(f"  {dataset}: {version}")
    with KedroSession.create(project_path=project, env=env,
                             runtime_params=recorded.versions.get("runtime_params") or None) as session:
        catalog = session.load_context().catalog
        session.run(pipeline_names=chosen, load_versions=pinned)
        new_version = session.session_id
    rows = []
    for name, version in sorted(recorded.versions.get("saved", {}).items()):
        if not _is_metrics(catalog, name):
            continue
        if not _path(catalog, name, new_version).is_file():  # made by a part that was read, not rerun
            echo(f"{name}: not rerun (made by the data preparation the rerun read)")
            continue
        rows.append((name, flat_numbers(_read_json(catalog, name, version), sep="/", keep_nan=True),
                     flat_numbers(_read_json(catalog, name, new_version), sep="/", keep_nan=True)))
    if not rows:
        raise ReproduceError(f"run {run_id} saved no metrics dataset to compare")
    differ_total = 0
    for name, before, after in rows:
        differ = compare(before, after)
        differ_total += len(differ)
        echo(f"{name}: {len(before)} metric(s), original {recorded.versions['saved'][name]}, rerun {new_version}: "
             + ("identical" if not differ else f"{len(differ)} differ"))
        for key, a, b in differ[:50]:
            echo(f"  {key}: original {a!r}, rerun {b!r}")
    echo("reproduced: every metric identical" if not differ_total else
         f"NOT reproduced: {differ_total} metric value(s) differ")
    return 0 if not differ_total else 1


def _is_metrics(catalog, name: str) -> bool:
    try:
        dataset = catalog[name]
    except Exception:  # noqa: BLE001 - a dataset this code no longer declares is not compared
        return False
    return (getattr(dataset, "metadata", None) or {}).get("mlflow") == "metrics"


def _path(catalog, name: str, version: str) -> Path:
    filepath = Path(str(getattr(catalog[name], "_filepath")))
    return filepath / version / filepath.name


def _read_json(catalog, name: str, version: str) -> Any:
    path = _path(catalog, name, version)
    if not path.is_file():
        raise ReproduceError(f"{name} version {version} is not on disk ({path})")
    return json.loads(path.read_text())


def in_worktree(run_id: str, project: Path, directory: Path, argv: Sequence[str]) -> int:
    """Check the run's commit out in a git worktree at ``directory`` (sharing this project's data and
    MLflow store) and reproduce there with that commit's code."""
    project = Path(project).resolve()
    recorded = read_run(run_id, tracking_uri(project))
    if not recorded.commit:
        raise ReproduceError(f"run {run_id} recorded no git commit")
    directory = Path(directory).resolve()
    if directory.exists():
        raise ReproduceError(f"{directory} exists; give a new folder for the worktree")
    subprocess.run(["git", "worktree", "add", "--detach", str(directory), recorded.commit], cwd=project, check=True)
    # data/ holds tracked placeholders: they leave the index's view (skip-worktree, so the tree
    # stays clean) and the folder becomes a link to this project's data
    tracked = subprocess.run(["git", "ls-files", "data"], cwd=directory, capture_output=True, text=True,
                             check=True).stdout.split()
    if tracked:
        subprocess.run(["git", "update-index", "--skip-worktree", *tracked], cwd=directory, check=True)
    if (directory / "data").is_dir():
        shutil.rmtree(directory / "data")
    (directory / "data").symlink_to(project / "data")
    (directory / "mlflow.db").symlink_to(project / "mlflow.db")
    if (project / "conf" / "local").is_dir() and not (directory / "conf" / "local").exists():
        (directory / "conf" / "local").symlink_to(project / "conf" / "local")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(directory / "src"), os.environ.get("PYTHONPATH", "")]),
           "MLFLOW_TRACKING_URI": tracking_uri(project)}
    return subprocess.run([sys.executable, "-m", "multimodal_lab", "reproduce", run_id, *argv], cwd=directory,
                          env=env).returncode


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="multimodal-lab reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("run_id", help="the MLflow run id (mlflow ui, or the run's page)")
    parser.add_argument("--project", default=".", help="the project folder (default: here)")
    parser.add_argument("--worktree", type=Path, default=None,
                        help="check the run's commit out in a new git worktree here and reproduce in it")
    parser.add_argument("--load-version", action="append", default=[], metavar="DATASET:VERSION",
                        help="pin another version of one input than the run used (repeatable)")
    args = parser.parse_args(argv)
    overrides = {}
    for value in args.load_version:
        name, sep, version = value.partition(":")
        if not sep or not name or not version:
            parser.exit(2, f"--load-version takes DATASET:VERSION, got {value!r}\n")
        overrides[name] = version
    try:
        if args.worktree is not None:
            extra = [f"--load-version={v}" for v in args.load_version]
            return in_worktree(args.run_id, Path(args.project), args.worktree, extra)
        return reproduce(args.run_id, Path(args.project), overrides=overrides)
    except ReproduceError as error:
        parser.exit(2, f"cannot reproduce: {error}\n")
