"""EleutherAI's lm-evaluation-harness on the models in memory: the original and the unlearned model scored on the
same lm_eval tasks, so utility is also reported with the tool unlearning papers use (MMLU and friends).

The models are handed to lm_eval as they are (``HFLM(pretrained=<model>, tokenizer=...)``), never saved and reloaded,
so what is scored is exactly what unlearnlm evaluated. Tasks are found in the folder shipped with unlearnlm
(:mod:`unlearnlm.lm_eval_tasks`, offline), in ``utility.lm_eval_include`` (your own YAMLs) and, only when a name is
not found there, among lm_eval's built-in tasks (whose data needs a hub).

lm_eval is an optional extra (``pip install 'unlearnlm[lm-eval]'``); nothing imports it unless tasks are asked for.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Any

import numpy as np
import torch
from torch import nn

from unlearnlm import distributed
from unlearnlm.config import RunConfig, UtilityConfig
from unlearnlm.errors import ConfigError, UnlearnLMError
from unlearnlm.lm_eval_tasks import TASKS_DIR

INSTALL_HINT = "pip install 'unlearnlm[lm-eval]'"
#: Per task and metric name: ``{"value": float, "stderr": float | None}``.
Scores = dict[str, dict[str, dict[str, float | None]]]
#: lm_eval's result keys that are not metrics.
_NOT_METRICS = {"alias", "name", "sample_len", "samples", " "}


def require_lm_eval() -> None:
    """Fail with the install command when the ``[lm-eval]`` extra is missing (one line at the command line)."""
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise UnlearnLMError(f"lm-eval tasks need lm-evaluation-harness, which is not installed: {INSTALL_HINT}") from None


def task_manager(utility: UtilityConfig):
    """lm_eval's TaskManager over the shipped tasks and ``lm_eval_include``; lm_eval's own tasks are indexed too only
    when a name is not found there (indexing its ~15,000 task YAMLs takes seconds). An unknown name is an error that
    lists the local tasks."""
    require_lm_eval()
    from lm_eval.tasks import TaskManager

    paths = [str(TASKS_DIR), *([utility.lm_eval_include] if utility.lm_eval_include else [])]
    manager = TaskManager(include_path=paths, include_defaults=False)
    if not set(utility.lm_eval_tasks) <= set(manager.all_tasks):
        local = manager.all_tasks
        manager = TaskManager(include_path=paths)
        unknown = sorted(set(utility.lm_eval_tasks) - set(manager.all_tasks))
        if unknown:
            raise ConfigError(f"utility.lm_eval_tasks: unknown lm-eval task(s) {unknown}; local tasks: {local}; "
                              "or lm_eval's own names such as mmlu, arc_easy, hellaswag (`lm-eval ls tasks`)")
    return manager


def check_tasks(cfg: RunConfig) -> None:
    """What can be checked before a model is loaded: the extra is installed, every task name exists, one process."""
    if not cfg.utility.lm_eval_tasks:
        return
    if distributed.launched():
        raise ConfigError("utility.lm_eval_tasks: lm-eval is not supported under a launcher yet; run it in one "
                          "process (`unlearnlm evaluate RUN --lm-eval ...` after the run)")
    task_manager(cfg.utility)


@contextlib.contextmanager
def kept_rng_and_mode(model: nn.Module) -> Iterator[None]:
    """lm_eval seeds the global RNGs and switches the model to eval mode; a run's training must not notice either,
    so figures with and without lm-eval stay the same."""
    state = random.getstate(), np.random.get_state(), model.training
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(state[0])
            np.random.set_state(state[1])
            model.train(state[2])


def plain_model(model: nn.Module) -> nn.Module:
    """The transformers model lm_eval expects: a peft wrapper's base model (its LoRA layers stay active)."""
    from peft import PeftModel

    return model.get_base_model() if isinstance(model, PeftModel) else model


