"""multimodal-lab reproduce: a tracked test-environment run rerun from its commit and data versions."""
from __future__ import annotations

import os
import subprocess

import mlflow
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from project_copy import make_project_copy

from multimodal_lab.reproduce import ReproduceError, reproduce

pytestmark = pytest.mark.slow

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org"}


def _git(project, *args) -> None:
    subprocess.run(["git", *args], cwd=project, check=True, capture_output=True, env={**os.environ, **GIT_ENV})


def _run(project, pipeline: str, runtime_params=None) -> str:
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env="test", runtime_params=runtime_params) as session:
        session.run(pipeline_names=[pipeline])
        return session.session_id


def _mlflow_run_id(project, kedro_run_id: str) -> str:
    runs = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}").search_runs(
        [e.experiment_id for e in mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
         .search_experiments()], filter_string=f"tags.run_id = '{kedro_run_id}'")
    assert len(runs) == 1
    return runs[0].info.run_id


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """A git-committed project copy where story_gpt2 ran once (data preparation and model), then the
    data preparation ran again with another world seed (a second version of every corpus)."""
    project = make_project_copy(tmp_path_factory.mktemp("reproduce"))
    (project / ".gitignore").write_text("data/\nmlflow.db\nmlartifacts/\n")
    _git(project, "init", "-q")
    _git(project, "add", "-A")
    _git(project, "commit", "-qm", "the project")
    cwd, uri = os.getcwd(), os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.chdir(project)
    try:
        first = _run(project, "story_gpt2")
        other = _run(project, "data_preparation", {"sources": {"scene_world": {"seed": 5}}})
        yield project, _mlflow_run_id(project, first), first, other
    finally:
        os.chdir(cwd)
        if uri is not None:
            os.environ["MLFLOW_TRACKING_URI"] = uri


def test_a_run_reproduces_with_identical_metrics_without_drawing_its_corpus_again(tracked):
    project, run_id, first, _ = tracked
    lines: list[str] = []
    assert reproduce(run_id, project, echo=lines.append) == 0
    text = "\n".join(lines)
    assert "story_gpt2_model" in text and f"story.train_records: {first}" in text  # the corpus is read, not redrawn
    assert "story_gpt2.metrics" in text and "identical" in text and "reproduced: every metric identical" in text


def test_another_input_version_is_reported_as_a_difference(tracked):
    project, run_id, _, other = tracked
    lines: list[str] = []
    code = reproduce(run_id, project, overrides={"story.train_records": other, "story.val_records": other,
                                                 "story.tokenizer": other, "story.test_records": other},
                     echo=lines.append)
    text = "\n".join(lines)
    assert code == 1 and "NOT reproduced" in text and "test/pair_f1" in text


def test_another_commit_or_a_dirty_tree_is_refused(tracked):
    project, run_id, _, _ = tracked
    readme = project / "conf" / "README.md"
    original = readme.read_text()
    readme.write_text(original + "\nan edit\n")
    try:
        with pytest.raises(ReproduceError, match="uncommitted changes"):
            reproduce(run_id, project)
        _git(project, "commit", "-qam", "another commit")
        with pytest.raises(ReproduceError, match="--worktree"):
            reproduce(run_id, project)
    finally:
        _git(project, "reset", "-q", "--hard", "HEAD~1")
    with pytest.raises(ReproduceError, match="no MLflow run"):
        reproduce("0" * 32, project)
