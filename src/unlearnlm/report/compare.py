"""Several runs of one task on one page (``compare.html``, ``compare.md``): efficacy against utility and
over-refusal, one point per run, the sets side by side, and one table; the efficacy-utility picture also as
``tradeoff.png``, to show elsewhere (the README's is one).

Efficacy is the flagged rate on the first held-out harmful set (:func:`unlearnlm.report.content.headline`);
over-refusal is the refusal rate over every benign set's answers, pooled; utility is the perplexity change on
human-written text. Lower-left is better in both scatter plots.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from unlearnlm.errors import DataError
from unlearnlm.outputs import atomic_file, atomic_write_text
from unlearnlm.report import figures
from unlearnlm.report.content import Table, headline, markdown_table, pct, set_title
from unlearnlm.report.page import figure_html, page, png_html, table_html
from unlearnlm.report.run_files import RunFiles


def task_of(run: RunFiles) -> str:
    return (run.config.get("data") or {}).get("task") or run.summary.get("task", "harm")


def labels(runs: Sequence[RunFiles]) -> list[str]:
    """Each run's method, with its folder name where two runs share a method."""
    counts = Counter(r.summary["method"] for r in runs)
    return [r.summary["method"] if counts[r.summary["method"]] == 1 else f"{r.summary['method']} ({r.name})" for r in runs]


def main_measure(kind: str) -> str:
    """What a set is judged by: flagged rate on harmful sets, refusal rate on benign ones."""
    return "flagged_rate" if kind == "harmful" else "refusal_rate"


def compare_table(runs: Sequence[RunFiles]) -> Table:
    """The runs side by side, one column each: outcome, the headline figures, every set's main measure before →
    after, and run times. Row keys name what each row holds (a set's name for its row)."""
    sets = runs[0].summary["sets"]
    columns = []
    for run in runs:
        s, h, tr = run.summary, headline(run.summary), run.summary.get("training", {})
        column = {"steps": f"{tr['steps']} ({tr['best_step']})" if tr else "—", "stop": tr.get("stop_reason", "—"),
                  "held_out_flagged": f"{pct(h['flagged_before'])} → {pct(h['flagged_after'])}",
                  "over_refusal": f"{pct(h['over_refusal_before'])} → {pct(h['over_refusal_after'])}",
                  "perplexity_change": f"{h['perplexity_change']:+.1%}" if "perplexity_change" in h else "—",
                  "kl": f"{h['kl']:.4f}" if "kl" in h else "—"}
        for name, m in sets.items():
            own, key = s["sets"].get(name), main_measure(m["kind"])
            column[name] = f"{pct(own['before'][key])} → {pct(own['after'][key])}" if own else "—"
        column |= {"train_seconds": f"{tr['seconds']:.0f}" if tr else "—", "run_seconds": f"{s['wall_seconds']:.0f}"}
        columns.append(column)
    titles = {"steps": "steps (kept)", "stop": "stopped by", "held_out_flagged": "held-out flagged",
              "over_refusal": "over-refusal (benign, pooled)", "perplexity_change": "perplexity Δ (human text)",
              "kl": "KL to original", "train_seconds": "training s", "run_seconds": "whole run s",
              **{n: f"{set_title(n)}: {'flagged' if m['kind'] == 'harmful' else 'refused'}" for n, m in sets.items()}}
    keys = list(columns[0])
    return Table(["", *labels(runs)], [[titles[k], *(c[k] for c in columns)] for k in keys], keys)


def tradeoff_points(runs: Sequence[RunFiles]) -> list[dict]:
    return [{"label": label, **headline(run.summary)} for label, run in zip(labels(runs), runs, strict=True)]


def render_compare(runs: Sequence[RunFiles]) -> tuple[str, str, bytes]:
    """The comparison as ``(html, markdown, the efficacy-utility picture as PNG bytes)``.

    Raises:
        DataError: no runs, or runs of different tasks.
    """
    if not runs:
        raise DataError("compare: name at least one run folder")
    tasks = {r.name: task_of(r) for r in runs}
    if len(set(tasks.values())) > 1:
        raise DataError(f"compare: the runs are of different tasks ({tasks}); compare runs of one task")
    task, names = task_of(runs[0]), labels(runs)
    heading = f"Comparison: {len(runs)} runs of the {task} task"
    focus = headline(runs[0].summary)["set"]
    same_original = all(r.summary["sets"].get(n, {}).get("before") == m["before"]
                        for r in runs for n, m in runs[0].summary["sets"].items())
    intro = (f"Held-out flagged = flagged rate on <b>{set_title(focus).lower()}</b>; over-refusal = refusal rate "
             "over every benign set's answers, pooled; perplexity Δ on human-written text. Lower-left is better.")
    if not same_original:
        intro += (" <b>The runs' originals did not answer every set alike</b> (different data or settings): the grey "
                  f"star and bars are {names[0]}'s original.")
    series = {"original": {n: m["before"] for n, m in runs[0].summary["sets"].items()},
              **{label: {n: m["after"] for n, m in r.summary["sets"].items()} for label, r in zip(names, runs, strict=True)}}
    colours = [figures.BEFORE, *(f"C{i % 10}" for i in range(len(runs)))]
    table = compare_table(runs)
    tradeoff = figures.png_bytes(figures.tradeoff_figure(tradeoff_points(runs), set_title(focus)))
    body = [f'<p class="note">{intro}</p>', png_html(tradeoff, "efficacy against utility"),
            "<h2>Every set</h2>",
            figure_html(figures.bars_figure(series, ["flagged_rate", "refusal_rate"], colours), "sets by run"),
            "<h2>Side by side</h2>", table_html(table, "compare"),
            '<p class="note">Runs: ' + "; ".join(f"{html.escape(label)}: <code>{html.escape(str(r.folder))}</code>" for label, r in
                                                 zip(names, runs, strict=True)) + "</p>"]
    markdown = "\n".join([f"# {heading}", "", *markdown_table(table), ""])
    return page(heading, body), markdown, tradeoff


def write_compare(folder: Path, runs: Sequence[RunFiles]) -> Path:
    """``compare.html``, ``compare.md`` and ``tradeoff.png`` in ``folder``; returns the HTML's path."""
    html_text, markdown, tradeoff = render_compare(runs)
    atomic_write_text(folder / "compare.html", html_text)
    atomic_write_text(folder / "compare.md", markdown)
    with atomic_file(folder / "tradeoff.png") as tmp:
        tmp.write_bytes(tradeoff)
    return folder / "compare.html"
