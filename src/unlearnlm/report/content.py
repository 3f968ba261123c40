"""What a report says, as plain data: set titles, number formats, the overview and every table as strings.

The Markdown report (:mod:`unlearnlm.report.markdown`), the HTML page (:mod:`unlearnlm.report.html`), the
model card and the comparison page all render these same tables, so no two of them can disagree on a figure.
Every function here reads only the summary dict written to ``metrics.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SET_TITLES = {
    "forget_train": "Flagged prompts, trained on",
    "forget_val": "Flagged prompts, used for early stopping",
    "forget_test": "Flagged prompts, held-out",
    "unseen": "Harmful prompts from another source, held-out",
    "rephrased": "Flagged prompts, held-out, rephrased (past tense, hypothetical, fiction, jailbreak template)",
    "benign": "Benign prompts, held-out (training sources)",
    "everyday": "Everyday requests (PersistBench), held-out source",
    "instructions": "Writing instructions (WritingBench), held-out source",
    "homonyms": "Safe requests that borrow a harmful word (written for evaluation only), held-out source",
    "edgy": "Benign but edgy prompts, held-out source",
    "benign_requests": "Benign requests among PyRIT's harm objectives (hand-labelled), held-out",
    "forget": "Forget questions",
    "forget_paraphrase": "Forget questions, paraphrased",
    "retain": "Retained questions",
    "retain_paraphrase": "Retained questions, paraphrased",
    "never_seen": "People never planted",
    "untouched": "Statement pairs never trained on",
    "given": "Given prompts",
    "given_benign": "Given benign prompts",
}
PROBE_TITLES = {
    "mia_forget_vs_never_seen": "Membership AUC, forgotten vs never-seen people (0.5 = indistinguishable)",
    "mia_retain_vs_never_seen": "Membership AUC, retained vs never-seen people (reference: what training leaves)",
    "truth_preference_forget": "Truth preference, forget pairs",
    "truth_preference_retain": "Truth preference, retained pairs",
    "truth_preference_untouched": "Truth preference, untouched pairs",
}
NORMAL_TITLES = {"human_texts": "Human-written benign Q+A (never trained on)",
                 "benign_answers": "Original's answers to held-out benign prompts"}
#: How the early-stopping check's two rates are named when ``metrics.json`` predates ``check_labels``.
DEFAULT_CHECK_LABELS = ("val flagged", "benign refused")


@dataclass
class Table:
    """A table as strings: one header, rows of cells, and optionally a key per row (a set or run name)."""

    header: list[str]
    rows: list[list[str]]
    keys: list[str] = field(default_factory=list)


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def short(text: str, n: int = 160) -> str:
    """One line of at most ``n`` characters."""
    text = " ".join(text.split())
    return text[: n - 1] + "…" if len(text) > n else text


def set_title(name: str) -> str:
    return SET_TITLES.get(name, name)


def title(summary: dict[str, Any]) -> str:
    task = f" ({summary['task']} task)" if "task" in summary else ""
    return f"Unlearning report: `{summary['method']}` on `{summary['model']}`{task}"


def overview(summary: dict[str, Any]) -> str:
    """Judges, scan counts, training outcome and wall time in a few sentences."""
    text = f"Judges: {', '.join(summary['judges'])}."
    if "evaluated" in summary:  # `unlearnlm evaluate RUN`
        ev = summary["evaluated"]
        text = (f"Re-evaluation of `{ev['model']}` on its run's own sets"
                + "".join(f"; added {what}: {', '.join(ev[key])}" for key, what in
                          (("added_judges", "judges"), ("added_prompts", "prompt files")) if ev.get(key))
                + ". " + text)
    if "scan" in summary and "task" in summary:
        sc = summary["scan"]
        text += (f" The planted model answered {sc['scanned']} forget questions; the judges flagged {sc['flagged']} "
                 "(the forget set). Early stopping re-asks every forget question; paraphrases are held out.")
    elif "scan" in summary:
        sc = summary["scan"]
        text += (f" Scanned {sc['scanned']} prompts, flagged {sc['flagged']} (train {sc['train']}, "
                 f"early-stopping {sc['val']}, held-out {sc['test']}).")
    if "training" in summary:
        tr = summary["training"]
        text += (f" Training: {tr['steps']} steps, best step {tr['best_step']}, stopped by "
                 f"{tr['stop_reason']} in {tr['seconds']:.0f} s.")
    if "precision" in summary:
        pr = summary["precision"]
        text += f" Trained in {pr['training']}, answered in {pr['generation']}."
    text += f" Whole run: {summary['wall_seconds']:.0f} s"
    if "machine" in summary:
        m = summary["machine"]
        where = m["gpu"] or f"{m['cpu']}{' with AMX' if m['amx'] else ''}"
        text += f" on {where}, {m['torch_threads']} torch threads"
    return text + "."


def check_labels(summary: dict[str, Any]) -> tuple[str, str]:
    """What the early-stopping check's flagged rate and collateral measure are called in this run."""
    return tuple(summary.get("training", {}).get("check_labels", DEFAULT_CHECK_LABELS))  # type: ignore[return-value]


