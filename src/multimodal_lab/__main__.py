"""``multimodal-lab`` and ``python -m multimodal_lab``.

* ``multimodal-lab demo [...]``: the browser demo of every family (``multimodal_lab.demo``), without Kedro;
* ``multimodal-lab reproduce <mlflow-run-id>``: rerun a tracked run from its code and data versions
  (``multimodal_lab.reproduce``);
* anything else: Kedro's ``run`` command of this project (``multimodal-lab --pipelines=story_gpt2``).
"""
import sys
from pathlib import Path
from typing import Any

#: Subcommands of our own: name -> "module:function" taking the remaining arguments.
COMMANDS = {"demo": "multimodal_lab.demo:main", "reproduce": "multimodal_lab.reproduce:main"}


def main(*args, **kwargs) -> Any:
    argv = list(kwargs.get("args") or (args[0] if args else sys.argv[1:]))
    if argv and argv[0] in COMMANDS:
        import importlib

        module, function = COMMANDS[argv[0]].split(":")
        return sys.exit(getattr(importlib.import_module(module), function)(argv[1:]))
    return _kedro_run(*args, **kwargs)


def _kedro_run(*args, **kwargs) -> Any:
    from kedro.framework.cli.utils import find_run_command
    from kedro.framework.project import configure_project

    package_name = Path(__file__).parent.name
    configure_project(package_name)

    interactive = hasattr(sys, 'ps1')
    kwargs["standalone_mode"] = not interactive

    run = find_run_command(package_name)
    return run(*args, **kwargs)


if __name__ == "__main__":
    main()
