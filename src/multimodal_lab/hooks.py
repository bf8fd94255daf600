"""Project hooks: tie every run to its data versions, code version and artefacts.

kedro-mlflow opens one MLflow run per Kedro run and logs parameters. These hooks add
what makes a result rerunnable:

* the tracking store defaults to ``sqlite:///<project root>/mlflow.db`` (mlflow 3 refuses
  the old file store), unless ``MLFLOW_TRACKING_URI`` or ``conf/*/mlflow.yml`` says otherwise;
* every versioned dataset the run loaded or saved is recorded with its version, as MLflow
  tags and as a ``data_versions.json`` artefact holding the ``kedro run --load-versions``
  command that reproduces the run's inputs;
* the git commit (and whether the tree was dirty) is tagged;
* datasets whose catalog ``metadata`` says ``mlflow: artifact`` are logged as artefacts and
  ``mlflow: metrics`` ones (flat dicts of numbers) as metrics. Versioned datasets cannot be
  wrapped in ``MlflowArtifactDataset``, hence this hook.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.io.core import AbstractVersionedDataset

log = logging.getLogger(__name__)


def git_state(path: Path) -> dict[str, str]:
    """The commit and dirtiness of the git tree at ``path`` ({} outside a git tree)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=path,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {"git_commit": commit, "git_dirty": str(bool(dirty)).lower()}


def flat_numbers(data: Any, prefix: str = "", *, sep: str = ".", keep_nan: bool = False) -> dict[str, float]:
    """The numbers of a nested dict as one flat dict (``{"a": {"b": 1}}`` -> ``{"a.b": 1.0}``).

    NaN is left out unless ``keep_nan`` (MLflow rejects NaN metrics; a NaN stays in the JSON dataset).
    """
    out: dict[str, float] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(flat_numbers(value, f"{prefix}{key}{sep}", sep=sep, keep_nan=keep_nan))
    elif isinstance(data, (int, float)) and not isinstance(data, bool):
        if keep_nan or data == data:
            out[prefix[:-len(sep)] if prefix.endswith(sep) else prefix] = float(data)
    return out


def _json_safe(value: Any) -> Any:
    """``value`` with anything JSON cannot hold turned into its string."""
    return json.loads(json.dumps(value, default=str))


