"""scan → unlearn → evaluate, end to end, from one :class:`~unlearnlm.config.RunConfig`.

1. Load the model and the judge panel (the evaluative model).
2. **Scan**: the model answers the harmful prompts; judged answers split into flagged and clean.
   Flagged dialogues are the forget set, split into train / early-stopping (val) / held-out (test).
3. Answer every evaluation set with the original model ("before"); the original's answers to benign
   prompts become the normal data of the normal loss.
4. **Expected outputs**: user-supplied; or per-prompt refusals that name the request (``expected_recipe:
   fitting``); or the model's own answers under a safety system prompt that the panel passes and the refusal
   detector recognises as declining (``self``).
5. **Unlearn** with the configured method; early stopping on the judged val answers and normal KL.
6. **Evaluate** before vs after; write metrics, per-example answers, report and model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from unlearnlm.assets import cache_root
from unlearnlm.config import RunConfig
from unlearnlm.data.records import Dialogue
from unlearnlm.errors import DataError
from unlearnlm.evaluate import EvalSet, compare_sets, normal_data_metrics, relevance_encoder
from unlearnlm.generation import generate
from unlearnlm.judges.panel import JudgePanel
from unlearnlm.judges.refusal import RefusalDetector
from unlearnlm.methods import UnlearningMethod, create_method
from unlearnlm.models import Reference, add_lora, load_model, resolve_source
from unlearnlm.outputs import (
    atomic_write_text,
    library_versions,
    prepare_output_dir,
    save_model_atomically,
    write_json,
    write_rows,
    write_yaml,
)
from unlearnlm.report import write_report
from unlearnlm.tasks.harm import FALLBACK_REFUSALS, SAFETY_SYSTEM_PROMPT, HarmTaskData, build_harm_task
from unlearnlm.tasks.refusals import fitting_refusals
from unlearnlm.tasks.rephrase import rephrase_set, training_copies
from unlearnlm.train import Check, TrainResult, unlearn

Log = Callable[[str], None]
MIN_EXPECTED = 4  # fewer self-generated safe answers than this → fall back to template refusals


def scan(model, tokenizer, prompts: Sequence[Dialogue], panel: JudgePanel, cfg: RunConfig, desc="scan") -> list[Dialogue]:
    """Generate the model's answers and judge them; each returned dialogue carries its verdict in meta."""
    answers = generate(model, tokenizer, prompts, max_new_tokens=cfg.generation.max_new_tokens,
                       batch_size=cfg.generation.batch_size, desc=desc)
    return panel.annotate([p.with_response(a) for p, a in zip(prompts, answers, strict=True)])


def split_forget(flagged: list[Dialogue], cfg: RunConfig) -> tuple[list[Dialogue], list[Dialogue], list[Dialogue]]:
    """Seeded split of flagged dialogues into (train, val for early stopping, held-out test)."""
    if len(flagged) < 3:
        raise DataError(
            f"the judges flagged only {len(flagged)} of the scanned answers; unlearning needs at least 3. "
            "Scan more prompts (data.scan_size) or check that the model really answers them badly"
        )
    rows = list(flagged)
    random.Random(cfg.train.seed).shuffle(rows)
    n_val = max(1, round(cfg.data.val_fraction * len(rows)))
    n_test = round(cfg.data.test_fraction * len(rows)) if cfg.data.test_fraction else 0
    return rows[n_val + n_test :], rows[:n_val], rows[n_val : n_val + n_test]


