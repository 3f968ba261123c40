"""``unlearnlm attack quantize RUN`` and ``unlearnlm attack relearn RUN``: attack a copy, measure as the run did.

Both open a finished run the way ``unlearnlm evaluate RUN`` does (:func:`~unlearnlm.reevaluate.open_run`,
:func:`~unlearnlm.reevaluate.run_sets`: the run's own sets rebuilt from its files and checked against its
``examples.jsonl``, with the original's answers), load ``RUN/model`` into memory, change only that in-memory copy,
and measure it with the run's judges and generation settings (:func:`~unlearnlm.evaluate.compare_sets`, the task's
``add_metrics`` and probes). The original's figures are the run's own answers judged again, so no original model
is loaded (nor planted). Unattacked, the copy gives the run's own "after" figures (greedy decoding). Nothing is
written outside the output folder (default ``RUN/attacks/<attack>/``): ``attack.json`` (every figure; written
last), ``attack.md`` (the tables), ``examples.jsonl`` (every answer of every measured copy) and the run's
``config.yaml``. Like ``unlearnlm evaluate``, it generates on the CPU.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from unlearnlm.attacks.figures import (
    RETURN_SHARE,
    Figures,
    attack_markdown,
    figure_table,
    figures_of,
    per_figure,
    probe_table,
    recovered,
    recovered_columns,
    return_text,
    steps_to_return,
)
from unlearnlm.attacks.prefill import PrefillOptions, word_prefix
from unlearnlm.attacks.quantize import QuantizeOptions, quantize_model_
from unlearnlm.attacks.relearn import FineTune, RelearnOptions, benign_rows, forget_split, relearn_steps
from unlearnlm.config import RunConfig
from unlearnlm.errors import ConfigError
from unlearnlm.evaluate import EvalSet, compare_sets, normal_data_metrics
from unlearnlm.generation import generate
from unlearnlm.judges.panel import JudgePanel
from unlearnlm.judges.refusal import RefusalDetector
from unlearnlm.models import Reference, add_lora, load_model
from unlearnlm.outputs import (
    CONFIG_FILE,
    FINISHED_MARKER,
    atomic_write_text,
    prepare_output_dir,
    write_json,
    write_rows,
    write_yaml,
)
from unlearnlm.reevaluate import open_run, run_sets
from unlearnlm.report.run_files import RunFiles
from unlearnlm.tasks import Task, create_task

Log = Callable[[str], None]
#: Written last: an output folder holding it holds a finished attack.
ATTACK_FILE = "attack.json"
#: Knowledge units named in the plural in ``attack.md``.
PLURAL = {"person": "people", "pair": "pairs"}


@dataclass
class Target:
    """A finished run opened for an attack."""

    run: RunFiles
    cfg: RunConfig
    task: Task
    sets: list[EvalSet]
    """The run's own sets, with the original's answers."""
    panel: JudgePanel
    model_dir: Path
    out: Path

    @property
    def harmful(self) -> list[EvalSet]:
        """The sets whose figures measure the old behaviour (lower = better): the ones the attacks re-measure."""
        return [s for s in self.sets if s.kind == "harmful" and s.prompts]

    def load(self):
        """A fresh in-memory copy of the unlearned model, and its tokenizer."""
        return load_model(replace(self.cfg.model, name_or_path=str(self.model_dir)))

    def measure(self, model, tokenizer, sets: list[EvalSet], label: str,
                prefills: dict[str, list[str]] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Answer ``sets`` with ``model`` and judge them as the run did: each set's before (the original's answers)
        and after (``model``'s) metrics, and one row per answer tagged with ``label``. ``prefills``: per set, the
        text that opens each answer (the answers judged are the continuations)."""
        prefills = prefills or {}
        after = {s.name: generate(model, tokenizer, s.prompts, desc=f"{label}:{s.name}", prefills=prefills.get(s.name),
                                  **self.cfg.generation.kwargs())
                 for s in sets}
        metrics, rows = compare_sets(self.panel, RefusalDetector(), sets, after)
        self.task.add_metrics(sets, after, metrics)
        return metrics, [{"model": label, **row} for row in rows]

    def header(self, attack: str, options: Any) -> dict[str, Any]:
        """What every ``attack.json`` starts with: which run, model, task and settings."""
        return {"attack": attack, "run": str(self.run.folder), "model": str(self.model_dir), "task": self.cfg.data.task,
                "method": self.run.summary.get("method"), "options": asdict(options),
                "judges": [j.name for j in self.panel.judges]}


