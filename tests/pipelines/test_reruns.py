"""Runs are rerunnable from their data versions, and MLflow records which ones they used."""
from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project


def _run(project: Path, pipeline: str, *, load_versions=None, runtime_params=None) -> str:
    """Run one pipeline in the test env; return the run's save version."""
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env="test", runtime_params=runtime_params) as session:
        session.run(pipeline_names=[pipeline], load_versions=load_versions or {})
        return session.session_id


def _load(project: Path, name: str, version: str) -> pd.DataFrame:
    return pd.read_parquet(project / "data" / name / version / Path(name).name)


def _mlflow_run(project: Path, kedro_run_id: str):
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    runs = mlflow.search_runs(
        experiment_names=["multimodal_lab_test"],
        filter_string=f"tags.run_id = '{kedro_run_id}'",
        output_format="list",
    )
    assert len(runs) == 1, f"expected one MLflow run for {kedro_run_id}, got {len(runs)}"
    return runs[0]


def test_ingest_reruns_from_pinned_raw_records(kedro_project):
    raw_v1 = _run(kedro_project, "sources")
    first = _run(kedro_project, "ingest")
    raw_v2 = _run(kedro_project, "sources", runtime_params={"sources": {"scene_world": {"seed": 7}}})
    pinned = _run(kedro_project, "ingest", load_versions={"raw_records": raw_v1})
    latest = _run(kedro_project, "ingest")

    raw1 = _load(kedro_project, "01_raw/raw_records.parquet", raw_v1)
    raw2 = _load(kedro_project, "01_raw/raw_records.parquet", raw_v2)
    assert set(raw1.record_id).isdisjoint(raw2.record_id), "the two sources runs must differ"

    accepted = {v: _load(kedro_project, "02_intermediate/accepted_records.parquet", v) for v in (first, pinned, latest)}
    # the pinned rerun reproduces the first ingest exactly ...
    pd.testing.assert_frame_equal(accepted[first], accepted[pinned])
    # ... while an unpinned run takes the newest raw records
    assert set(accepted[latest].record_id) <= set(raw2.record_id)
    assert set(accepted[pinned].record_id) <= set(raw1.record_id)

    # MLflow knows which input version the pinned run read, and how to rerun it
    run = _mlflow_run(kedro_project, pinned)
    assert run.data.tags["data_version.raw_records"] == raw_v1
    assert run.data.tags["data_version.accepted_records"] == pinned
    path = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="data_versions.json")
    versions = json.loads(Path(path).read_text())
    assert versions["loaded"] == {"raw_records": raw_v1}
    assert f"--load-versions=raw_records:{raw_v1}" in versions["rerun_command"]
    assert "--pipelines=ingest" in versions["rerun_command"]
    # the ingest summary (a metrics dataset) reached MLflow as metrics
    assert run.data.metrics["source_rows"] == len(raw1)
    assert run.data.metrics["accepted"] + run.data.metrics["rejected"] == len(raw1)
