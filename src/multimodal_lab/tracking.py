"""Live MLflow logging for library code that only knows a ``log_metrics`` callback."""
from __future__ import annotations

from collections.abc import Callable


def mlflow_metrics_logger(prefix: str = "", every: int = 1) -> Callable[[dict[str, float], int], None]:
    """A ``log_metrics(metrics, step)`` callback that writes to the active MLflow run.

    Without an active run (a notebook, a test) it does nothing, so library code can
    always be handed one.

    Args:
        prefix: prepended to every metric name, e.g. ``"train/"``.
        every: log training-step metrics only every this many steps (validation
            metrics, whose key contains ``val``, are always logged).
    """
    import mlflow

    def log(metrics: dict[str, float], step: int) -> None:
        if mlflow.active_run() is None:
            return
        if step % every and not any("val" in key for key in metrics):
            return
        clean = {f"{prefix}{k}": float(v) for k, v in metrics.items() if v == v}  # drop NaN
        mlflow.log_metrics(clean, step=step)

    return log
