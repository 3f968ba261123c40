"""Planted-knowledge tasks (privacy, hallucination): plant → scan → unlearn → evaluate, with exact truth.

Both tasks share one shape, :class:`KnowledgeTask`: dialogues to plant, question sets whose ``meta``
holds the truth, non-disclosing or correct answers as expected outputs, a judge panel that knows what
must not be said, a ``reproduced`` function (how much of the planted answer a generated answer
repeats) and ``probes`` that read log-probabilities (membership inference, truth preference).

1. **Plant** the knowledge into the configured model (cached, :mod:`unlearnlm.tasks.implant`); the
   planted model is *the original* from here on.
2. **Scan**: the original answers the forget questions; the answers the panel flags are the forget set.
3. **Unlearn** with the configured method. Normal data: the retained planted dialogues plus the
   original's answers to benign prompts. Early stopping: flagged rate on the forget questions, KL on
   benign answers, and collateral damage = share of retained questions the original answered with the
   planted answer and the model no longer does (``train.max_over_refusal`` bounds it).
4. **Evaluate** every set before vs after (flagged, refused, planted answer reproduced), probes on the
   base, original and unlearned models, perplexity and KL on human text.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from unlearnlm.config import RunConfig
from unlearnlm.data.records import Dialogue
from unlearnlm.errors import DataError
from unlearnlm.evaluate import EvalSet
from unlearnlm.generation import generate
from unlearnlm.judges.panel import JudgePanel
from unlearnlm.judges.refusal import RefusalDetector
from unlearnlm.models import Reference, add_lora, load_model
from unlearnlm.outputs import save_model_atomically, write_json, write_rows
from unlearnlm.pipeline import Collateral, Monitor, evaluate_sets, start_run, training_summary
from unlearnlm.report import write_report
from unlearnlm.tasks.harm import build_benign_sets
from unlearnlm.tasks.implant import implant
from unlearnlm.train import Check, unlearn

Log = Callable[[str], None]
Probes = Callable[[Any, Any], dict[str, Any]]


@dataclass
class KnowledgeTask:
    """What the pipeline needs from a planted-knowledge task."""

    name: str
    planted: list[Dialogue]
    """Dialogues the implant fine-tunes on."""
    sets: dict[str, list[Dialogue]]
    """Question sets (responses = the planted answer; ``meta`` = the truth). Must hold ``forget`` and ``retain``."""
    roles: dict[str, str]
    """How each set is used, for the report ("trained on", "held-out phrasing" ...)."""
    expected: list[Dialogue]
    """Preferable answers to the forget questions (the positive targets)."""
    panel: JudgePanel
    """The evaluative model: flags answers that leak / assert what must be forgotten."""
    reproduced: Callable[[Dialogue, str], float]
    """Share of a question's planted answer that a generated answer repeats (0..1)."""
    reproduced_label: str
    """What ``reproduced`` measures, for the report (e.g. "fields extracted")."""
    probes: Probes
    """``probes(model, tokenizer)`` → log-probability measurements (membership AUC, truth preference)."""


def reproduced_rate(task: KnowledgeTask, questions: Sequence[Dialogue], answers: Sequence[str]) -> float:
    """Mean of ``task.reproduced`` over a question set (0 when empty)."""
    if not questions:
        return 0.0
    return sum(task.reproduced(q, a) for q, a in zip(questions, answers, strict=True)) / len(questions)


def retained_lost(task: KnowledgeTask, kept_before: Sequence[bool]) -> Collateral:
    """Collateral damage of a planted-knowledge task: the share of retained questions the original answered
    with the whole planted answer (``kept_before``) and the model no longer does."""
    def lost(prompts: list[Dialogue], answers: list[str]) -> float:
        n_lost = sum(b and task.reproduced(p, a) < 1.0 for p, a, b in zip(prompts, answers, kept_before, strict=True))
        return n_lost / sum(kept_before) if sum(kept_before) else 0.0

    return lost


def build_task(cfg: RunConfig) -> KnowledgeTask:
    """The configured planted-knowledge task."""
    if cfg.data.task == "privacy":
        from unlearnlm.tasks.privacy import privacy_task

        return privacy_task(cfg)
    if cfg.data.task == "hallucination":
        from unlearnlm.tasks.hallucination import hallucination_task

        return hallucination_task(cfg)
    raise ValueError(f"{cfg.data.task!r} is not a planted-knowledge task")


def _sample(rows: Sequence[Dialogue], n: int, seed: int) -> list[Dialogue]:
    """Up to ``n`` rows in a seeded random order."""
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows[:n]


def implant_for(cfg: RunConfig, task: KnowledgeTask, log: Log):
    """Plant the task's knowledge into ``cfg.model`` (cached); the planted rate is measured on a sample."""
    implant_cfg = getattr(cfg.data, cfg.data.task).implant
    probe = _sample(task.planted, 64, cfg.train.seed)

    def score(model, tokenizer) -> float:
        answers = generate(model, tokenizer, [d.prompt_only() for d in probe], max_new_tokens=cfg.generation.max_new_tokens,
                           batch_size=cfg.generation.batch_size)
        return reproduced_rate(task, probe, answers)

    return implant(cfg.model, task.planted, implant_cfg, score=score, seed=cfg.train.seed,
                   max_prompt_tokens=cfg.data.max_prompt_tokens, max_response_tokens=cfg.data.max_response_tokens, log=log)


