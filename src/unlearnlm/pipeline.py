"""The paper's flow for any task, end to end, from one :class:`~unlearnlm.config.RunConfig`.

1. Load **the original** (a task may plant knowledge first) and the task's judge panel (the evaluative model).
2. **Scan** and answer every evaluation set with the original; the task builds the forget set, the expected
   outputs, the normal data and its early-stopping measures (:meth:`~unlearnlm.tasks.base.Task.prepare`).
3. **Unlearn** with the configured method; early stopping on the judged forget answers, the task's collateral
   damage and normal KL.
4. **Evaluate** before vs after; write metrics, per-example answers, report and model.

Nothing here depends on which task runs: every difference lives in the task (:mod:`unlearnlm.tasks`).

Under ``accelerate launch`` every process runs this flow in step: generation and judging are shared out between
them, training is DDP, and only the main process writes files and prints (:mod:`unlearnlm.distributed`).
"""

from __future__ import annotations

import json
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from unlearnlm import distributed, lm_eval_bridge
from unlearnlm.config import RunConfig
from unlearnlm.data.records import Dialogue
from unlearnlm.errors import ConfigError, TrainingDiverged
from unlearnlm.evaluate import evaluate_sets
from unlearnlm.judges.panel import JudgePanel
from unlearnlm.judges.refusal import RefusalDetector
from unlearnlm.loader import load_config
from unlearnlm.methods import UnlearningMethod, create_method
from unlearnlm.models import Reference, add_lora, load_model, resolve_causal_lm
from unlearnlm.outputs import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    FINISHED_MARKER,
    TRAINING_FILE,
    library_versions,
    prepare_output_dir,
    resume_output_dir,
    save_model_atomically,
    write_json,
    write_rows,
    write_yaml,
)
from unlearnlm.report import write_reports
from unlearnlm.report.card import write_model_card
from unlearnlm.scanning import Monitor, RefusalMiner, scan
from unlearnlm.tasks import Plan, Task, create_task
from unlearnlm.train import Check, TrainResult, check_normal_boost, unlearn

Log = Callable[[str], None]


def start_run(cfg: RunConfig, overwrite: bool, resume: bool = False) -> tuple[Path, UnlearningMethod, Task]:
    """Check what can be checked without loading the model, then create the run folder and save the resolved config
    and library versions (a resumed run keeps those of its start).

    The method and its options, the task and every data file it reads, the model folder and the output folder are
    checked before anything is written, so a mistake leaves the output folder as it was.
    """
    torch.manual_seed(cfg.train.seed)
    method = create_method(cfg.method.name, cfg.method.options)
    check_normal_boost(method, cfg.train)
    task = create_task(cfg)
    source = resolve_causal_lm(cfg.model.name_or_path)
    lm_eval_bridge.check_tasks(cfg)
    if resume:
        return distributed.on_main(lambda: resume_output_dir(cfg.output_dir)), method, task

    def create() -> Path:
        out = prepare_output_dir(cfg.output_dir, source, overwrite)
        write_yaml(out / CONFIG_FILE, cfg.to_dict())
        write_json(out / "versions.json", library_versions())
        return out

    return distributed.on_main(create), method, task


def resume(run_dir: str | Path, log: Log = print) -> dict[str, Any]:
    """Continue a killed ``unlearnlm run`` from its checkpoint, with the config saved in its folder.

    The stages before training run again: they are deterministic, and the before stage comes from its cache
    (``reuse_before_stage``). Training then continues from the checkpoint, so the result equals an uninterrupted
    run's bit for bit on the same machine (every figure but the timings).
    """
    out = distributed.on_main(lambda: resume_output_dir(run_dir))
    cfg = load_config(out / CONFIG_FILE, [f"output_dir={json.dumps(str(out))}"])
    return run(cfg, resume=True, log=log)


def training_summary(result: TrainResult, labels: tuple[str, str]) -> dict[str, Any]:
    """The ``training`` entry of ``metrics.json``; ``labels`` name the checks' flagged rate and collateral measure."""
    return {"steps": result.steps, "best_step": result.best_step, "stop_reason": result.stop_reason,
            "seconds": round(result.seconds, 1), "checks": [vars(c) for c in result.checks],
            "check_labels": list(labels), "prepare": result.prepare_info,
            **({"mined": result.mined} if result.mined else {}),
            **({"normal_boosts": result.boosted} if result.boosted else {})}


