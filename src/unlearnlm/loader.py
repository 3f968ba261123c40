"""``load_config``: a run configuration from YAML and ``--set`` overrides, completed by its task.

:mod:`unlearnlm.config` holds the generic tree and knows no task. Here the task named by ``data.task``
fills in its defaults (under the user's own settings) and builds its settings section ``data.<task>``
with its ``Options`` dataclass, so a wrong key there is reported by name like any other. The method's options
and the judges' names are checked here too: every mistake in a config is found when it is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unlearnlm.config import DataConfig, MethodConfig, RunConfig, build, merge, read_tree
from unlearnlm.errors import ConfigError
from unlearnlm.judges.panel import check_judge_names
from unlearnlm.methods import create_method
from unlearnlm.tasks import TASKS, task_class


def config_from_tree(tree: dict[str, Any]) -> RunConfig:
    """Build a :class:`RunConfig` from a nested dict (as YAML holds it), with the task's defaults and settings."""
    data = tree.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"data: expected a mapping, got {type(data).__name__}: {data!r}")
    name = data.get("task", DataConfig.task)
    if not isinstance(name, str):
        raise ConfigError(f"data.task: expected the name of a task, got {name!r}")
    cls = task_class(name)
    if "options" in data:
        raise ConfigError(f"data.options: write the task's settings under data.{name} instead")
    data = dict(data)
    own = data.pop(name, None)
    for other in [key for key in data if key in TASKS]:  # another task's section: checked, then unused
        TASKS[other].build_options(data.pop(other), f"data.{other}")
    method = tree.get("method") if isinstance(tree.get("method"), dict) else {}
    cfg = build(RunConfig, merge(cls.config_defaults(method.get("name", MethodConfig.name)), {**tree, "data": data}))
    cfg.data.options = cls.build_options(own, f"data.{name}")
    create_method(cfg.method.name, cfg.method.options)  # the method's own options dataclass checks them
    check_judge_names(cfg.judges)
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a YAML run config (or the defaults when ``path`` is None), apply overrides, then the task's defaults."""
    return config_from_tree(read_tree(path, overrides))