class ProjectHooks:
    """Data-version, code-version and artefact bookkeeping around kedro-mlflow."""

    #: the tracking URI this class put into the environment (a user's own is left alone)
    _default_uri: str | None = None

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._catalog = None
        self._project_path: Path | None = None
        self._loaded: dict[str, str] = {}
        self._saved: dict[str, str] = {}
        self._artifacts: list[tuple[str, Path]] = []
        self._models: list[tuple[str, Path]] = []
        self._run_params: dict[str, Any] = {}

    @hook_impl(tryfirst=True)
    def after_context_created(self, context) -> None:
        self._reset()
        self._project_path = Path(context.project_path)
        # kedro-mlflow falls back to MLFLOW_TRACKING_URI when mlflow.yml leaves the URI
        # null; anchoring it at the project root keeps runs from any cwd in one store.
        current = os.environ.get("MLFLOW_TRACKING_URI")
        if current is None or current == ProjectHooks._default_uri:
            uri = f"sqlite:///{(self._project_path / 'mlflow.db').resolve()}"
            os.environ["MLFLOW_TRACKING_URI"] = ProjectHooks._default_uri = uri

    @hook_impl
    def after_catalog_created(self, catalog, save_version: str, load_versions: dict) -> None:
        self._catalog = catalog
        self._save_version = save_version

    def _dataset(self, name: str):
        if self._catalog is None:
            return None
        try:
            return self._catalog[name]
        except Exception:  # noqa: BLE001 - bookkeeping must never break a run
            return None

    @hook_impl
    def after_dataset_loaded(self, dataset_name: str, data: Any, node) -> None:
        dataset = self._dataset(dataset_name)
        if isinstance(dataset, AbstractVersionedDataset):
            try:
                self._loaded[dataset_name] = dataset.resolve_load_version()
            except Exception:  # noqa: BLE001
                pass

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node) -> None:
        dataset = self._dataset(dataset_name)
        if dataset is None:
            return
        path = None
        if isinstance(dataset, AbstractVersionedDataset):
            version = dataset.resolve_save_version()
            self._saved[dataset_name] = version
            filepath = Path(str(getattr(dataset, "_filepath", "")))
            path = filepath / version / filepath.name
        role = (getattr(dataset, "metadata", None) or {}).get("mlflow")
        if role == "artifact" and path is not None:
            self._artifacts.append((dataset_name, path))
        elif role == "model" and path is not None:
            self._models.append((dataset_name, path))
        elif role == "metrics":
            self._log_metrics(dataset_name, data)

    @staticmethod
    def _log_metrics(dataset_name: str, data: Any) -> None:
        import mlflow

        if mlflow.active_run() is None:
            return
        metrics = flat_numbers(data)
        if metrics:
            mlflow.log_metrics(metrics)

    @hook_impl(trylast=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        import mlflow

        from multimodal_lab.parameters import check_parameters

        self._run_params = dict(run_params or {})
        # Every block against its config class, now: a mistyped key or a block pasted at the
        # wrong place fails before minutes of data preparation, not when its node runs.
        check_parameters(catalog.load("parameters"))
        if mlflow.active_run() is None or self._project_path is None:
            return
        # kedro-mlflow already tags the Kedro run id (= save version), env and pipelines.
        tags = git_state(self._project_path)
        if tags:
            mlflow.set_tags(tags)

    def data_versions(self) -> dict[str, Any]:
        """What this run loaded and saved, and the command that pins its inputs."""
        inputs = {k: v for k, v in self._loaded.items() if k not in self._saved}
        pipelines = self._run_params.get("pipeline_names") or []
        command = "kedro run"
        if pipelines:
            command += " --pipelines=" + ",".join(pipelines)
        if self._run_params.get("env"):
            command += f" --env={self._run_params['env']}"
        if inputs:
            command += " --load-versions=" + ",".join(f"{k}:{v}" for k, v in sorted(inputs.items()))
        runtime = self._run_params.get("runtime_params") or self._run_params.get("extra_params") or {}
        return {
            "loaded": dict(sorted(self._loaded.items())),
            "saved": dict(sorted(self._saved.items())),
            "rerun_command": command,
            # what `multimodal-lab reproduce <run id>` reruns the run with
            "pipelines": list(pipelines),
            "env": self._run_params.get("env"),
            "runtime_params": _json_safe(runtime),
            "git": git_state(self._project_path) if self._project_path is not None else {},
        }

    @hook_impl(tryfirst=True)
    def after_pipeline_run(self, run_params: dict[str, Any], run_result, pipeline, catalog) -> None:
        import mlflow

        versions = self.data_versions()
        log.info("data versions of this run: %s", json.dumps(versions["saved"]))
        if mlflow.active_run() is None:
            return
        mlflow.set_tags(
            {f"data_version.{k}"[:250]: v for k, v in {**versions["loaded"], **versions["saved"]}.items()}
        )
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / "data_versions.json"
            target.write_text(json.dumps(versions, indent=2))
            mlflow.log_artifact(str(target))
        for name, path in self._artifacts:
            # "story_gpt2.report" saved as .../report.html -> artefact story_gpt2/report.html
            folder = name.rpartition(".")[0].replace(".", "/") or None
            if path.is_file():
                mlflow.log_artifact(str(path), artifact_path=folder)
            elif path.is_dir():
                mlflow.log_artifacts(str(path), artifact_path=f"{folder}/{path.name}" if folder else path.name)
        self._log_models()

    def _log_models(self) -> None:
        """Each family's served model (the one its inference reads) as an MLflow pyfunc, registered under
        the family's name. A failure is logged, never raised: the versioned catalog copy is the model."""
        from multimodal_lab.families import available_families, served_model_dataset

        served = {served_model_dataset(family): family for family in available_families()}
        for name, path in self._models:
            family = served.get(name)
            if family is None or not path.is_dir():
                continue
            try:
                from multimodal_lab.serving import log_family_model

                info = log_family_model(path, name=name.removesuffix(".model").replace(".", "_"),
                                        registered_name=family)
                log.info("%s logged to MLflow as %s (registered as %s)", name, info.model_uri, family)
            except Exception as error:  # noqa: BLE001 - bookkeeping must never break a run
                log.warning("could not log %s to MLflow as a model: %s", name, error)