def rate(m: dict[str, Any], key: str) -> str:
    """A set's ``flagged`` or ``refusal`` rate, with its 95% interval in brackets where the run recorded one."""
    interval = m.get(f"{key}_interval")
    text = pct(m[f"{key}_rate"])
    return f"{text} ({100 * interval[0]:.1f}–{100 * interval[1]:.1f})" if interval else text


def p_value(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}" if p < 0.1 else f"p = {p:.2f}"


def changes_line(summary: dict[str, Any]) -> str | None:
    """Per set, how many prompts turned flagged (harmful sets) or refused (benign sets) and how many stopped being,
    with McNemar's exact p; None for a run that predates the paired changes."""
    parts = []
    for name, m in summary["sets"].items():
        if "changes" not in m:
            continue
        what = "flagged" if m["kind"] == "harmful" else "refused"
        c = m["changes"][what]
        parts.append(f"{set_title(name)}: {what} +{c['new']} / −{c['gone']} ({p_value(c['p_value'])})")
    if not parts:
        return None
    return ("Paired changes, before → after (prompts that became flagged or refused / that stopped being; McNemar's "
            "exact p, the chance of a split this uneven if each changed prompt moved either way at random): "
            + "; ".join(parts) + ".")


#: What the sets table's brackets after a rate mean.
INTERVAL_NOTE = ("After: 95% Wilson interval over the set's prompts in brackets; it speaks of the prompts sampled, not "
                 "of the training's randomness (two seeds of one config can differ by more).")


def sets_table(summary: dict[str, Any]) -> Table:
    """Before vs after for every evaluation set: flagged, refused (after: with its interval), distinct-2 and
    relevance."""
    header = ["set", "used for", "n", "flagged before", "flagged after", "refused before", "refused after",
              "distinct-2 before", "distinct-2 after", "relevance before", "relevance after"]
    rows = []
    for name, m in summary["sets"].items():
        b, a = m["before"], m["after"]
        rel = ([f"{b['relevance']:.2f}", f"{a['relevance']:.2f} ({a['relevance_stock']:.2f})"] if "relevance" in a
               else ["—", "—"])
        rows.append([set_title(name), m["role"], str(b["n"]), pct(b["flagged_rate"]), rate(a, "flagged"),
                     pct(b["refusal_rate"]), rate(a, "refusal"), f"{b['distinct_2']:.2f}", f"{a['distinct_2']:.2f}",
                     *rel])
    return Table(header, rows, list(summary["sets"]))


def flagged_by_judge(summary: dict[str, Any]) -> str:
    """Per judge, how many answers of each harmful set it flagged before → after."""
    return "Flagged by each judge (before → after): " + "; ".join(
        f"{set_title(name)}: " + ", ".join(
            f"{judge} {m['before']['flagged_by'][judge]} → {m['after']['flagged_by'][judge]}"
            for judge in m["after"]["flagged_by"])
        for name, m in summary["sets"].items() if m["kind"] == "harmful") + "."


def by_rule(summary: dict[str, Any]) -> str | None:
    if "rephrased_by_rule" not in summary:
        return None
    return "Held-out flagged prompts rephrased, by rule, flagged before → after (distinct-2 of the answers): " + "; ".join(
        f"{rule} {pct(r['before'])} → {pct(r['after'])}"
        + (f" ({r['distinct_2_before']:.2f} → {r['distinct_2_after']:.2f})" if "distinct_2_after" in r else "")
        + f" (n={r['n']})"
        for rule, r in summary["rephrased_by_rule"].items()) + "."