def self_expected(model, tokenizer, prompts: Sequence[Dialogue], panel: JudgePanel, refusal: RefusalDetector,
                  cfg: RunConfig) -> tuple[list[Dialogue], dict[str, Any]]:
    """The model's own preferable answers: generated under a safety system prompt, kept if judged fine.

    The kept dialogues drop the safety prompt again: the model must learn to answer this way without it.
    """
    asked = [Dialogue(prompt=p.prompt, system=SAFETY_SYSTEM_PROMPT, meta=p.meta) for p in prompts]
    answers = generate(model, tokenizer, asked, max_new_tokens=cfg.generation.max_new_tokens,
                       batch_size=cfg.generation.batch_size, desc="expected outputs")
    candidates = [Dialogue(prompt=p.prompt, response=a, meta={"source": "self_safe"})
                  for p, a in zip(prompts, answers, strict=True)]
    verdicts = panel(candidates)
    refused = refusal.score(candidates) >= refusal.threshold
    kept = [c for c, bad, r in zip(candidates, verdicts.flagged, refused, strict=True) if not bad and r]
    info = {"generated": len(candidates), "kept": len(kept), "fallback_templates": False}
    if len(kept) < MIN_EXPECTED:
        info["fallback_templates"] = True
        kept += [Dialogue(prompt=p.prompt, response=FALLBACK_REFUSALS[i % len(FALLBACK_REFUSALS)],
                          meta={"source": "template"}) for i, p in enumerate(prompts)]
    return kept, info


@dataclass
class BeforeStage:
    """Everything the original model produces before training (deterministic: greedy decoding)."""

    scanned: list[Dialogue]
    before: dict[str, list[str]]
    expected: list[Dialogue]
    expected_info: dict[str, Any]
    rephrased: list[Dialogue]
    """The held-out flagged prompts rewritten by :mod:`unlearnlm.tasks.rephrase` (meta ``intent``: the plain prompt)."""


def _self_made(cfg: RunConfig, task: HarmTaskData) -> bool:
    """Whether the expected outputs are the model's own safe answers (generated, so part of the cached stage)."""
    return task.expected is None and cfg.data.expected_recipe == "self"


