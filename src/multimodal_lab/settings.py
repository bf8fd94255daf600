"""Project settings (see https://docs.kedro.org/en/stable/configure/configuration_basics/)."""
from kedro.config import OmegaConfigLoader

from multimodal_lab.hooks import ProjectHooks

# kedro-mlflow registers its own hook through its entry point; ours adds data-version
# bookkeeping, the git commit and artefact logging around it (see hooks.py).
HOOKS = (ProjectHooks(),)

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # `test` and `gpu` override single nested keys of base parameters (deep merge).
    "merge_strategy": {"parameters": "soft", "mlflow": "soft"},
    "config_patterns": {
        "mlflow": ["mlflow*", "mlflow*/**"],
    },
}