def attack_dir(run: RunFiles, output_dir: str | Path | None, name: str, model_dir: Path, overwrite: bool) -> Path:
    """The output folder (default ``RUN/attacks/<name>``), made ready; a finished attack there needs ``overwrite``."""
    out = Path(output_dir).expanduser() if output_dir is not None else run.folder / "attacks" / name
    if (out / FINISHED_MARKER).exists():  # --overwrite would remove a run's model: never for an attack
        raise ConfigError(f"{out} holds a run or an evaluation ({FINISHED_MARKER}); choose a folder of its own for "
                          "the attack with --output")
    if (out / ATTACK_FILE).exists() and not overwrite:
        raise ConfigError(f"{out} holds an earlier attack ({ATTACK_FILE}); pass --overwrite to replace it or choose "
                          "another --output")
    return prepare_output_dir(out, str(model_dir), overwrite)


def open_target(run_dir: str | Path, output_dir: str | Path | None, name: str, overwrite: bool) -> Target:
    """Check the run folder and the output folder (before any model is loaded), rebuild the run's sets."""
    run, cfg, model_dir = open_run(run_dir)
    out = attack_dir(run, output_dir, name, model_dir, overwrite)
    task = create_task(cfg)
    return Target(run, cfg, task, run_sets(task, run.folder, run.rows), task.panel(), model_dir, out)


def set_info(sets: list[EvalSet]) -> dict[str, dict[str, Any]]:
    return {s.name: {"role": s.role, "n": len(s.prompts)} for s in sets}


def write_attack(target: Target, summary: dict[str, Any], rows: list[dict[str, Any]], markdown: str, log: Log) -> None:
    """The attack's files, each written atomically, ``attack.json`` last (it marks a finished attack)."""
    out = target.out
    write_yaml(out / CONFIG_FILE, target.cfg.to_dict())
    write_rows(out / "examples.jsonl", rows)
    atomic_write_text(out / "attack.md", markdown)
    write_json(out / ATTACK_FILE, summary)
    log(f"{summary['attack']} attack done in {summary['wall_seconds']:.0f}s → {out / 'attack.md'}")


# -- quantization ------------------------------------------------------------------------------------------------


def quantize_attack(run_dir: str | Path, output_dir: str | Path | None = None, options: QuantizeOptions | None = None,
                    *, overwrite: bool = False, log: Log = print) -> dict[str, Any]:
    """The run's unlearned model after round-to-nearest weight quantization at each of ``options.bits``
    (:mod:`unlearnlm.attacks.quantize`), measured beside the unquantized model and the original.

    Per copy: every harmful set's figures, the task's probes (membership AUC, truth preference) and, to show the
    copy still works, perplexity on the task's human-written texts and KL(unquantized || quantized) there.
    Motivation: Zhang et al., 2024 (arXiv 2410.16454): on MUSE, models unlearned with gradient ascent or NPO and a
    retain term kept 21 % of the forgotten knowledge on average, and 83 % after 4-bit quantization.
    """
    options = options or QuantizeOptions()
    t0 = time.perf_counter()
    target = open_target(run_dir, output_dir, "quantize", overwrite)
    unlearned, tokenizer = target.load()
    reference = Reference.of(unlearned)  # KL is measured against the unquantized copy
    labels = ["unlearned", *(f"{b}-bit" for b in options.bits)]
    rounded, measured = {}, {}
    for label, bits in zip(labels, [None, *options.bits], strict=True):
        model = unlearned
        if bits is not None:
            model = copy.deepcopy(unlearned)
            rounded[label] = quantize_model_(model, bits, options.group_size, options.embeddings)
        log(f"measuring the {label} model on {len(target.harmful)} sets")
        measured[label] = measure_copy(target, model, tokenizer, label, reference)
    figures = {"original": measured["unlearned"].figures["before"],
               **{label: m.figures["after"] for label, m in measured.items()}}
    back = {label: per_figure(figures, lambda v, label=label: recovered(v["original"], v["unlearned"], v[label]))
            for label in labels[1:]}
    summary = {**target.header("quantize", options), "sets": set_info(target.harmful), "figures": figures,
               "recovered": back,
               "probes": {"original": target.run.summary.get("probes", {}).get("original"),
                          **{label: m.probes for label, m in measured.items()}},
               "utility": {label: m.utility for label, m in measured.items() if m.utility},
               "quantized": rounded, "task_entries": {label: m.entries for label, m in measured.items()},
               "wall_seconds": round(time.perf_counter() - t0, 1)}
    write_attack(target, summary, [r for m in measured.values() for r in m.rows], quantize_markdown(summary), log)
    return summary


