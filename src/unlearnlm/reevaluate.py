"""``unlearnlm evaluate``: the original model against an unlearned one, before vs after on the same prompts.

Two ways in:

* :func:`evaluate_models`: any unlearned model folder, on the task's evaluation sets (those that need no scan);
* :func:`evaluate_run`: a finished run folder, its saved model on that run's own sets (forget train, early
  stopping, held-out, rephrased, other-source and benign sets), rebuilt by the task from the run's
  ``config.yaml`` and ``flagged.jsonl`` (:meth:`~unlearnlm.tasks.base.Task.evaluated_sets`) and checked
  against its ``examples.jsonl``. The original's answers are the run's own; greedy decoding makes the unlearned
  model's answers the run's too, so with nothing added the figures are the run's ``metrics.json``.

Both take :class:`Additions`: judges that join the panel (a dialogue is flagged when any judge flags it; every
judge's score is kept) and prompt files answered by both models. Nothing is written outside ``output_dir``.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from unlearnlm import distributed, lm_eval_bridge
from unlearnlm.config import RunConfig
from unlearnlm.data.readers import DatasetSpec, read_dialogues
from unlearnlm.data.records import Dialogue
from unlearnlm.errors import ConfigError, DataError
from unlearnlm.evaluate import EvalSet, evaluate_sets
from unlearnlm.generation import generate
from unlearnlm.judges.panel import JudgePanel
from unlearnlm.judges.refusal import RefusalDetector
from unlearnlm.loader import load_config
from unlearnlm.models import Reference, load_model
from unlearnlm.outputs import library_versions, prepare_output_dir, write_json, write_rows, write_yaml
from unlearnlm.report import write_reports
from unlearnlm.report.run_files import RunFiles, read_jsonl, read_run
from unlearnlm.tasks import create_task
from unlearnlm.tasks.base import Task

Log = Callable[[str], None]


@dataclass(frozen=True)
class Additions:
    """What an evaluation adds to the task's (or the run's) own sets and judges."""

    judges: Sequence[str] = ()
    """Judge names (``unlearnlm judge``'s) that join the panel."""
    prompts: str | None = None
    """JSONL/CSV of harmful prompts: a set of kind ``harmful`` (flagged rate: lower is better)."""
    benign_prompts: str | None = None
    """JSONL/CSV of benign prompts: a set of kind ``benign`` (refusal rate: over-refusal)."""


def with_judges(panel: JudgePanel, names: Sequence[str]) -> JudgePanel:
    """``panel`` plus the judges named; a judge already on the panel is an error."""
    twice = sorted(set(names) & set(panel.thresholds))
    if twice:
        raise ConfigError(f"--judges: {twice} already judge this task; name only judges to add")
    return JudgePanel([*panel.judges, *JudgePanel.from_names(names).judges]) if names else panel


def added_sets(additions: Additions, harmful_name: str = "given") -> list[tuple[str, str, list[Dialogue], str]]:
    """``(name, kind, prompts, role)`` of the prompt files to add."""
    files = [(harmful_name, "harmful", additions.prompts), ("given_benign", "benign", additions.benign_prompts)]
    return [(name, kind, read_dialogues(DatasetSpec(path=path, response_column=None)), "given prompts")
            for name, kind, path in files if path]


def answer_sets(original, tokenizer, named: Sequence[tuple[str, str, list[Dialogue], str]], cfg: RunConfig) -> list[EvalSet]:
    """The original's answers to each named set (the "before" side)."""
    gen = cfg.generation.kwargs()
    return [EvalSet(name, kind, prompts, generate(original, tokenizer, prompts, desc=f"before:{name}", **gen), role)
            for name, kind, prompts, role in named]


def compare(task: Task, cfg: RunConfig, original, model, tokenizer, sets: list[EvalSet], panel: JudgePanel):
    """Before vs after on ``sets``, normal-data utility and the task's probes: ``(set metrics, rows, normal metrics)``."""
    benign_answers = [p.with_response(a) for s in sets if s.name == "benign"
                      for p, a in zip(s.prompts, s.before, strict=True) if a]
    task.probe(original, tokenizer, "original")
    set_metrics, rows, normal_metrics, after = evaluate_sets(
        model, Reference.of(original), tokenizer, sets,
        {"human_texts": task.normal_texts(), "benign_answers": benign_answers}, panel, RefusalDetector(), cfg)
    task.add_metrics(sets, after, set_metrics)
    task.probe(model, tokenizer, "after")
    return set_metrics, rows, normal_metrics


def write_evaluation(out: Path, cfg: RunConfig, summary: dict[str, Any], rows: list[dict[str, Any]], log: Log) -> None:
    """Every file of an evaluation folder (under a launcher: on the main process only, see the callers)."""
    out.mkdir(parents=True, exist_ok=True)
    write_yaml(out / "config.yaml", cfg.to_dict())
    write_json(out / "versions.json", library_versions())
    write_rows(out / "examples.jsonl", rows)
    write_json(out / "metrics.json", summary)
    write_reports(out, summary, rows, [], cfg.to_dict())
    log(f"evaluated in {summary['wall_seconds']:.0f}s → {out / 'report.html'}")


def evaluate_models(cfg: RunConfig, unlearned: str, output_dir: Path, additions: Additions = Additions(),
                    log: Log = print) -> dict[str, Any]:
    """The original (``cfg.model``, planted first where the task plants) vs the model at ``unlearned`` on the
    task's evaluation sets, plus the added prompt files and judges."""
    log = distributed.main_progress(log)
    t0 = time.perf_counter()
    task = create_task(cfg)
    lm_eval_bridge.check_tasks(cfg)
    original_cfg = task.original(log)
    original, tokenizer = load_model(original_cfg)
    model, _ = load_model(replace(original_cfg, name_or_path=unlearned))
    panel = with_judges(task.panel(), additions.judges)
    named = task.evaluation_sets()
    harmful_name = "given" if any(n == "forget" for n, *_ in named) else "forget"
    named = [*added_sets(additions, harmful_name), *named]
    set_metrics, rows, normal_metrics = compare(task, cfg, original, model, tokenizer,
                                                answer_sets(original, tokenizer, named, cfg), panel)
    summary = {"method": f"evaluate {unlearned}", "model": cfg.model.name_or_path,
               "judges": [j.name for j in panel.judges], "sets": set_metrics, **task.summary_entries(rows),
               "normal_data": normal_metrics, **lm_eval_bridge.compare_models(original, model, tokenizer, cfg, log),
               "wall_seconds": round(time.perf_counter() - t0, 1)}
    distributed.on_main(lambda: write_evaluation(output_dir, cfg, summary, rows, log))
    return summary


def run_sets(task: Task, folder: Path, rows: list[dict[str, Any]]) -> list[EvalSet]:
    """The run's own sets with the original's answers, rebuilt by the task and checked against ``examples.jsonl``."""
    files = {name: [Dialogue(**r) for r in read_jsonl(folder / name)]
             for name in ("flagged.jsonl", "clean.jsonl", "expected.jsonl", "stop_extra.jsonl")
             if (folder / name).is_file()}
    before: dict[str, list[str]] = defaultdict(list)
    asked: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        before[r["set"]].append(r["before"])
        asked[r["set"]].append(r["prompt"])
    # A set the run never answered (one added to the task after the run was made) is left out: its original's
    # answers are not in the run. Every set the run did answer must come back with the same prompts.
    sets = [s for s in task.evaluated_sets(files, before) if s.name in asked]
    for s in sets:
        if [p.prompt for p in s.prompts] != asked[s.name]:
            raise DataError(f"{folder}: the {s.name!r} prompts rebuilt from config.yaml and flagged.jsonl differ from "
                            "those in examples.jsonl; the data files or the package's built-in sets changed since "
                            "the run")
    missing = sorted(set(asked) - {s.name for s in sets})
    if missing:
        raise DataError(f"{folder}: the task does not rebuild the sets {missing} of examples.jsonl")
    return sets


def open_run(run_dir: str | Path, overrides: Sequence[str] = ()) -> tuple[RunFiles, RunConfig, Path]:
    """A finished run folder with its saved model: ``(its files, its config with overrides, the model folder)``.

    Everything that re-measures a run's model (``unlearnlm evaluate RUN``, the attacks) starts here, so a folder
    without a model or a config fails the same way for all of them, before any model is loaded.
    """
    folder = Path(run_dir).expanduser()
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder; give the --output folder of a finished `unlearnlm run`")
    run = read_run(folder)
    model_dir = run.folder / "model"
    if not (model_dir / "config.json").is_file():
        raise DataError(f"{run.folder} has no saved model (model/config.json); it ran with save_model: false")
    if not (run.folder / "config.yaml").is_file():
        raise DataError(f"{run.folder} has no config.yaml; it is an evaluation folder, not a run folder")
    return run, load_config(run.folder / "config.yaml", list(overrides)), model_dir


def evaluate_run(run_dir: str | Path, output_dir: str | Path, additions: Additions = Additions(), *,
                 overrides: Sequence[str] = (), overwrite: bool = False, log: Log = print) -> dict[str, Any]:
    """A finished run's saved model on that run's own sets, written to ``output_dir`` (never into the run).

    ``overrides`` (``key=value``) change the run's resolved config, e.g. ``generation.batch_size=8``; changing
    generation settings changes the answers.
    """
    log = distributed.main_progress(log)
    t0 = time.perf_counter()
    run, cfg, model_dir = open_run(run_dir, overrides)
    out = distributed.on_main(lambda: prepare_output_dir(output_dir, str(run.folder), overwrite))
    task = create_task(cfg)
    lm_eval_bridge.check_tasks(cfg)
    sets = run_sets(task, run.folder, run.rows)
    original_cfg = task.original(log)
    original, tokenizer = load_model(original_cfg)
    model, _ = load_model(replace(original_cfg, name_or_path=str(model_dir)))
    panel = with_judges(task.panel(), additions.judges)
    log(f"evaluating {model_dir} on the run's {len(sets)} sets" + (f" with judges {list(additions.judges)} added"
                                                                   if additions.judges else ""))
    sets += answer_sets(original, tokenizer, added_sets(additions), cfg)
    set_metrics, rows, normal_metrics = compare(task, cfg, original, model, tokenizer, sets, panel)
    summary = {"method": run.summary["method"], "model": cfg.model.name_or_path,
               "evaluated": {"run": str(run.folder), "model": str(model_dir), "added_judges": list(additions.judges),
                             "added_prompts": [p for p in (additions.prompts, additions.benign_prompts) if p]},
               "judges": [j.name for j in panel.judges], **({"scan": run.summary["scan"]} if "scan" in run.summary else {}),
               "sets": set_metrics, **task.summary_entries(rows), "normal_data": normal_metrics,
               **lm_eval_bridge.compare_models(original, model, tokenizer, cfg, log),
               "wall_seconds": round(time.perf_counter() - t0, 1)}
    distributed.on_main(lambda: write_evaluation(out, cfg, summary, rows, log))
    return summary