def metric_name(key: str) -> str:
    """``acc,none`` → ``acc``; a filtered metric keeps its filter: ``exact_match,strict-match`` →
    ``exact_match (strict-match)``."""
    name, _, filt = key.partition(",")
    return name if filt in ("", "none") else f"{name} ({filt})"


def flatten(results: dict[str, dict[str, Any]]) -> Scores:
    """lm_eval's ``results`` as task → metric → value and standard error (numbers only; "N/A" stderr → None)."""
    out: Scores = {}
    for task, entry in results.items():
        metrics = {}
        for key, value in entry.items():
            if key in _NOT_METRICS or "_stderr," in key or not isinstance(value, (int, float)):
                continue
            stderr = entry.get(key.replace(",", "_stderr,", 1))
            metrics[metric_name(key)] = {"value": float(value),
                                         "stderr": float(stderr) if isinstance(stderr, (int, float)) else None}
        out[task] = metrics
    return out


def score(model: nn.Module, tokenizer, utility: UtilityConfig, manager=None) -> dict[str, Any]:
    """One model on ``utility.lm_eval_tasks``: ``{"scores": Scores, "samples": {task: n}, "top_level": [...]}``.

    ``top_level``: the tasks and groups not inside a group that was scored (what the reports list; a group such as
    mmlu reports its aggregate, metrics.json keeps every subtask).
    """
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    manager = manager or task_manager(utility)
    plain = plain_model(model)
    with kept_rng_and_mode(plain):
        lm = HFLM(pretrained=plain, tokenizer=tokenizer, batch_size=utility.lm_eval_batch_size)
        out = lm_eval.simple_evaluate(
            model=lm, tasks=list(utility.lm_eval_tasks), task_manager=manager, limit=utility.lm_eval_limit,
            num_fewshot=utility.lm_eval_num_fewshot, log_samples=False, bootstrap_iters=1000,
            random_seed=None, numpy_random_seed=None, torch_random_seed=None)
    inside = {name for subtasks in out.get("group_subtasks", {}).values() for name in subtasks}
    return {"scores": flatten(out["results"]), "samples": {t: n["effective"] for t, n in out["n-samples"].items()},
            "top_level": [t for t in out["results"] if t not in inside]}


def comparison(original: dict[str, Any], unlearned: dict[str, Any], utility: UtilityConfig,
               seconds: float) -> dict[str, Any]:
    """The ``lm_eval`` entry of ``metrics.json``: per task and metric the original's and the unlearned model's value,
    the change (unlearned − original) and both standard errors, so a reader can tell a change from noise."""
    tasks = {
        task: {name: {"original": m["value"], "unlearned": unlearned["scores"][task][name]["value"],
                      "change": unlearned["scores"][task][name]["value"] - m["value"],
                      "stderr_original": m["stderr"], "stderr_unlearned": unlearned["scores"][task][name]["stderr"]}
               for name, m in metrics.items()}
        for task, metrics in original["scores"].items()}
    return {"requested": list(utility.lm_eval_tasks), "tasks": tasks, "samples": original["samples"],
            "top_level": original["top_level"], "limit": utility.lm_eval_limit,
            "num_fewshot": utility.lm_eval_num_fewshot, "lm_eval_version": metadata.version("lm_eval"),
            "seconds": round(seconds, 1)}


def compare_models(original: nn.Module, unlearned: nn.Module, tokenizer, cfg: RunConfig,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """``{"lm_eval": comparison}`` for a summary, or ``{}`` when no tasks are configured."""
    utility = cfg.utility
    if not utility.lm_eval_tasks:
        return {}
    t0 = time.perf_counter()
    log(f"lm-eval: {', '.join(utility.lm_eval_tasks)} on the original and the unlearned model")
    manager = task_manager(utility)
    before = score(original, tokenizer, utility, manager)
    after = score(unlearned, tokenizer, utility, manager)
    return {"lm_eval": comparison(before, after, utility, time.perf_counter() - t0)}
