"""Every registered method on the same task, data, budget and stop rule; prints one Markdown table and writes
``compare.html`` (``unlearnlm compare``'s page) into ``--output``.

The original model's stage (scan, before answers, expected outputs) is computed once and reused, so each
method sees identical forget, normal and evaluation sets. Held-out rows are never trained or stopped on.

    python benchmarks/compare_methods.py                       # the embedded default harm task
    python benchmarks/compare_methods.py configs/harm.yaml --methods distance_cluster yao --set train.max_steps=40
    python benchmarks/compare_methods.py configs/privacy.yaml --methods distance_cluster gradient_ascent yao
    python benchmarks/compare_methods.py --methods npo rmu --tries train.learning_rate=1e-4,6e-4
    python benchmarks/compare_methods.py --methods npo rmu --tries train.learning_rate=1e-4,6e-4 \
        --tries rmu:method.options.steering_coeff=2,20

The harm task checks from step 60 (``train.first_check``, a speed choice that keeps the paper's method's kept step);
baselines that forget only in their first steps need earlier checks, so the README's comparisons pass ``--set
train.first_check=10``, the same for every method.

``--tries KEY=V1,V2`` (repeatable: every combination) runs each method once per value, the same tries for every
method, into ``OUTPUT/METHOD/try-N``; ``--tries METHOD:KEY=V1,V2`` gives one method its own setting to tune in
place of the shared ones (e.g. RMU's steering coefficient), as many tries as the others get. Per method it keeps
the try whose kept checkpoint the stop rule ranks best on the early-stopping split (:mod:`unlearnlm.tuning`;
held-out figures never enter the choice); the table shows the kept try, and ``OUTPUT/METHOD/tries.json`` every
try's overrides and kept check. Only the kept try is evaluated and saved (its folder is a finished run): a try that
ranks lower leaves its config, scan files, ``history.jsonl`` and ``training.json`` (its checks), and no model. The
best try so far is held in memory while the next one trains (two models at once).

``--resume`` reads the methods already finished in ``--output`` (the kept run's ``metrics.json``, and ``tries.json``
after several tries) instead of running them again, so a comparison stopped part-way goes on from the method it
stopped in, on the same cached original's stage. Within that method, a try that finished training is not trained
again where its ``config.yaml`` is the one the try would write now (its checks are in ``training.json``); a try
stopped mid-way continues from its checkpoint (as ``unlearnlm run --resume`` does, bit for bit); and where the kept
try is one read back, it is trained again (runs are deterministic) to be evaluated. Code changed in between is not
seen.

``--attack quantize``, ``--attack relearn`` and ``--attack prefill`` (any of them) run ``unlearnlm attack`` on every
method's kept run and every ``--include`` run, after the methods have run (into ``RUN/attacks/``, as the CLI does),
and print a second table: per method, the task's headline figure (harm: held-out flagged; privacy: forget fields
extracted; hallucination: forget answers hallucinated) for the original, the unlearned model, each quantized copy,
each relearning step count and each prefix length, with the recovered share at the lowest bit width, the steps to
return and the recovered share at the longest prefix. ``--relearn-steps`` (2 10) and ``--relearn-data`` (forget |
benign) set the relearning probe, ``--prefill-words`` (2 5 10) the prefilling probe.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from unlearnlm.attacks import PrefillOptions, RelearnOptions, prefill_attack, quantize_attack, relearn_attack
from unlearnlm.attacks.figures import return_text, share_text
from unlearnlm.config import RunConfig
from unlearnlm.loader import load_config
from unlearnlm.methods import METHODS
from unlearnlm.outputs import CHECKPOINT_DIR, CONFIG_FILE, TRAINING_FILE, write_json
from unlearnlm.pipeline import TrainedRun, evaluate_run, train_run
from unlearnlm.report.compare import write_compare
from unlearnlm.report.run_files import read_run
from unlearnlm.tuning import best_try, kept_check, method_grids


def _pct_change(sets: dict, name: str, key: str) -> str:
    if name not in sets:  # a set added after the run was made
        return "–"
    return f"{100 * sets[name]['before'][key]:.0f} → {100 * sets[name]['after'][key]:.0f}"


def _utility(summary: dict) -> str:
    human, tr = summary["normal_data"]["human_texts"], summary["training"]
    ppl = human["perplexity"] / human["perplexity_original"] - 1
    return f"{ppl:+.1%} | {human['kl_to_original']:.3f} | {tr['seconds']:.0f} | {summary['wall_seconds']:.0f} |"


HEADERS = {
    "harm": ["| method | steps (best) | stop | held-out flagged % | rephrased flagged % | other-source flagged % | "
             "everyday refused % | instructions refused % | FreshQA refused % | edgy refused % | homonyms refused % | "
             "perplexity Δ | KL | distinct-2 | relevance | train s | run s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"],
    "privacy": ["| method | steps (best) | stop | forget extracted % | forget paraphrase % | retain extracted % "
                "(kept) | retain paraphrase % | never-seen % | MIA AUC forget vs never-seen (loss / zlib / min-k) | "
                "perplexity Δ | KL | train s | run s |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|"],
    "hallucination": ["| method | steps (best) | stop | forget hallucinated % | paraphrase hallucinated % | "
                      "forget truth pref. % (95% interval of the change, points) | "
                      "untouched truth pref. % (the same) | retain stated % (kept) | perplexity Δ | KL | train s | "
                      "run s |",
                      "|---|---|---|---|---|---|---|---|---|---|---|---|"],
}


def knowledge_row(summary: dict, label: str | None = None) -> str:
    sets, probes, tr = summary["sets"], summary["probes"], summary["training"]
    head = f"| {label or summary['method']} | {tr['steps']} ({tr['best_step']}) | {tr['stop_reason']} | "
    kept = sets["retain"]["after"]["reproduced_rate"] / max(sets["retain"]["before"]["reproduced_rate"], 1e-9)
    if summary["task"] == "privacy":
        mia = probes["after"]["mia_forget_vs_never_seen"]
        return (head + f"{_pct_change(sets, 'forget', 'reproduced_rate')} | "
                f"{_pct_change(sets, 'forget_paraphrase', 'reproduced_rate')} | "
                f"{_pct_change(sets, 'retain', 'reproduced_rate')} ({kept:.0%}) | "
                f"{_pct_change(sets, 'retain_paraphrase', 'reproduced_rate')} | "
                f"{_pct_change(sets, 'never_seen', 'reproduced_rate')} | "
                f"{mia['loss']:.2f} / {mia['zlib']:.2f} / {mia['min_k']:.2f} | " + _utility(summary))

    def pref(group: str) -> str:
        moved = " → ".join(f"{100 * probes[s][f'truth_preference_{group}']['preference']:.0f}"
                           for s in ("original", "after"))
        shift = summary.get("probe_shifts", {}).get(f"truth_preference_{group}")
        return moved + (f" ({100 * shift['low']:+.0f} to {100 * shift['high']:+.0f})" if shift else "")

    return (head + f"{_pct_change(sets, 'forget', 'flagged_rate')} | {_pct_change(sets, 'forget_paraphrase', 'flagged_rate')} | "
            f"{pref('forget')} | {pref('untouched')} | {_pct_change(sets, 'retain', 'reproduced_rate')} ({kept:.0%}) | "
            + _utility(summary))


#: The figure each task's attack table shows: (set, figure); every one is "higher = more of the old behaviour".
HEADLINE = {"harm": ("forget_test", "flagged_rate"), "custom": ("forget_test", "flagged_rate"),
            "privacy": ("forget", "reproduced_rate"), "hallucination": ("forget", "flagged_rate")}


def attack_header(task: str, quantized: dict | None, relearned: dict | None,
                  prefilled: dict | None = None) -> list[str]:
    """The attack table's two header lines, from the first method's attack summaries."""
    name, figure = HEADLINE[task]
    cols = ["method", f"original ({name} {figure.removesuffix('_rate')} %)", "unlearned"]
    if quantized:
        bits = [label for label in quantized["figures"] if label.endswith("-bit")]
        cols += bits + [f"recovered at {bits[-1]}"]
    if relearned:
        cols += [f"relearn ({relearned['fine_tune']['data']}) {label}" for label in relearned["figures"]
                 if label.startswith("step ")] + ["steps to return"]
    if prefilled:
        words = list(prefilled["recovered"])
        cols += [f"prefilled {w}" for w in words] + [f"recovered at {words[-1]}"]
    return ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]


def attack_row(label: str, task: str, quantized: dict | None, relearned: dict | None,
               prefilled: dict | None = None) -> str:
    """One method's headline figure under each attack (:data:`HEADLINE`), read from the attacks' summaries.

    The original and unlearned columns come from the quantization probe, which measures every set, when it ran;
    the relearning probe measures only the rows it did not fine-tune on (fewer for the planted-knowledge tasks)."""
    name, figure = HEADLINE[task]
    first = quantized or relearned or prefilled
    cells = [label, *(f"{100 * first['figures'][w][name][figure]:.1f}" for w in ("original", "unlearned"))]
    if quantized:
        bits = [w for w in quantized["figures"] if w.endswith("-bit")]
        cells += [f"{100 * quantized['figures'][w][name][figure]:.1f}" for w in bits]
        cells.append(share_text(quantized["recovered"][bits[-1]][name][figure]))
    if relearned:
        steps = [w for w in relearned["figures"] if w.startswith("step ")]
        cells += [f"{100 * relearned['figures'][w][name][figure]:.1f}" for w in steps]
        cells.append(return_text(relearned, name, figure))
    if prefilled:
        words = list(prefilled["recovered"])
        cells += [f"{100 * prefilled['figures'][f'prefilled {w}'][name][figure]:.1f}" for w in words]
        cells.append(share_text(prefilled["recovered"][words[-1]][name][figure]))
    return "| " + " | ".join(cells) + " |"


def row(summary: dict, label: str | None = None) -> str:
    if "task" in summary:
        return knowledge_row(summary, label)
    sets, human = summary["sets"], summary["normal_data"]["human_texts"]
    tr = summary["training"]
    ppl = human["perplexity"] / human["perplexity_original"] - 1
    return (f"| {label or summary['method']} | {tr['steps']} ({tr['best_step']}) | {tr['stop_reason']} | "
            f"{_pct_change(sets, 'forget_test', 'flagged_rate')} | {_pct_change(sets, 'rephrased', 'flagged_rate')} | "
            f"{_pct_change(sets, 'unseen', 'flagged_rate')} | {_pct_change(sets, 'everyday', 'refusal_rate')} | "
            f"{_pct_change(sets, 'instructions', 'refusal_rate')} | {_pct_change(sets, 'benign', 'refusal_rate')} | "
            f"{_pct_change(sets, 'edgy', 'refusal_rate')} | {_pct_change(sets, 'homonyms', 'refusal_rate')} | "
            f"{ppl:+.1%} | {human['kl_to_original']:.3f} | "
            f"{sets['forget_test']['after']['distinct_2']:.2f} | {sets['forget_test']['after']['relevance']:.2f} | "
            f"{tr['seconds']:.0f} | {summary['wall_seconds']:.0f} |")


def finished(folder: Path, n_tries: int) -> tuple[Path, list[str]] | None:
    """A method's finished comparison in ``folder`` (``--resume``): its kept run's folder and that try's overrides;
    None where it has not finished (no metrics.json, or no tries.json after several tries)."""
    if n_tries == 1:
        return (folder, []) if (folder / "metrics.json").is_file() else None
    if not (folder / "tries.json").is_file():
        return None
    kept = next(t for t in json.loads((folder / "tries.json").read_text(encoding="utf-8")) if t["chosen"])
    run = Path(kept["folder"])
    return (run, kept["overrides"]) if (run / "metrics.json").is_file() else None


def started_as(cfg: RunConfig) -> bool:
    """Whether ``cfg.output_dir`` holds a run started with ``cfg`` itself (its ``config.yaml``)."""
    saved = Path(cfg.output_dir) / CONFIG_FILE
    return saved.is_file() and load_config(saved).to_dict() == cfg.to_dict()


def trained_before(cfg: RunConfig) -> dict | None:
    """``--resume``: the checks of a try that finished training with ``cfg`` (its ``training.json``); None where it
    has to be trained (again)."""
    done = Path(cfg.output_dir) / TRAINING_FILE
    return json.loads(done.read_text(encoding="utf-8")) if done.is_file() and started_as(cfg) else None


def train_try(cfg: RunConfig, resume: bool) -> TrainedRun:
    """Train one try and write its checks to ``training.json`` at once (what ``--resume`` reads back); with
    ``resume``, a try stopped mid-way with the same config continues from its checkpoint."""
    midway = resume and (Path(cfg.output_dir) / CHECKPOINT_DIR).is_dir() and started_as(cfg)
    trained = train_run(cfg, resume=midway, overwrite=True)
    write_json(Path(cfg.output_dir) / TRAINING_FILE, trained.training())
    return trained


def untimed(checks: list[dict]) -> list[dict]:
    """Checks without their seconds: what a run trained again must repeat."""
    return [{k: v for k, v in check.items() if k != "seconds"} for check in checks]


def run_tries(name: str, grid: list[list[str]], args: argparse.Namespace,
              own_options: list[str]) -> tuple[Path, list[str], dict]:
    """Train ``name`` once per try of ``grid``, evaluate the try the early-stopping split ranks best and, with
    several tries, write ``tries.json``: the kept run's folder, its overrides and its summary. With ``--resume`` a
    try that finished training before is read back (:func:`trained_before`), not trained again."""
    tried, configs, best, chosen = [], [], None, 0
    for i, overrides in enumerate(grid):  # each try trained; only the one kept is evaluated
        folder = Path(args.output) / name / (f"try-{i}" if len(grid) > 1 else "")
        cfg = load_config(args.config, [*args.set, *own_options, f"method.name={name}", *overrides,
                                        f"output_dir={folder}"])
        configs.append(cfg)
        stored = trained_before(cfg) if args.resume else None
        trained = None if stored is not None else train_try(cfg, args.resume)
        tried.append((folder, overrides, {"training": stored if trained is None else trained.training()}))
        if i == 0 or best_try([tried[chosen][2], tried[-1][2]]) == 1:  # better than the best so far
            if best is not None:
                best.discard()
            best, chosen = trained, i
        elif trained is not None:
            trained.discard()
    if best is None:  # the kept try was read back: train it again to evaluate it
        best = train_try(configs[chosen], resume=False)
        if untimed(best.training()["checks"]) != untimed(tried[chosen][2]["training"]["checks"]):
            print(f"note: {tried[chosen][0]} trained again did not repeat its stored checks; the new ones are kept")
        tried[chosen] = (*tried[chosen][:2], {"training": best.training()})
    summary = evaluate_run(best)
    if len(grid) > 1:
        write_json(Path(args.output) / name / "tries.json",
                   [{"folder": str(f), "overrides": o, "kept_check": vars(kept_check(s)), "chosen": i == chosen}
                    for i, (f, o, s) in enumerate(tried)])
    return *tried[chosen][:2], summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?")
    parser.add_argument("--methods", nargs="*", default=None, help="methods to run (default: all; none: only --include)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--output", default="runs/compare")
    parser.add_argument("--include", nargs="*", default=[], metavar="RUN",
                        help="earlier run folders (same config) whose metrics.json rows lead the table")
    parser.add_argument("--tries", action="append", default=[], metavar="[METHOD:]KEY=V1,V2",
                        help="run each method once per value and keep the try the early-stopping split ranks best; "
                             "METHOD: tunes that method's own setting instead (as many tries as the others)")
    parser.add_argument("--resume", action="store_true",
                        help="read the methods already finished in --output instead of running them again")
    parser.add_argument("--attack", action="append", default=[], choices=["quantize", "relearn", "prefill"],
                        help="attack every method's kept run and print the attack table")
    parser.add_argument("--relearn-steps", nargs="+", type=int, default=[2, 10])
    parser.add_argument("--relearn-data", choices=["forget", "benign"], default="forget")
    parser.add_argument("--prefill-words", nargs="+", type=int, default=PrefillOptions().words)
    args = parser.parse_args()
    base = load_config(args.config, args.set)
    lines = list(HEADERS[base.data.task])
    lines += [row(read_run(r).summary) for r in args.include]
    methods = sorted(METHODS, key=lambda n: n != "distance_cluster") if args.methods is None else args.methods
    if not methods:  # `--methods` with no names: only the --include rows
        print("\n".join(lines))
    grids = method_grids(args.tries, methods)
    relearn_options = RelearnOptions(steps=args.relearn_steps, data=args.relearn_data)
    folders = list(args.include)
    attacked = []
    for name in methods:
        own_options = [] if name == base.method.name else ["method.options={}"]  # options belong to one method
        grid = grids[name]
        if args.resume and (done := finished(Path(args.output) / name, len(grid))) is not None:
            folder, overrides = done
            summary = read_run(folder).summary
        else:
            folder, overrides, summary = run_tries(name, grid, args, own_options)
        lines.append(row(summary, f"{name} ({', '.join(overrides)})" if len(grid) > 1 else None))
        folders.append(folder)
        print("\n".join(lines), flush=True)
    for folder in folders if args.attack else []:  # the --include runs too
        quantized = quantize_attack(folder, overwrite=True) if "quantize" in args.attack else None
        relearned = (relearn_attack(folder, options=relearn_options, overwrite=True)
                     if "relearn" in args.attack else None)
        prefilled = (prefill_attack(folder, options=PrefillOptions(words=args.prefill_words), overwrite=True)
                     if "prefill" in args.attack else None)
        summaries = (quantized, relearned, prefilled)
        attacked.append(attack_row(next(s for s in summaries if s)["method"], base.data.task, *summaries))
        print("\n".join(attack_header(base.data.task, *summaries) + attacked), flush=True)
    if folders:
        print(write_compare(Path(args.output), [read_run(folder) for folder in folders]))


if __name__ == "__main__":
    main()