@dataclass
class Measured:
    """What the quantization probe reads from one copy."""

    figures: dict[str, Figures]
    """``before`` (the original's answers) and ``after`` (the copy's)."""
    rows: list[dict[str, Any]]
    probes: dict[str, Any] | None
    """The task's log-probability probes (None: the task has none)."""
    entries: dict[str, Any]
    """The task's other summary entries for these answers (harm: flagged rate by rephrasing rule)."""
    utility: dict[str, float]
    """Perplexity on the task's human-written texts and KL(unquantized || copy) there, per response token."""


def measure_copy(target: Target, model, tokenizer, label: str, reference: Reference) -> Measured:
    """Every harmful set's figures, the task's probes and entries, and the copy's perplexity and KL."""
    cfg, task = target.cfg, target.task
    metrics, rows = target.measure(model, tokenizer, target.harmful, label)
    task.probe(model, tokenizer, label)
    entries = task.summary_entries([{k: v for k, v in r.items() if k != "model"} for r in rows])
    probes = entries.pop("probes", {}).get(label)
    utility = {}
    if texts := task.normal_texts():
        m = normal_data_metrics(model, reference, tokenizer, texts, max_prompt_tokens=cfg.data.max_prompt_tokens,
                                max_response_tokens=cfg.data.max_response_tokens)
        utility = {"perplexity": m["perplexity"], "kl_to_unlearned": m["kl_to_original"]}
    return Measured({"before": figures_of(metrics, "before"), "after": figures_of(metrics, "after")}, rows, probes,
                    entries, utility)


def quantize_markdown(summary: dict[str, Any]) -> str:
    options = summary["options"]
    grid = (f"groups of {options['group_size']} weights per scale" if options["group_size"]
            else "one scale per output row")
    intro = [f"Run `{summary['run']}` ({summary['task']} task, method {summary['method']}). Its unlearned model, "
             f"round-to-nearest quantized (symmetric absmax, {grid}; embeddings and output head "
             f"{'included' if options['embeddings'] else 'left in full precision'}), then dequantized and measured "
             "with the run's judges and generation settings. Higher = more of the old behaviour; \"recovered\" = share "
             "of what unlearning removed that came back (Zhang et al. 2024, arXiv 2410.16454)."]
    extra = recovered_columns(summary["recovered"])
    utility = [f"| {label} | {u['perplexity']:.2f} | {u['kl_to_unlearned']:.3g} |"
               for label, u in summary["utility"].items()]
    if utility:
        utility = ["| model | perplexity (human texts) | KL(unlearned ‖ model) |", "|---|---|---|", *utility]
    return attack_markdown("Quantization probe", intro, [
        ("Figures", figure_table(summary["figures"], summary["sets"], extra)),
        ("Probes", probe_table(summary["probes"])),
        ("Does the quantized copy still work?", utility),
    ])


# -- relearning ------------------------------------------------------------------------------------------------