class StageClock:
    """Wall-clock seconds per pipeline stage, in the order the stages ran (``metrics.json``: ``stage_seconds``)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._start, self._name = time.perf_counter(), ""

    def start(self, name: str) -> None:
        """End the running stage (if any) and start ``name``."""
        self.stop()
        self._start, self._name = time.perf_counter(), name

    def stop(self) -> dict[str, float]:
        """End the running stage; returns every stage's seconds so far, rounded to 0.1 s."""
        if self._name:
            self.seconds[self._name] = self.seconds.get(self._name, 0.0) + time.perf_counter() - self._start
            self._name = ""
        return {name: round(sec, 1) for name, sec in self.seconds.items()}


def run_precision(cfg: RunConfig) -> dict[str, str]:
    """What the run computed in (``metrics.json``: ``precision``): ``bf16 autocast`` (or ``fp16 autocast``) where
    ``mixed_precision`` resolves to it on this machine (``auto``: bf16 on a GPU or a CPU with AMX), else the model's
    own dtype."""
    def name(mixed_precision: str) -> str:
        resolved = distributed.resolve_precision(mixed_precision)
        return cfg.model.dtype if resolved == "no" else f"{resolved} autocast"
    return {"training": name(cfg.train.mixed_precision), "generation": name(cfg.generation.mixed_precision)}


def run_machine() -> dict[str, Any]:
    """What the run computed on (``metrics.json``: ``machine``): the CPU's model name, whether it has AMX tiles (what
    ``mixed_precision: auto`` turns on bf16 for), torch's threads, and the GPU's name where there is one; timings
    from two machines compare only with this in view."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "amx": distributed.cpu_has_amx(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def finish_run(out: Path, summary: dict[str, Any], rows: list[dict[str, Any]], history: list[dict[str, float]],
               cfg: RunConfig) -> None:
    """Write the reports and the model card, then the finished marker (last: the folder now holds a finished run),
    and drop the checkpoint, which only a killed run needs."""
    write_reports(out, summary, rows, history, cfg.to_dict())
    if cfg.save_model:
        write_model_card(out / "model", summary, cfg.to_dict())
    write_json(out / FINISHED_MARKER, summary)
    shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)


@dataclass
class TrainedRun:
    """A run trained but not yet evaluated, held in memory: everything :func:`evaluate_run` needs.

    :func:`run` is :func:`train_run` then :func:`evaluate_run`; keeping them apart lets a caller train several runs
    and evaluate only the one it keeps (``benchmarks/compare_methods.py --tries`` chooses on the early-stopping split,
    which training alone measures), and :meth:`discard` the others.
    """

    cfg: RunConfig
    out: Path
    method: UnlearningMethod
    task: Task
    model: Any
    tokenizer: Any
    panel: JudgePanel
    plan: Plan
    reference: Reference
    result: TrainResult
    clock: StageClock
    lm_original: dict[str, Any] | None
    log: Log
    elapsed: float
    """Seconds from the run's start to the end of training (its clock stops there until evaluation)."""

    def training(self) -> dict[str, Any]:
        """The ``training`` entry of the run's ``metrics.json`` (steps, stop reason, every check)."""
        return training_summary(self.result, self.plan.labels)

    def discard(self) -> None:
        """Drop a run that will not be evaluated: its folder keeps the config, the scan files, ``history.jsonl`` and
        ``check_answers.jsonl``, gains ``training.json`` (:meth:`training`), and loses its checkpoint; no model is
        saved, and no ``metrics.json`` is written, so the folder does not pass for a finished run."""
        distributed.on_main(lambda: (write_json(self.out / TRAINING_FILE, self.training()),
                                     shutil.rmtree(self.out / CHECKPOINT_DIR, ignore_errors=True)))
        self.model = self.reference = None