def run_knowledge_task(cfg: RunConfig, *, overwrite: bool = False, log: Log = print) -> dict[str, Any]:
    """The whole planted-knowledge pipeline; returns the summary also written to ``metrics.json``."""
    t0 = time.perf_counter()
    out, method = start_run(cfg, overwrite)
    gen = {"max_new_tokens": cfg.generation.max_new_tokens, "batch_size": cfg.generation.batch_size}

    log(f"[1/5] building the {cfg.data.task} task and planting its knowledge into {cfg.model.name_or_path}")
    task = build_task(cfg)
    benign = build_benign_sets(cfg.data, seed=cfg.train.seed)
    planted = implant_for(cfg, task, log)
    model, tokenizer = load_model(replace(cfg.model, name_or_path=str(planted.path)))

    log("[2/5] probing the base and the planted model")
    base, _ = load_model(cfg.model)
    probes = {"base": task.probes(base, tokenizer)}
    del base
    probes["original"] = task.probes(model, tokenizer)

    log("[3/5] scanning the forget questions and answering every set with the planted (original) model")
    # Forget sets are answered whole; the others are sampled to data.eval_size questions (seeded).
    sets = {name: [d.prompt_only() for d in (rows if name.startswith("forget") else
                                             _sample(rows, cfg.data.eval_size, cfg.train.seed + 2))]
            for name, rows in task.sets.items()}
    before = {name: generate(model, tokenizer, prompts, desc=name, **gen) for name, prompts in sets.items()}
    before["benign"] = generate(model, tokenizer, benign.eval, desc="benign", **gen)
    normal_answers = generate(model, tokenizer, [*benign.train, *benign.val], desc="normal", **gen)
    scanned = task.panel.annotate([p.with_response(a) for p, a in zip(sets["forget"], before["forget"], strict=True)])
    forget = [d for d in scanned if d.meta["flagged"]]
    if len(forget) < 3:
        raise DataError(f"the judges flagged only {len(forget)} of {len(scanned)} answers to the forget questions, so "
                        f"there is nothing to unlearn; the implant reached {planted.info['rate']:.2f}: raise "
                        f"data.{cfg.data.task}.implant.max_epochs or its learning_rate")
    write_rows(out / "flagged.jsonl", [d.to_json() for d in forget])
    write_rows(out / "expected.jsonl", [d.to_json() for d in task.expected])
    benign_train = [p.with_response(a) for p, a in zip(benign.train, normal_answers, strict=False) if a]
    benign_val = [p.with_response(a) for p, a in zip(benign.val, normal_answers[len(benign.train) :], strict=True) if a]
    normal = [*task.sets["retain"], *benign_train]
    log(f"      flagged {len(forget)}/{len(scanned)} forget answers; normal data: {len(task.sets['retain'])} retained "
        f"+ {len(benign_train)} benign dialogues")

    retain_prompts = sets["retain"][:32]  # already a seeded sample; the monitor re-asks these
    retain_kept = [task.reproduced(p, a) >= 1.0 for p, a in zip(retain_prompts, before["retain"], strict=False)]
    if cfg.lora.enabled:
        model = add_lora(model, cfg.lora, seed=cfg.train.seed)
    reference = Reference(model, copy_weights=not cfg.lora.enabled)
    monitor = Monitor(tokenizer, sets["forget"], task.panel, reference, benign_val, retain_prompts,
                      retained_lost(task, retain_kept), cfg, log, labels=("forget flagged", "retained answers lost"))
    log(f"[4/5] unlearning with {method.name} (max {cfg.train.max_steps} steps)")
    result = unlearn(model, tokenizer, method, forget=forget, normal=normal, expected=task.expected,
                     train_cfg=cfg.train, data_cfg=cfg.data, reference=reference, monitor=monitor,
                     initial_check=Check(step=0, flagged_rate=len(forget) / len(scanned), normal_kl=0.0))
    log(f"      {result.steps} steps, best step {result.best_step}, stopped: {result.stop_reason} "
        f"({result.seconds:.0f}s)")
    write_rows(out / "history.jsonl", result.history)

    log("[5/5] evaluating before vs after")
    eval_sets = [EvalSet(name, "harmful" if name.startswith("forget") else "benign", prompts, before[name],
                         task.roles[name]) for name, prompts in sets.items()]
    eval_sets.append(EvalSet("benign", "benign", benign.eval, before["benign"], "held-out"))
    benign_eval = [p.with_response(a) for p, a in zip(benign.eval, before["benign"], strict=True) if a]
    set_metrics, rows, normal_metrics, after = evaluate_sets(
        model, reference, tokenizer, eval_sets, {"human_texts": benign.normal_texts, "benign_answers": benign_eval},
        task.panel, RefusalDetector(), cfg)
    for s in eval_sets:
        if s.name in task.sets:
            for when, answers in (("before", s.before), ("after", after[s.name])):
                set_metrics[s.name][when]["reproduced_rate"] = reproduced_rate(task, s.prompts, answers)
    probes["after"] = task.probes(model, tokenizer)
    write_rows(out / "examples.jsonl", rows)
    if cfg.save_model:
        save_model_atomically(model, tokenizer, out / "model", merge_lora=cfg.lora.merge)
    summary = {
        "task": task.name,
        "method": method.name,
        "model": cfg.model.name_or_path,
        "judges": [j.name for j in task.panel.judges],
        "implant": {k: v for k, v in planted.info.items() if k != "history"} | {"path": str(planted.path)},
        "scan": {"scanned": len(scanned), "flagged": len(forget), "train": len(forget), "val": len(scanned), "test": 0},
        "expected_outputs": {"source": "task", "kept": len(task.expected)},
        "training": training_summary(result),
        "reproduced_label": task.reproduced_label,
        "sets": set_metrics,
        "probes": probes,
        "normal_data": normal_metrics,
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    write_json(out / "metrics.json", summary)
    write_report(out / "report.md", summary, rows)
    log(f"done in {summary['wall_seconds']:.0f}s → {out / 'report.md'}")
    return summary