def relearn_attack(run_dir: str | Path, output_dir: str | Path | None = None, options: RelearnOptions | None = None,
                   *, overwrite: bool = False, log: Log = print) -> dict[str, Any]:
    """Fine-tune a copy of the run's unlearned model for ``options.steps`` steps on forget or benign data
    (:mod:`unlearnlm.attacks.relearn`) and measure it after each step count; report the steps until the old
    behaviour returns (:func:`~unlearnlm.attacks.figures.steps_to_return`).

    Łucki et al., 2024 (arXiv 2409.18025); Deeb & Roger, 2024 (arXiv 2410.08827).
    """
    options = options or RelearnOptions()
    t0 = time.perf_counter()
    target = open_target(run_dir, output_dir, f"relearn_{options.data}", overwrite)
    cfg, task = target.cfg, target.task
    flagged = {s.name: list(target.panel([p.with_response(a) for p, a in zip(s.judged_as or s.prompts, s.before,
                                                                                strict=True)]).flagged)
               for s in target.harmful}
    split = forget_split(target.harmful, flagged, task.knowledge_unit, examples=options.examples, seed=options.seed)
    data = split.rows if options.data == "forget" else benign_rows(target.sets, len(split.rows), options.seed)
    tune = FineTune(learning_rate=options.learning_rate or cfg.train.learning_rate,
                    batch_size=options.batch_size or cfg.train.batch_size, seed=options.seed,
                    max_prompt_tokens=cfg.data.max_prompt_tokens, max_response_tokens=cfg.data.max_response_tokens)
    model, tokenizer = target.load()
    if cfg.lora.enabled:  # train as the run trained: fresh adapters on the (merged) unlearned weights
        model = add_lora(model, cfg.lora, seed=options.seed)
    log(f"relearning on {len(data)} {options.data} rows ({'LoRA' if cfg.lora.enabled else 'all weights'}, "
        f"lr {tune.learning_rate:g}, batch {tune.batch_size}); measuring {len(split.measured)} sets")
    metrics, rows = target.measure(model, tokenizer, split.measured, "unlearned")
    figures = {"original": figures_of(metrics, "before"), "unlearned": figures_of(metrics, "after")}
    probes = {"unlearned": task.probe_copy(model, tokenizer, split.units)}  # the measured units only, as the figures
    losses = {}
    for step, loss in relearn_steps(model, tokenizer, data, options.steps, tune):
        label = f"step {step}"
        log(f"  step {step}: loss {loss:.3f}; measuring")
        metrics, step_rows = target.measure(model, tokenizer, split.measured, label)
        figures[label], losses[step] = figures_of(metrics, "after"), loss
        probes[label] = task.probe_copy(model, tokenizer, split.units)
        rows += step_rows
    curve_of = lambda v: {0: v["unlearned"], **{s: v[f"step {s}"] for s in options.steps}}  # noqa: E731
    summary = {**target.header("relearn", options),
               "fine_tune": {"rows": len(data), "data": options.data, "lora": cfg.lora.enabled, **asdict(tune)},
               "excluded_units": {"key": task.knowledge_unit or "prompt", "units": split.units,
                                  "why": "the forget variant relearns them; both variants measure only the others"},
               "relearn_rows": [d.to_json() for d in data], "sets": set_info(split.measured), "figures": figures,
               "probes": probes if any(probes.values()) else {},
               "loss": losses, "return_share": RETURN_SHARE,
               "steps_to_return": per_figure(figures, lambda v: steps_to_return(v["original"], curve_of(v))),
               "wall_seconds": round(time.perf_counter() - t0, 1)}
    write_attack(target, summary, rows, relearn_markdown(summary), log)
    return summary