def train_run(cfg: RunConfig, *, overwrite: bool = False, resume: bool = False, log: Log = print) -> TrainedRun:
    """Stages 1-3 of :func:`run`: the original and judges, the before stage, training with early stopping (the best
    check restored). Nothing is evaluated or saved beyond the run folder's config, scan files and history."""
    log = distributed.main_progress(log)
    t0 = time.perf_counter()
    clock = StageClock()
    clock.start("original and judges")  # includes converting the embedded model and planting, where they happen
    out, method, task = start_run(cfg, overwrite, resume)

    log(f"[1/4] {task.name} task: loading the original model ({cfg.model.name_or_path}) and the judges")
    model, tokenizer = load_model(task.original(log))
    panel = task.panel()
    task.probe(model, tokenizer, "original")
    lm_original = None
    if cfg.utility.lm_eval_tasks:  # before training: with LoRA the original is not kept as a model of its own
        clock.start("lm-eval, original")
        log(f"      lm-eval: {', '.join(cfg.utility.lm_eval_tasks)} on the original")
        lm_original = lm_eval_bridge.score(model, tokenizer, cfg.utility)
    clock.start("before (scan, original's answers, expected outputs)")
    plan = task.prepare(model, tokenizer, panel, log)
    distributed.on_main(lambda: [write_rows(out / name, [d.to_json() for d in rows])
                                 for name, rows in plan.files.items()])
    clock.start("training")
    bound_texts = cfg.train.max_perplexity_increase is not None  # read only when bounded: about 10 s a check
    if bound_texts and not plan.stop_texts:
        raise ConfigError(f"train.max_perplexity_increase needs human-written texts that the report does not read: "
                          f"data.normal_texts has none beyond the data.eval_size ({cfg.data.eval_size}) reported ones; "
                          "give it more rows, lower data.eval_size, or unset the bound")

    if cfg.lora.enabled:
        model = add_lora(model, cfg.lora, seed=cfg.train.seed)
    reference = Reference(model, copy_weights=not cfg.lora.enabled)
    start_auc = plan.stop_membership(model, tokenizer) if plan.stop_membership is not None else None
    start_belief = plan.stop_belief(model, tokenizer) if plan.stop_belief is not None else None
    monitor = Monitor(tokenizer, plan.stop_prompts, panel, reference, plan.stop_normal, plan.collateral_prompts,
                      plan.collateral, cfg, log, labels=plan.labels, judged_as=plan.stop_judged_as,
                      membership=plan.stop_membership, belief=plan.stop_belief, belief_start=start_belief,
                      texts=plan.stop_texts if bound_texts else [])
    log(f"[3/4] unlearning with {method.name} (max {cfg.train.max_steps} steps)")
    try:
        result = unlearn(model, tokenizer, method, forget=plan.forget, normal=plan.normal, expected=plan.expected,
                         refusals=plan.refusals, lookalikes=plan.lookalikes, recipe_refusals=plan.recipe_refusals,
                         reserve=plan.reserve,
                         unseen_views=plan.unseen_views, unseen_model=plan.unseen_model,
                         train_cfg=cfg.train, data_cfg=cfg.data, reference=reference, monitor=monitor,
                         miner=RefusalMiner(tokenizer, cfg, log) if cfg.train.mine_refusals else None,
                         initial_check=Check(step=0, flagged_rate=plan.initial_flagged, normal_kl=0.0,
                                             membership_auc=start_auc,
                                             belief_drift=None if start_belief is None else 0.0,
                                             perplexity_change=0.0 if bound_texts else None),
                         checkpoint_dir=out / CHECKPOINT_DIR, resume=resume)
    except TrainingDiverged as exc:  # the losses up to the failing step show how it diverged; no model is saved
        distributed.on_main(lambda: write_rows(out / "history.jsonl", exc.history))
        raise
    resumed = f", resumed from the checkpoint at step {result.resumed_from}" if result.resumed_from else ""
    log(f"      {result.steps} steps{resumed}, best step {result.best_step}, stopped: {result.stop_reason} "
        f"({result.seconds:.0f}s)")
    distributed.on_main(lambda: (write_rows(out / "history.jsonl", result.history),
                                 write_rows(out / "check_answers.jsonl", monitor.answers)))
    clock.stop()
    return TrainedRun(cfg=cfg, out=out, method=method, task=task, model=model, tokenizer=tokenizer, panel=panel,
                      plan=plan, reference=reference, result=result, clock=clock, lm_original=lm_original, log=log,
                      elapsed=time.perf_counter() - t0)