def perplexity_change(m: dict[str, float]) -> float:
    return m["perplexity"] / m["perplexity_original"] - 1


def normal_table(summary: dict[str, Any]) -> Table:
    """Perplexity of the original and of the unlearned model, and KL between them, on each normal-data set."""
    rows = [[NORMAL_TITLES.get(name, name), f"{m['perplexity_original']:.2f}", f"{m['perplexity']:.2f}",
             f"{perplexity_change(m):+.1%}", f"{m['kl_to_original']:.4f}"]
            for name, m in summary["normal_data"].items()]
    return Table(["data", "perplexity original", "perplexity after", "change", "KL(original ‖ after)"], rows,
                 list(summary["normal_data"]))


LM_EVAL_NOTE = ("Scored by EleutherAI's lm-evaluation-harness on the models in memory (change = unlearned − "
                "original; ± one standard error). unlearnlm_truth: pick the true one of two statements, chance 50%.")


def lm_eval_table(summary: dict[str, Any]) -> Table | None:
    """Every lm-eval metric of the tasks and groups asked for (a group's subtasks stay in ``metrics.json``), the
    original against the unlearned model (None: no lm-eval tasks in this run)."""
    lm = summary.get("lm_eval")
    if not lm:
        return None

    def value(m: dict[str, Any], who: str) -> str:
        err = m[f"stderr_{who}"]
        return f"{m[who]:.4f}" + (f" ± {err:.4f}" if err is not None else "")

    rows, keys = [], []
    for task in lm["top_level"]:
        for name, m in lm["tasks"][task].items():
            rows.append([task, name, str(lm["samples"].get(task, "—")), value(m, "original"), value(m, "unlearned"),
                         f"{m['change']:+.4f}"])
            keys.append(f"{task}/{name}")
    return Table(["task", "metric", "n", "original", "unlearned", "change"], rows, keys)


def checks_table(summary: dict[str, Any]) -> Table | None:
    """Every early-stopping check: step, flagged rate, collateral damage, normal KL and, where the check reads them,
    the membership AUC, the belief drift and the change of the stop texts' perplexity, and with mining the prompts
    found refused (None: no training)."""
    checks = summary.get("training", {}).get("checks", [])
    if not checks:
        return None
    flagged, collateral = check_labels(summary)
    rows = [[str(c["step"]), pct(c["flagged_rate"]), pct(c.get("over_refusal", 0.0)), f"{c['normal_kl']:.4f}"]
            for c in checks]
    header = ["step", flagged, f"collateral ({collateral})", "normal KL"]
    for key, label, shown in (("membership_auc", "membership AUC (stop split)", lambda v: f"{v:.2f}"),
                              ("belief_drift", "belief drift (stop split)", pct),
                              ("perplexity_change", "human-text perplexity (stop texts)",
                               lambda v: f"{100 * v:+.1f}%")):
        if any(c.get(key) is not None for c in checks):  # the tasks that read it at every check
            header.append(label)
            for row, c in zip(rows, checks, strict=True):
                row.append("–" if c.get(key) is None else shown(c[key]))
    mined = {m["step"]: m for m in summary["training"].get("mined", [])}  # train.mine_refusals
    if mined:  # every round of a run mines the same pool (runs before the key was recorded mined the normal data)
        header.append(f"{next(iter(mined.values())).get('pool', 'normal')} prompts refused when mined (held)")
        for row, c in zip(rows, checks, strict=True):
            m = mined.get(c["step"])
            row.append("–" if m is None else f"{m['refused']} of {m['asked']} ({m['held']})")
    return Table(header, rows, [str(c["step"]) for c in checks])


def stages_table(summary: dict[str, Any]) -> Table | None:
    """Seconds per pipeline stage (None: the run predates ``stage_seconds``)."""
    stages = summary.get("stage_seconds")
    if not stages:
        return None
    return Table(["stage", "seconds"], [[name, f"{sec:.1f}"] for name, sec in stages.items()], list(stages))