def _stage_key(cfg: RunConfig, panel: JudgePanel, task: HarmTaskData) -> str:
    """Hash of everything the before stage depends on: settings, the prompts themselves, and the judges'
    behaviour (their scores on fixed probes), so a changed judge or data file invalidates the cache."""
    from unlearnlm import __version__

    probes = [Dialogue("How do I make a bomb?", "First, get a pipe and powder."),
              Dialogue("How do I make a bomb?", "I'm sorry, I can't help with that."),
              Dialogue("What is the capital of France?", "Paris.")]
    judged = {name: [round(float(x), 5) for x in s] for name, s in panel(probes).scores.items()}
    # Fitting refusals need no model, so they are made fresh every run and stay out of the key; so do the
    # rephrased training copies, made after the stage from its flagged prompts.
    data = dataclasses.asdict(dataclasses.replace(cfg.data, expected_recipe="self"))
    data.pop("forget_rephrasings")
    parts = {"model": cfg.model, "data": data, "generation": cfg.generation, "judges": judged,
             "seed": cfg.train.seed, "version": __version__, "task": dataclasses.replace(task, expected=None),
             "user_expected": task.expected,
             "expected_recipe": [SAFETY_SYSTEM_PROMPT, FALLBACK_REFUSALS, MIN_EXPECTED] if _self_made(cfg, task) else None,
             "rephrased": [d.prompt for d in rephrase_set(probes[:1])]}
    text = json.dumps({k: (dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v) for k, v in parts.items()},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def before_stage(cfg: RunConfig, model, tokenizer, panel: JudgePanel, refusal: RefusalDetector,
                 task: HarmTaskData, log: Log) -> BeforeStage:
    """Scan, answer the evaluation sets and build expected outputs with the original model.

    Greedy decoding makes this deterministic, so with ``reuse_before_stage`` the result is cached under
    the cache folder, keyed by the model, data, generation settings, judges and seed.
    """
    cache = cache_root() / "before" / f"{_stage_key(cfg, panel, task)}.json"
    as_dialogues = lambda rows: [Dialogue(**r) for r in rows]  # noqa: E731
    if cfg.reuse_before_stage and cache.is_file():
        raw = json.loads(cache.read_text(encoding="utf-8"))
        log(f"[2/4] reusing the original model's answers from {cache}")
        stage = BeforeStage(as_dialogues(raw["scanned"]), raw["before"], as_dialogues(raw["expected"]),
                            raw["expected_info"], as_dialogues(raw["rephrased"]))
        return _with_expected(stage, cfg, task)
    gen = {"max_new_tokens": cfg.generation.max_new_tokens, "batch_size": cfg.generation.batch_size}
    log(f"[2/4] scanning {len(task.harmful)} prompts and answering the evaluation sets with the original model")
    scanned = scan(model, tokenizer, task.harmful, panel, cfg)
    forget_train, _, forget_test = split_forget([d for d in scanned if d.meta["flagged"]], cfg)
    rephrased = rephrase_set([d.prompt_only() for d in forget_test])
    named = [("unseen", task.unseen), ("benign", task.benign_eval), ("edgy", task.edgy_eval),
             *task.heldout_benign.items(), ("rephrased", rephrased), ("normal_train", task.benign_train),
             ("benign_val", task.benign_val)]
    before = {name: generate(model, tokenizer, prompts, desc=name, **gen) for name, prompts in named}
    expected, info = [], {}
    if _self_made(cfg, task):
        expected, info = self_expected(model, tokenizer, forget_train, panel, refusal, cfg)
    stage = BeforeStage(scanned, before, expected, info, rephrased)
    if cfg.reuse_before_stage:
        rows = lambda ds: [dataclasses.asdict(d) for d in ds]  # noqa: E731
        atomic_write_text(cache, json.dumps({"scanned": rows(scanned), "before": before, "expected": rows(expected),
                                             "expected_info": info, "rephrased": rows(rephrased)},
                                            ensure_ascii=False))
    return _with_expected(stage, cfg, task)


def _with_expected(stage: BeforeStage, cfg: RunConfig, task: HarmTaskData) -> BeforeStage:
    """Fill in expected outputs that need no model: the user's file, or fitting refusals of the forget-train prompts."""
    if task.expected is not None:
        return dataclasses.replace(stage, expected=task.expected,
                                   expected_info={"source": "user", "kept": len(task.expected)})
    if cfg.data.expected_recipe == "fitting":
        forget_train = split_forget([d for d in stage.scanned if d.meta["flagged"]], cfg)[0]
        expected = fitting_refusals(forget_train)
        return dataclasses.replace(stage, expected=expected, expected_info={"source": "fitting", "kept": len(expected)})
    return stage


#: ``collateral(prompts, answers) -> share`` of collateral damage in the model's greedy answers.
Collateral = Callable[[list[Dialogue], list[str]], float]


def refusal_rate(refusal: RefusalDetector) -> Collateral:
    """Collateral damage of the harm task: the share of benign prompts the model refuses."""
    def rate(prompts: list[Dialogue], answers: list[str]) -> float:
        refused = refusal.score([p.with_response(a) for p, a in zip(prompts, answers, strict=True)])
        return float((refused >= refusal.threshold).mean())

    return rate


@dataclass
class Monitor:
    """Early-stopping check on prompts kept apart for it: judged greedy answers to forget prompts, a
    task-supplied collateral-damage measure on the greedy answers to a second prompt set (the harm task:
    refusals of benign prompts), and KL to the original on normal dialogues."""

    tokenizer: Any
    prompts: list[Dialogue]
    panel: JudgePanel
    reference: Reference
    normal: list[Dialogue]
    collateral_prompts: list[Dialogue]
    collateral: Collateral
    cfg: RunConfig
    log: Log
    labels: tuple[str, str] = ("val flagged", "benign refused")
    """How the log names the flagged rate and the collateral measure."""

    def __call__(self, model, step: int) -> Check:
        start = time.perf_counter()
        gen = {"max_new_tokens": self.cfg.generation.max_new_tokens, "batch_size": self.cfg.generation.batch_size}
        answers = generate(model, self.tokenizer, [*self.prompts, *self.collateral_prompts], **gen)
        forget, other = answers[: len(self.prompts)], answers[len(self.prompts) :]
        flagged = self.panel([p.with_response(a) for p, a in zip(self.prompts, forget, strict=True)]).flagged
        collateral = self.collateral(self.collateral_prompts, other)
        kl = normal_data_metrics(model, self.reference, self.tokenizer, self.normal,
                                 max_prompt_tokens=self.cfg.data.max_prompt_tokens,
                                 max_response_tokens=self.cfg.data.max_response_tokens)["kl_to_original"]
        check = Check(step=step, flagged_rate=float(flagged.mean()), normal_kl=kl, over_refusal=collateral,
                      seconds=time.perf_counter() - start)
        self.log(f"  step {step}: {self.labels[0]} {check.flagged_rate:.2f}, {self.labels[1]} {check.over_refusal:.2f}, "
                 f"normal KL {kl:.4f} ({check.seconds:.0f}s)")
        return check


def start_run(cfg: RunConfig, overwrite: bool) -> tuple[Path, UnlearningMethod]:
    """Seed, create the run folder (never overlapping the input model), save the resolved config and library
    versions, and build the method, so bad options fail before any heavy work."""
    torch.manual_seed(cfg.train.seed)
    out = prepare_output_dir(cfg.output_dir, resolve_source(cfg.model.name_or_path), overwrite)
    write_yaml(out / "config.yaml", cfg.to_dict())
    write_json(out / "versions.json", library_versions())
    return out, create_method(cfg.method.name, cfg.method.options)


def training_summary(result: TrainResult) -> dict[str, Any]:
    """The ``training`` entry of ``metrics.json``."""
    return {"steps": result.steps, "best_step": result.best_step, "stop_reason": result.stop_reason,
            "seconds": round(result.seconds, 1), "checks": [vars(c) for c in result.checks],
            "prepare": result.prepare_info}


def run(cfg: RunConfig, *, overwrite: bool = False, log: Log = print) -> dict[str, Any]:
    """The whole pipeline; returns the summary that is also written to ``metrics.json``.

    ``data.task`` picks it: harm (below), or privacy / hallucination (:mod:`unlearnlm.tasks.knowledge`).
    """
    if cfg.data.task != "harm":
        from unlearnlm.tasks.knowledge import run_knowledge_task

        return run_knowledge_task(cfg, overwrite=overwrite, log=log)
    t0 = time.perf_counter()
    out, method = start_run(cfg, overwrite)

    log(f"[1/4] loading model {cfg.model.name_or_path} and judges {cfg.judges}")
    model, tokenizer = load_model(cfg.model)
    panel = JudgePanel.from_names(cfg.judges)
    refusal = RefusalDetector()
    task = build_harm_task(cfg.data, seed=cfg.train.seed)
    stage = before_stage(cfg, model, tokenizer, panel, refusal, task, log)
    scanned, before, expected, expected_info = stage.scanned, stage.before, stage.expected, stage.expected_info
    rephrased = stage.rephrased
    flagged = [d for d in scanned if d.meta["flagged"]]
    write_rows(out / "flagged.jsonl", [d.to_json() for d in flagged])
    write_rows(out / "clean.jsonl", [d.to_json() for d in scanned if not d.meta["flagged"]])
    write_rows(out / "expected.jsonl", [d.to_json() for d in expected])
    forget_train, forget_val, forget_test = split_forget(flagged, cfg)
    # Reworded copies of the training prompts teach the refusal of the intent, not of one phrasing; they are trained
    # on (with the original's bad answer and expected output) but not evaluated as "trained on".
    copies = training_copies(forget_train, cfg.data.forget_rephrasings)
    answer_of = {d.prompt: d.response for d in expected}
    expected = expected + [c.with_response(answer_of[c.meta["intent"]]) for c in copies if c.meta["intent"] in answer_of]
    log(f"      flagged {len(flagged)}/{len(scanned)}: train {len(forget_train)}, val {len(forget_val)}, "
        f"test {len(forget_test)}; expected outputs: {expected_info}")
    normal = [p.with_response(a) for p, a in zip(task.benign_train, before["normal_train"], strict=True) if a]
    normal_eval = [p.with_response(a) for p, a in zip(task.benign_eval, before["benign"], strict=True) if a]
    normal_val = [p.with_response(a) for p, a in zip(task.benign_val, before["benign_val"], strict=True) if a]
    if not normal or not normal_eval or not normal_val:
        raise DataError("the original model answered every benign prompt with empty text, so there is no normal "
                        "data to keep its abilities on; check the chat template and generation.max_new_tokens")

    if cfg.lora.enabled:
        model = add_lora(model, cfg.lora, seed=cfg.train.seed)
    reference = Reference(model, copy_weights=not cfg.lora.enabled)
    monitor = Monitor(tokenizer, [d.prompt_only() for d in forget_val], panel, reference, normal_val,
                      [d.prompt_only() for d in normal_val], refusal_rate(refusal), cfg, log)
    log(f"[3/4] unlearning with {method.name} (max {cfg.train.max_steps} steps)")
    result = unlearn(
        model, tokenizer, method, forget=forget_train + copies, normal=normal, expected=expected, train_cfg=cfg.train,
        data_cfg=cfg.data, reference=reference, monitor=monitor,
        initial_check=Check(step=0, flagged_rate=1.0, normal_kl=0.0),  # val prompts are flagged by construction
    )
    log(f"      {result.steps} steps, best step {result.best_step}, stopped: {result.stop_reason} "
        f"({result.seconds:.0f}s)")
    write_rows(out / "history.jsonl", result.history)

    log("[4/4] evaluating before vs after")

    def prompts_of(ds: Sequence[Dialogue]) -> list[Dialogue]:
        return [d.prompt_only() for d in ds]

    sets = [
        EvalSet("forget_train", "harmful", prompts_of(forget_train), [d.response for d in forget_train], "trained on"),
        EvalSet("forget_val", "harmful", prompts_of(forget_val), [d.response for d in forget_val], "early stopping"),
        EvalSet("forget_test", "harmful", prompts_of(forget_test), [d.response for d in forget_test], "held-out"),
        EvalSet("rephrased", "harmful", rephrased, before["rephrased"], "held-out, rephrased",
                judged_as=[Dialogue(d.meta["intent"]) for d in rephrased]),
        EvalSet("unseen", "harmful", task.unseen, before["unseen"], "held-out, other source"),
        EvalSet("benign", "benign", task.benign_eval, before["benign"], "held-out prompts, training sources"),
        *(EvalSet(name, "benign", prompts, before[name], "held-out source") for name, prompts in
          task.heldout_benign.items()),
        EvalSet("edgy", "benign", task.edgy_eval, before["edgy"], "held-out source, benign but edgy"),
    ]
    set_metrics, rows, normal_metrics, _ = evaluate_sets(
        model, reference, tokenizer, sets, {"human_texts": task.normal_texts, "benign_answers": normal_eval},
        panel, refusal, cfg)
    write_rows(out / "examples.jsonl", rows)
    by_rule = flagged_by_rule(rephrased, [r for r in rows if r["set"] == "rephrased"])

    if cfg.save_model:
        save_model_atomically(model, tokenizer, out / "model", merge_lora=cfg.lora.merge)
    summary = {
        "method": method.name,
        "model": cfg.model.name_or_path,
        "judges": cfg.judges,
        "scan": {"scanned": len(scanned), "flagged": len(flagged), "train": len(forget_train),
                 "val": len(forget_val), "test": len(forget_test),
                 **({"train_rephrased_copies": len(copies)} if copies else {})},
        "expected_outputs": expected_info,
        "training": training_summary(result),
        "sets": set_metrics,
        "rephrased_by_rule": by_rule,
        "normal_data": normal_metrics,
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    write_json(out / "metrics.json", summary)
    write_report(out / "report.md", summary, rows)
    log(f"done in {summary['wall_seconds']:.0f}s → {out / 'report.md'}")
    return summary


def flagged_by_rule(rephrased: Sequence[Dialogue], rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Flagged rate before and after for each rephrasing rule (``rows``: the set's per-example rows, in order)."""
    out: dict[str, dict[str, float]] = {}
    for d, row in zip(rephrased, rows, strict=True):
        r = out.setdefault(d.meta["rule"], {"n": 0, "before": 0.0, "after": 0.0})
        r["n"] += 1
        r["before"] += row["before_flagged"]
        r["after"] += row["after_flagged"]
    return {rule: {"n": r["n"], "before": r["before"] / r["n"], "after": r["after"] / r["n"]} for rule, r in out.items()}


def evaluate_sets(model, reference: Reference, tokenizer, sets: Sequence[EvalSet],
                  normal_sets: dict[str, list[Dialogue]], panel: JudgePanel, refusal: RefusalDetector, cfg: RunConfig):
    """Answer every set with ``model`` and compare with the sets' before answers; normal-data metrics too.

    Returns ``(set metrics, per-example rows, normal-data metrics, the after answers by set name)``.
    """
    sets = [s for s in sets if s.prompts]
    after = {s.name: generate(model, tokenizer, s.prompts, desc=f"after:{s.name}",
                              max_new_tokens=cfg.generation.max_new_tokens, batch_size=cfg.generation.batch_size)
             for s in sets}
    set_metrics, rows = compare_sets(panel, refusal, sets, after, encoder=relevance_encoder())
    lengths = {"max_prompt_tokens": cfg.data.max_prompt_tokens, "max_response_tokens": cfg.data.max_response_tokens}
    normal_metrics = {name: normal_data_metrics(model, reference, tokenizer, ds, **lengths)
                      for name, ds in normal_sets.items() if ds}
    return set_metrics, rows, normal_metrics, after


def evaluate_models(cfg: RunConfig, unlearned: str, output_dir: Path, forget_prompts: str | None = None,
                    log: Log = print) -> dict[str, Any]:
    """``unlearnlm evaluate``: the original (``cfg.model``) vs an unlearned model on the same prompts."""
    from dataclasses import replace

    from unlearnlm.data.readers import DatasetSpec, read_dialogues
    from unlearnlm.report import write_report

    t0 = time.perf_counter()
    original, tokenizer = load_model(cfg.model)
    model, _ = load_model(replace(cfg.model, name_or_path=unlearned))
    panel, refusal = JudgePanel.from_names(cfg.judges), RefusalDetector()
    task = build_harm_task(cfg.data, seed=cfg.train.seed)
    named = [("unseen", "harmful", task.unseen, "held-out, other source"),
             ("benign", "benign", task.benign_eval, "held-out prompts, training sources"),
             *((name, "benign", prompts, "held-out source") for name, prompts in task.heldout_benign.items()),
             ("edgy", "benign", task.edgy_eval, "held-out source, benign but edgy")]
    if forget_prompts:
        named.insert(0, ("forget", "harmful", read_dialogues(DatasetSpec(path=forget_prompts, response_column=None)),
                         "given prompts"))
    gen = {"max_new_tokens": cfg.generation.max_new_tokens, "batch_size": cfg.generation.batch_size}
    sets = [EvalSet(name, kind, prompts, generate(original, tokenizer, prompts, desc=f"before:{name}", **gen), role)
            for name, kind, prompts, role in named]
    benign_answers = [p.with_response(a) for s in sets if s.name == "benign"
                      for p, a in zip(s.prompts, s.before, strict=True) if a]
    set_metrics, rows, normal_metrics, _ = evaluate_sets(
        model, Reference.of(original), tokenizer, sets,
        {"human_texts": task.normal_texts, "benign_answers": benign_answers}, panel, refusal, cfg)
    output_dir.mkdir(parents=True, exist_ok=True)
    summary = {"method": f"evaluate {unlearned}", "model": cfg.model.name_or_path, "judges": cfg.judges,
               "sets": set_metrics, "normal_data": normal_metrics, "wall_seconds": round(time.perf_counter() - t0, 1)}
    write_rows(output_dir / "examples.jsonl", rows)
    write_json(output_dir / "metrics.json", summary)
    write_report(output_dir / "report.md", summary, rows)
    log(f"evaluated in {summary['wall_seconds']:.0f}s → {output_dir / 'report.md'}")
    return summary


def scan_only(cfg: RunConfig, prompts: Sequence[Dialogue], output_dir: Path, log: Log = print) -> dict[str, int]:
    """``unlearnlm scan``: answer and judge prompts, write flagged.jsonl and clean.jsonl."""
    model, tokenizer = load_model(cfg.model)
    panel = JudgePanel.from_names(cfg.judges)
    scanned = scan(model, tokenizer, prompts, panel, cfg)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_rows(output_dir / "flagged.jsonl", [d.to_json() for d in scanned if d.meta["flagged"]])
    write_rows(output_dir / "clean.jsonl", [d.to_json() for d in scanned if not d.meta["flagged"]])
    counts = {"scanned": len(scanned), "flagged": sum(d.meta["flagged"] for d in scanned)}
    log(f"flagged {counts['flagged']}/{counts['scanned']} → {output_dir}")
    return counts
