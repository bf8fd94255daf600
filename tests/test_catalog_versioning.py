"""Every dataset that is not in memory must be versioned — in every environment."""
from __future__ import annotations

import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.io import MemoryDataset
from kedro.io.core import AbstractVersionedDataset

from multimodal_lab.pipeline_registry import register_pipelines

ENVS = ["local", "test", "gpu"]


def _catalog_config(project, env):
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=env) as session:
        context = session.load_context()
        return context.config_loader["catalog"], context.catalog


@pytest.mark.parametrize("env", ENVS)
def test_every_file_dataset_entry_is_versioned(kedro_project, env):
    config, _ = _catalog_config(kedro_project, env)
    assert config, "the catalog is empty"
    unversioned = [
        name
        for name, entry in config.items()
        if not name.startswith("_")
        and isinstance(entry, dict)
        and "filepath" in entry
        and entry.get("versioned") is not True
    ]
    assert unversioned == [], f"file datasets without versioned: true: {unversioned}"


@pytest.mark.parametrize("env", ENVS)
def test_every_pipeline_dataset_resolves_to_memory_or_versioned(kedro_project, env):
    _, catalog = _catalog_config(kedro_project, env)
    names = set()
    for pipe in register_pipelines().values():
        names |= {d for d in pipe.datasets() if not d.startswith("params:") and d != "parameters"}
    assert "raw_records" in names and "story.tokenizer" in names
    offenders = []
    for name in sorted(names):
        dataset = catalog.get(name)
        if dataset is None or isinstance(dataset, MemoryDataset):
            continue  # in memory: nothing on disk to version
        if not isinstance(dataset, AbstractVersionedDataset) or dataset._version is None:
            offenders.append(f"{name} ({type(dataset).__name__})")
    assert offenders == [], f"file datasets that are not versioned: {offenders}"