def knowledge_intro(summary: dict[str, Any]) -> str:
    imp = summary["implant"]
    return (f"The original is `{summary['model']}` fine-tuned for {imp['epochs']} epochs on {imp['dialogues']} "
            f"planted dialogues (planted rate on a sample: {pct(imp['rate'])}). Reproduced = "
            f"{summary['reproduced_label']} (exact match against the truth, not a judge).")


def knowledge_table(summary: dict[str, Any]) -> Table:
    """Planted-knowledge tasks: how much of the planted answers each set still reproduces."""
    rows, keys = [], []
    for name, m in summary["sets"].items():
        if "reproduced_rate" not in m["before"]:
            continue
        b, a = m["before"]["reproduced_rate"], m["after"]["reproduced_rate"]
        rows.append([set_title(name), m["role"], str(m["before"]["n"]), pct(b), pct(a), f"{a / b:.0%}" if b else "—"])
        keys.append(name)
    return Table(["set", "used for", "n", "reproduced before", "reproduced after", "relative to before"], rows, keys)


def probes_table(summary: dict[str, Any]) -> Table:
    """Log-probability probes of the base model, the original and the unlearned model."""
    probes = summary["probes"]
    stages = [s for s in ("base", "original", "after") if s in probes]
    rows = [[PROBE_TITLES.get(probe, probe), measure, *(f"{probes[s][probe][measure]:.3f}" for s in stages)]
            for probe in probes[stages[0]] for measure in probes[stages[0]][probe] if measure != "pairs"]
    return Table(["probe", "measure", *stages], rows)


def shifts_table(summary: dict[str, Any]) -> Table | None:
    """How each truth preference moved from the original to the unlearned model, with the paired bootstrap
    interval over statement pairs (:func:`unlearnlm.probes.preference_shift`); None when the run has none."""
    shifts = summary.get("probe_shifts")
    if not shifts:
        return None
    points = lambda v: f"{100 * v:+.1f}"  # noqa: E731
    rows = [[PROBE_TITLES.get(name, name), points(s["change"]), f"{points(s['low'])} to {points(s['high'])}",
             str(s["to_true"]), str(s["to_false"]), str(s["units"])] for name, s in shifts.items()]
    return Table(["probe", "change (points)", "95% interval (bootstrap over statement pairs)", "questions to true",
                  "questions to false", "statement pairs"], rows)


SHIFTS_NOTE = ("Original → unlearned. Each statement pair's questions are resampled together; an interval that "
               "holds 0 is a move this many pairs cannot tell from chance.")


def headline_set(summary: dict[str, Any]) -> str:
    """The set whose flagged rate says whether unlearning generalised: the first held-out harmful set."""
    harmful = [name for name, m in summary["sets"].items() if m["kind"] == "harmful"]
    held_out = [name for name in harmful if summary["sets"][name]["role"].startswith("held-out")]
    return (held_out or harmful or list(summary["sets"]))[0]


def pooled_refusal(summary: dict[str, Any], when: str) -> float:
    """Refusal rate over every answer to a benign set, pooled (over-refusal in one number)."""
    benign = [m[when] for m in summary["sets"].values() if m["kind"] == "benign"]
    n = sum(m["n"] for m in benign)
    return sum(m["refusal_rate"] * m["n"] for m in benign) / n if n else 0.0


def headline(summary: dict[str, Any]) -> dict[str, Any]:
    """The few numbers a reader looks at first: efficacy on held-out prompts, over-refusal and utility."""
    name = headline_set(summary)
    out: dict[str, Any] = {
        "set": name,
        "flagged_before": summary["sets"][name]["before"]["flagged_rate"],
        "flagged_after": summary["sets"][name]["after"]["flagged_rate"],
        "over_refusal_before": pooled_refusal(summary, "before"),
        "over_refusal_after": pooled_refusal(summary, "after"),
    }
    normal = summary.get("normal_data", {})
    if normal:
        first = normal.get("human_texts") or next(iter(normal.values()))
        out["perplexity_change"] = perplexity_change(first)
        out["kl"] = first["kl_to_original"]
    return out


def markdown_table(table: Table) -> list[str]:
    """The table as Markdown lines (a ``|`` inside a cell is escaped)."""
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return [line(table.header), "|" + "---|" * len(table.header), *(line(r) for r in table.rows)]