def evaluate_run(trained: TrainedRun) -> dict[str, Any]:
    """Stage 4 of :func:`run`: evaluate before vs after, save the model, write the reports; returns the summary also
    written to ``metrics.json``."""
    cfg, out, task, log, clock = trained.cfg, trained.out, trained.task, trained.log, trained.clock
    model, tokenizer, plan, panel = trained.model, trained.tokenizer, trained.plan, trained.panel
    result = trained.result
    if model is None:
        raise ValueError(f"the run in {out} was discarded; it has no model to evaluate")
    t0 = time.perf_counter()
    log("[4/4] evaluating before vs after")
    clock.start("evaluation")
    set_metrics, rows, normal_metrics, after = evaluate_sets(
        model, trained.reference, tokenizer, plan.sets, plan.normal_sets, panel, RefusalDetector(), cfg)
    task.add_metrics(plan.sets, after, set_metrics)
    task.probe(model, tokenizer, "after")
    distributed.on_main(lambda: write_rows(out / "examples.jsonl", rows))
    utility = {}
    if trained.lm_original is not None:
        clock.start("lm-eval, unlearned")
        log(f"      lm-eval: {', '.join(cfg.utility.lm_eval_tasks)} on the unlearned model")
        lm_after = lm_eval_bridge.score(model, tokenizer, cfg.utility)
        seconds = clock.stop()
        utility = {"lm_eval": lm_eval_bridge.comparison(trained.lm_original, lm_after, cfg.utility,
                                                        seconds["lm-eval, original"] + seconds["lm-eval, unlearned"])}
    clock.start("saving the model")
    if cfg.save_model:
        distributed.on_main(lambda: save_model_atomically(model, tokenizer, out / "model",
                                                          merge_lora=cfg.lora.merge))
    stage_seconds = clock.stop()
    stage_seconds["of which early-stopping checks"] = round(sum(c.seconds for c in result.checks), 1)
    summary = {
        "method": trained.method.name,
        "method_options": asdict(trained.method.options),
        "model": cfg.model.name_or_path,
        "judges": [j.name for j in panel.judges],
        "scan": plan.scan,
        "expected_outputs": plan.expected_info,
        "training": trained.training(),
        "sets": set_metrics,
        **task.summary_entries(rows),
        "normal_data": normal_metrics,
        **utility,
        "precision": run_precision(cfg),
        "machine": run_machine(),
        "stage_seconds": stage_seconds,
        "wall_seconds": round(trained.elapsed + time.perf_counter() - t0, 1),
    }
    distributed.on_main(lambda: finish_run(out, summary, rows, result.history, cfg))
    log(f"done in {summary['wall_seconds']:.0f}s → {out / 'report.md'}")
    return summary


def run(cfg: RunConfig, *, overwrite: bool = False, resume: bool = False, log: Log = print) -> dict[str, Any]:
    """The whole pipeline for the task ``cfg.data.task``; returns the summary also written to ``metrics.json``.

    ``resume``: continue the run in ``cfg.output_dir`` from its checkpoint (see :func:`resume`). Under a launcher
    every process returns the summary; only the main process writes and logs.
    """
    return evaluate_run(train_run(cfg, overwrite=overwrite, resume=resume, log=log))


def scan_only(cfg: RunConfig, prompts: Sequence[Dialogue], output_dir: Path, log: Log = print) -> dict[str, int]:
    """``unlearnlm scan``: answer and judge prompts, write flagged.jsonl and clean.jsonl."""
    model, tokenizer = load_model(cfg.model)
    panel = JudgePanel.from_names(cfg.judges)
    scanned = scan(model, tokenizer, prompts, panel, cfg)

    def write() -> None:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_rows(output_dir / "flagged.jsonl", [d.to_json() for d in scanned if d.meta["flagged"]])
        write_rows(output_dir / "clean.jsonl", [d.to_json() for d in scanned if not d.meta["flagged"]])

    distributed.on_main(write)
    counts = {"scanned": len(scanned), "flagged": sum(d.meta["flagged"] for d in scanned)}
    distributed.main_progress(log)(f"flagged {counts['flagged']}/{counts['scanned']} → {output_dir}")
    return counts
