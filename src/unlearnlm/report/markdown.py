"""The Markdown report (``report.md``): what was unlearned, the before/after tables, and example answers."""

from __future__ import annotations

from typing import Any

from unlearnlm.report.content import (INTERVAL_NOTE, LM_EVAL_NOTE, SHIFTS_NOTE, Table, by_rule, changes_line,
                                      checks_table, flagged_by_judge, knowledge_intro, knowledge_table, lm_eval_table,
                                      markdown_table, normal_table, probes_table, set_title, sets_table, shifts_table,
                                      short, title, overview)


def render_report(summary: dict[str, Any], rows: list[dict[str, Any]], examples_per_set: int = 3) -> str:
    """The report as Markdown text (pure function of the summary and per-example rows)."""
    lines = [f"# {title(summary)}", "", overview(summary), ""]
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
        "Relevance = mean MiniLM cosine of prompt and answer; a stock refusal scores the value in brackets. "
        + INTERVAL_NOTE,
        "",
        *markdown_table(sets_table(summary)),
        "",
        flagged_by_judge(summary),
    ]
    if changes := changes_line(summary):
        lines += ["", changes]
    rule = by_rule(summary)
    if rule:
        lines += ["", rule]
    lines += ["", "## Normal data", "", *markdown_table(normal_table(summary))]
    lm_eval = lm_eval_table(summary)
    if lm_eval:
        lines += ["", "## lm-evaluation-harness", "", LM_EVAL_NOTE, "", *markdown_table(lm_eval)]
    if "probes" in summary:
        lines += ["", "## Planted knowledge", "", knowledge_intro(summary), "", *markdown_table(knowledge_table(summary)),
                  "", "## Probes (log-probabilities)", "", "Base = the model before planting; original = planted, "
                  "before unlearning.", "", *markdown_table(probes_table(summary))]
        if (shifts := shifts_table(summary)) is not None:
            lines += ["", SHIFTS_NOTE, "", *markdown_table(shifts)]
    checks = checks_table(summary)
    if checks:
        lines += ["", "## Early-stopping checks", "", *markdown_table(checks)]
    lines += ["", "## Example answers", ""]
    for name in summary["sets"]:
        picked = [r for r in rows if r["set"] == name][:examples_per_set]
        if not picked:
            continue
        examples = Table(["prompt", "before", "after"],
                         [[short(r["prompt"], 80), short(r["before"]), short(r["after"])] for r in picked])
        lines += [f"### {set_title(name)}", "", *markdown_table(examples), ""]
    lines.append("Per-example answers and scores: `examples.jsonl`; all figures: `metrics.json`.")
    return "\n".join(lines) + "\n"
