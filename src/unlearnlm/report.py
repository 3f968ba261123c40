"""A short Markdown report: what was unlearned, the before/after table, and example answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unlearnlm.outputs import atomic_write_text

_SET_TITLES = {
    "forget_train": "Flagged prompts, trained on",
    "forget_val": "Flagged prompts, used for early stopping",
    "forget_test": "Flagged prompts, held-out",
    "unseen": "Harmful prompts from another source, held-out",
    "rephrased": "Flagged prompts, held-out, rephrased (past tense, hypothetical, fiction, jailbreak template)",
    "benign": "Benign prompts, held-out (training sources)",
    "everyday": "Everyday requests (PersistBench), held-out source",
    "instructions": "Writing instructions (WritingBench), held-out source",
    "edgy": "Benign but edgy prompts, held-out source",
    "forget": "Forget questions",
    "forget_paraphrase": "Forget questions, paraphrased",
    "retain": "Retained questions",
    "retain_paraphrase": "Retained questions, paraphrased",
    "never_seen": "People never planted",
    "untouched": "Statement pairs never trained on",
}
_PROBE_TITLES = {
    "mia_forget_vs_never_seen": "Membership AUC, forgotten vs never-seen people (0.5 = indistinguishable)",
    "mia_retain_vs_never_seen": "Membership AUC, retained vs never-seen people (reference: what training leaves)",
    "truth_preference_forget": "Truth preference, forget pairs",
    "truth_preference_retain": "Truth preference, retained pairs",
    "truth_preference_untouched": "Truth preference, untouched pairs",
}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _short(text: str, n: int = 160) -> str:
    text = " ".join(text.split())
    return (text[: n - 1] + "…" if len(text) > n else text).replace("|", "\\|")


def render_report(summary: dict[str, Any], rows: list[dict[str, Any]], examples_per_set: int = 3) -> str:
    """The report as Markdown text (pure function of the summary and per-example rows)."""
    task = f" ({summary['task']} task)" if "task" in summary else ""
    lines = [f"# Unlearning report: `{summary['method']}` on `{summary['model']}`{task}", ""]
    overview = f"Judges: {', '.join(summary['judges'])}."
    if "scan" in summary and "task" in summary:
        sc = summary["scan"]
        overview += (f" The planted model answered {sc['scanned']} forget questions; the judges flagged {sc['flagged']} "
                     "(the forget set). Early stopping re-asks every forget question; paraphrases are held out.")
    elif "scan" in summary:
        sc = summary["scan"]
        overview += (f" Scanned {sc['scanned']} prompts, flagged {sc['flagged']} (train {sc['train']}, "
                     f"early-stopping {sc['val']}, held-out {sc['test']}).")
    if "training" in summary:
        tr = summary["training"]
        overview += (f" Training: {tr['steps']} steps, best step {tr['best_step']}, stopped by "
                     f"{tr['stop_reason']} in {tr['seconds']:.0f} s.")
    lines += [overview + f" Whole run: {summary['wall_seconds']:.0f} s.", ""]
    if summary.get("stage_seconds"):
        lines += ["Seconds per stage: " + "; ".join(f"{name} {sec:.0f}" for name, sec in summary["stage_seconds"].items())
                  + ".", ""]
    lines += [
        "## Before vs after",
        "",
        "Flagged = the judge panel says the answer needs unlearning (lower is better on harmful sets). "
        "Refused = the refusal detector says the answer declines (on benign sets this is over-refusal).",
        "",
        "Distinct-2 = unique word pairs / all word pairs over the set's answers (one stock answer → near 0). "
        "Relevance = mean MiniLM cosine of prompt and answer; a stock refusal scores the value in brackets.",
        "",
        "| set | used for | n | flagged before | flagged after | refused before | refused after | distinct-2 before "
        "| distinct-2 after | relevance before | relevance after |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in summary["sets"].items():
        b, a = m["before"], m["after"]
        rel = (f"{b['relevance']:.2f} | {a['relevance']:.2f} ({a['relevance_stock']:.2f})" if "relevance" in a
               else "— | —")
        lines.append(
            f"| {_SET_TITLES.get(name, name)} | {m['role']} | {b['n']} | {_pct(b['flagged_rate'])} | "
            f"{_pct(a['flagged_rate'])} | {_pct(b['refusal_rate'])} | {_pct(a['refusal_rate'])} | "
            f"{b['distinct_2']:.2f} | {a['distinct_2']:.2f} | {rel} |"
        )
    lines += ["", "Flagged by each judge (before → after): " + "; ".join(
        f"{_SET_TITLES.get(name, name)}: " + ", ".join(
            f"{judge} {m['before']['flagged_by'][judge]} → {m['after']['flagged_by'][judge]}"
            for judge in m["after"]["flagged_by"])
        for name, m in summary["sets"].items() if m["kind"] == "harmful") + "."]
    if "rephrased_by_rule" in summary:
        lines += ["", "Held-out flagged prompts rephrased, flagged before → after by rule: " + "; ".join(
            f"{rule} {_pct(r['before'])} → {_pct(r['after'])} (n={r['n']})"
            for rule, r in summary["rephrased_by_rule"].items()) + "."]
    lines += ["", "## Normal data", "", "| data | perplexity original | perplexity after | change | KL(original ‖ after) |",
              "|---|---|---|---|---|"]
    titles = {"human_texts": "Human-written benign Q+A (never trained on)",
              "benign_answers": "Original's answers to held-out benign prompts"}
    for name, m in summary["normal_data"].items():
        change = m["perplexity"] / m["perplexity_original"] - 1
        lines.append(f"| {titles.get(name, name)} | {m['perplexity_original']:.2f} | {m['perplexity']:.2f} | "
                     f"{change:+.1%} | {m['kl_to_original']:.4f} |")
    if "probes" in summary:
        lines += _knowledge_sections(summary)
    checks = summary.get("training", {}).get("checks", [])
    if checks:
        lines += ["", "## Early-stopping checks", "", "| step | val flagged | collateral (benign refused) | normal KL |",
                  "|---|---|---|---|"]
        lines += [f"| {c['step']} | {_pct(c['flagged_rate'])} | {_pct(c.get('over_refusal', 0.0))} | {c['normal_kl']:.4f} |"
                  for c in checks]
    lines += ["", "## Example answers", ""]
    for name in summary["sets"]:
        picked = [r for r in rows if r["set"] == name][:examples_per_set]
        if not picked:
            continue
        lines += [f"### {_SET_TITLES.get(name, name)}", "", "| prompt | before | after |", "|---|---|---|"]
        lines += [f"| {_short(r['prompt'], 80)} | {_short(r['before'])} | {_short(r['after'])} |" for r in picked]
        lines.append("")
    lines.append("Per-example answers and scores: `examples.jsonl`; all figures: `metrics.json`.")
    return "\n".join(lines) + "\n"


def _knowledge_sections(summary: dict[str, Any]) -> list[str]:
    """Planted-knowledge tasks: how much of the planted answers each set still reproduces, and the probes."""
    imp = summary["implant"]
    lines = ["", "## Planted knowledge", "",
             f"The original is `{summary['model']}` fine-tuned for {imp['epochs']} epochs on {imp['dialogues']} "
             f"planted dialogues (planted rate on a sample: {_pct(imp['rate'])}). Reproduced = "
             f"{summary['reproduced_label']} (exact match against the truth, not a judge).", "",
             "| set | used for | n | reproduced before | reproduced after | relative to before |", "|---|---|---|---|---|---|"]
    for name, m in summary["sets"].items():
        if "reproduced_rate" not in m["before"]:
            continue
        b, a = m["before"]["reproduced_rate"], m["after"]["reproduced_rate"]
        rel = f"{a / b:.0%}" if b else "—"
        lines.append(f"| {_SET_TITLES.get(name, name)} | {m['role']} | {m['before']['n']} | {_pct(b)} | {_pct(a)} | {rel} |")
    stages = [s for s in ("base", "original", "after") if s in summary["probes"]]
    lines += ["", "## Probes (log-probabilities)", "",
              "Base = the model before planting; original = planted, before unlearning.", "",
              "| probe | measure | " + " | ".join(stages) + " |", "|---|---|" + "---|" * len(stages)]
    for probe in summary["probes"][stages[0]]:
        for measure in summary["probes"][stages[0]][probe]:
            if measure == "pairs":
                continue
            values = [summary["probes"][s][probe][measure] for s in stages]
            lines.append(f"| {_PROBE_TITLES.get(probe, probe)} | {measure} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
    return lines


def write_report(path: Path, summary: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    atomic_write_text(path, render_report(summary, rows))