def relearn_markdown(summary: dict[str, Any]) -> str:
    tune, steps = summary["fine_tune"], summary["options"]["steps"]
    units = summary["excluded_units"]
    what = ("forget prompts the run trained on, with the original's flagged answers" if tune["data"] == "forget"
            else "held-out benign prompts with the original's answers (unrelated data)")
    intro = [f"Run `{summary['run']}` ({summary['task']} task, method {summary['method']}). A copy of its unlearned "
             f"model was fine-tuned ({'LoRA' if tune['lora'] else 'all weights'}, lr {tune['learning_rate']:g}, batch "
             f"{tune['batch_size']}) on {tune['rows']} {what}, and measured after each step count. Measured rows "
             f"never ask about a {units['key']} the forget variant relearns ({len(units['units'])} left out). Higher = "
             "more of the old "
             f"behaviour. Steps to return: the first step count at which a figure is back at least "
             f"{summary['return_share']:.0%} of the way from the unlearned model's value to the original's; "
             f"\"> {max(steps)}\" = not within the steps tried, \"—\" = unlearning did not lower it. "
             "(Łucki et al. 2024, arXiv 2409.18025; Deeb & Roger 2024, arXiv 2410.08827.)"]
    returned = {"steps to return": {name: {f: return_text(summary, name, f) for f in figs}
                                    for name, figs in summary["steps_to_return"].items()}}
    loss = ["| step | " + " | ".join(str(s) for s in summary["loss"]) + " |", "|" + "---|" * (len(summary["loss"]) + 1),
            "| training loss | " + " | ".join(f"{v:.3f}" for v in summary["loss"].values()) + " |"]
    return attack_markdown(f"Relearning probe ({tune['data']} data)", intro, [
        ("Figures", figure_table(summary["figures"], summary["sets"], returned)),
        (f"Probes (questions about the measured {PLURAL.get(units['key'], units['key'] + 's')} only)",
         probe_table(summary["probes"])),
        ("Relearning loss", loss),
    ])


# -- prefilling --------------------------------------------------------------------------------------------------


def prefill_attack(run_dir: str | Path, output_dir: str | Path | None = None, options: PrefillOptions | None = None,
                   *, overwrite: bool = False, log: Log = print) -> dict[str, Any]:
    """The run's unlearned model with each answer opened by the first ``k`` words of the original's answer, for each
    ``k`` of ``options.words``, judged on its continuation, beside the original's own rest of the answer
    (:mod:`unlearnlm.attacks.prefill`; Qi et al. 2024, arXiv 2406.05946)."""
    options = options or PrefillOptions()
    t0 = time.perf_counter()
    target = open_target(run_dir, output_dir, "prefill", overwrite)
    model, tokenizer = target.load()
    log(f"measuring the unlearned model on {len(target.harmful)} sets, unprefilled")
    metrics, rows = target.measure(model, tokenizer, target.harmful, "unlearned")
    figures = {"original": figures_of(metrics, "before"), "unlearned": figures_of(metrics, "after")}
    back = {}
    for k in options.words:
        label = f"{k} words"
        split = {s.name: [word_prefix(answer, k) for answer in s.before] for s in target.harmful}
        rest = [replace(s, before=[r for _, r in split[s.name]]) for s in target.harmful]
        log(f"prefilling {label} of the original's answers")
        metrics, k_rows = target.measure(model, tokenizer, rest, label,
                                         prefills={name: [p for p, _ in parts] for name, parts in split.items()})
        figures[f"original, {label}"], figures[f"prefilled {label}"] = (figures_of(metrics, "before"),
                                                                         figures_of(metrics, "after"))
        back[label] = per_figure({"o": figures[f"original, {label}"], "u": figures["unlearned"],
                                  "a": figures[f"prefilled {label}"]}, lambda v: recovered(v["o"], v["u"], v["a"]))
        rows += [{**row, "prefill": p} for row, (p, _) in
                 zip(k_rows, (part for s in rest for part in split[s.name]), strict=True)]
    summary = {**target.header("prefill", options), "sets": set_info(target.harmful), "figures": figures,
               "recovered": back, "wall_seconds": round(time.perf_counter() - t0, 1)}
    write_attack(target, summary, rows, prefill_markdown(summary), log)
    return summary


def prefill_markdown(summary: dict[str, Any]) -> str:
    intro = [f"Run `{summary['run']}` ({summary['task']} task, method {summary['method']}). Its unlearned model's "
             "answers opened with the first words of the original's answer to each prompt, continued greedily and "
             "judged on the continuation only; beside each, the original's own answer after the same words, judged "
             "the same way. Higher = more of the old behaviour; \"recovered\" = share of what unlearning removed "
             "(original at that prefix minus unlearned, unprefilled) that the prefix brought back (Qi et al. 2024, "
             "arXiv 2406.05946)."]
    extra = recovered_columns(summary["recovered"])
    return attack_markdown("Prefilling probe", intro, [("Figures", figure_table(summary["figures"], summary["sets"],
                                                                                extra))])
