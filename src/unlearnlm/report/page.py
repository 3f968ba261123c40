"""``report.html``: one self-contained page per run (figures as base64 PNG, no network), opened from disk.

The tables are :mod:`unlearnlm.report.content`'s, the same as ``report.md``'s; the figures come from
:mod:`unlearnlm.report.figures`; the per-example answers are a table filtered by a few lines of inline JS.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure

from unlearnlm.outputs import atomic_write_text
from unlearnlm.report import figures
from unlearnlm.report.content import (INTERVAL_NOTE, LM_EVAL_NOTE, SHIFTS_NOTE, Table, by_rule, changes_line,
                                      check_labels, checks_table, flagged_by_judge, headline, knowledge_intro,
                                      knowledge_table, lm_eval_table, normal_table, pct, probes_table, set_title,
                                      sets_table, shifts_table, stages_table, title, overview)

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; max-width: 1060px; margin: 1.5em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.45em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.8em; }
code { background: #f2f3f5; padding: 0 .25em; border-radius: 3px; }
table { border-collapse: collapse; font-size: .82em; margin: .6em 0; }
th, td { border: 1px solid #dcdfe3; padding: .25em .5em; vertical-align: top; text-align: left; }
th { background: #f4f5f7; } td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
img { max-width: 100%; display: block; margin: .5em 0; } .wide { overflow-x: auto; }
.cards { display: flex; gap: .8em; flex-wrap: wrap; margin: 1em 0; }
.card { border: 1px solid #dcdfe3; border-radius: 6px; padding: .5em .9em; min-width: 150px; }
.card .label { font-size: .8em; color: #555; } .card .value { font-size: 1.3em; font-weight: 600; }
.note { color: #555; font-size: .9em; }
#examples td { max-width: 300px; white-space: pre-wrap; word-wrap: break-word; }
.flagged { color: #b3261e; font-weight: 600; } .refused { color: #1f6fb4; font-weight: 600; }
.controls { display: flex; gap: 1em; align-items: center; flex-wrap: wrap; margin: .5em 0; }
.controls input[type=search] { width: 22em; padding: .25em; } .controls select { max-width: 24em; }
"""
FILTER_JS = """
function filterExamples() {
  const q = document.getElementById('q').value.toLowerCase(), set = document.getElementById('set').value;
  const changed = document.getElementById('changed').checked;
  let shown = 0;
  for (const tr of document.querySelectorAll('#examples tbody tr')) {
    const ok = (!set || tr.dataset.set === set) && (!changed || tr.dataset.changed === '1')
      && tr.textContent.toLowerCase().includes(q);
    tr.hidden = !ok; shown += ok;
  }
  document.getElementById('shown').textContent = shown;
}
"""
_NUMBER = re.compile(r"^[-+]?[\d.,]+(%| s)?( \(.*\))?$|^—$|^[\d.]+% → [\d.]+%$")


def text_html(text: str) -> str:
    """Escaped text, with Markdown-style `code` spans kept as <code>."""
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(text))


def table_html(table: Table, table_id: str = "") -> str:
    """A :class:`Table` as HTML; a row with a key carries it as ``data-key``, numbers are right-aligned."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    body = []
    for i, row in enumerate(table.rows):
        key = f' data-key="{html.escape(table.keys[i])}"' if i < len(table.keys) else ""
        cells = "".join(f'<td class="num">{html.escape(c)}</td>' if _NUMBER.match(c) else f"<td>{text_html(c)}</td>"
                        for c in row)
        body.append(f"<tr{key}>{cells}</tr>")
    ident = f' id="{table_id}"' if table_id else ""
    return f'<div class="wide"><table{ident}><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def figure_html(fig: Figure | None, alt: str) -> str:
    """The figure as an embedded PNG (nothing when there is no figure)."""
    if fig is None:
        return ""
    return png_html(figures.png_bytes(fig), alt)


def png_html(png: bytes, alt: str) -> str:
    """PNG file contents as an embedded image."""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def cards_html(cards: Sequence[tuple[str, str]]) -> str:
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="label">{html.escape(label)}</div><div class="value">{html.escape(value)}</div>'
        "</div>" for label, value in cards) + "</div>"


def page(heading: str, body: Sequence[str], script: str = "") -> str:
    """A whole HTML document: inline CSS, the body's sections, optional inline script; no external resource."""
    script_tag = f"<script>{script}</script>" if script else ""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(heading.replace("`", ""))}'
            f"</title><style>{CSS}</style></head><body><h1>{text_html(heading)}</h1>\n" + "\n".join(body)
            + f"\n{script_tag}</body></html>\n")


def headline_cards(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The figures a reader looks at first, as (label, value) cards."""
    h = headline(summary)
    role = summary["sets"][h["set"]]["role"]
    cards = [(f"flagged, {role} ({h['set']})", f"{pct(h['flagged_before'])} → {pct(h['flagged_after'])}"),
             ("refused, benign sets pooled", f"{pct(h['over_refusal_before'])} → {pct(h['over_refusal_after'])}")]
    if "perplexity_change" in h:
        cards += [("perplexity change, normal text", f"{h['perplexity_change']:+.1%}"), ("KL to original", f"{h['kl']:.4f}")]
    if "training" in summary:
        tr = summary["training"]
        cards.append(("steps (kept)", f"{tr['steps']} ({tr['best_step']})"))
    cards.append(("wall time", f"{summary['wall_seconds']:.0f} s"))
    return cards


def _scores(row: dict[str, Any], when: str) -> str:
    scores = ", ".join(f"{judge} {score:.2f}" for judge, score in row[f"{when}_scores"].items())
    marks = "".join(f' <span class="{cls}">{cls}</span>' for cls in ("flagged", "refused") if row.get(f"{when}_{cls}"))
    return html.escape(scores) + marks


def examples_html(rows: Sequence[dict[str, Any]]) -> str:
    """Every evaluated prompt with both answers and each judge's scores, filtered by text, set and change."""
    names = list(dict.fromkeys(r["set"] for r in rows))
    options = "".join(f'<option value="{html.escape(n)}">{html.escape(set_title(n))}</option>' for n in names)
    body = []
    for r in rows:
        changed = r["before_flagged"] != r["after_flagged"] or r["before_refused"] != r["after_refused"]
        judged = f'<div class="note">judged as: {html.escape(r["judged_as"])}</div>' if "judged_as" in r else ""
        body.append(f'<tr data-set="{html.escape(r["set"])}" data-changed="{int(changed)}"><td>{html.escape(r["set"])}</td>'
                    f"<td>{html.escape(r['prompt'])}{judged}</td><td>{html.escape(r['before'])}</td>"
                    f"<td>{html.escape(r['after'])}</td><td>{_scores(r, 'before')}</td><td>{_scores(r, 'after')}</td></tr>")
    return (f'<div class="controls"><input id="q" type="search" placeholder="search prompts and answers" '
            f'oninput="filterExamples()"><select id="set" onchange="filterExamples()"><option value="">every set</option>'
            f'{options}</select><label><input id="changed" type="checkbox" onchange="filterExamples()"> changed only'
            f'</label><span class="note"><span id="shown">{len(rows)}</span> of {len(rows)} shown</span></div>'
            '<table id="examples"><thead><tr><th>set</th><th>prompt</th><th>before</th><th>after</th>'
            f"<th>scores before</th><th>scores after</th></tr></thead><tbody>{''.join(body)}</tbody></table>")


def run_bounds(config: dict[str, Any]) -> dict[str, float]:
    """The stop rule's target and bounds from the resolved config (``train.*``), where present."""
    train = config.get("train") or {}
    return {k: train[k] for k in ("target_flagged_rate", "max_over_refusal", "max_normal_kl") if k in train}


def render_html(summary: dict[str, Any], rows: Sequence[dict[str, Any]], history: Sequence[dict[str, Any]],
                config: dict[str, Any]) -> str:
    """The run's page (pure function of what the run writes: metrics, examples, history, config)."""
    body = [f"<p>{text_html(overview(summary))}</p>", cards_html(headline_cards(summary))]
    checks = checks_table(summary)
    if checks:
        tr = summary["training"]
        body += ["<h2>Early stopping</h2>",
                 f'<p class="note">Every check re-asks the early-stopping prompts and measures collateral damage and KL '
                 f"on normal data; training stops once the flagged rate reaches the target with both bounds kept, or "
                 f"after {config.get('train', {}).get('patience', '?')} checks without improvement. Stopped by "
                 f"<b>{html.escape(tr['stop_reason'])}</b>; the best check (step {tr['best_step']}) was restored.</p>",
                 figure_html(figures.checks_figure(tr["checks"], best_step=tr["best_step"], labels=check_labels(summary),
                                                   bounds=run_bounds(config)), "early-stopping checks"),
                 table_html(checks, "checks")]
    if history:
        body += ["<h2>Training losses</h2>",
                 '<p class="note">Every loss term at every step (light) and its trailing mean (dark).</p>',
                 figure_html(figures.losses_figure(history), "loss terms against step")]
    sets = summary["sets"]
    body += ["<h2>Before vs after</h2>",
             '<p class="note">Flagged = the judge panel says the answer needs unlearning (lower is better on harmful '
             "sets). Refused = the refusal detector says the answer declines (on benign sets: over-refusal). "
             "Distinct-2 = unique word pairs / all word pairs; relevance = prompt–answer cosine, a stock refusal's in "
             f"brackets. {text_html(INTERVAL_NOTE)}</p>",
             figure_html(figures.bars_figure({"before": {n: m["before"] for n, m in sets.items()},
                                              "after": {n: m["after"] for n, m in sets.items()}},
                                             ["flagged_rate", "refusal_rate"], [figures.BEFORE, figures.AFTER]),
                         "before and after per set"),
             table_html(sets_table(summary), "sets"), f'<p class="note">{text_html(flagged_by_judge(summary))}</p>']
    if changes := changes_line(summary):
        body.append(f'<p class="note">{text_html(changes)}</p>')
    rule = by_rule(summary)
    if rule:
        body.append(f'<p class="note">{text_html(rule)}</p>')
    if "probes" in summary:
        body += ["<h2>Planted knowledge</h2>", f"<p>{text_html(knowledge_intro(summary))}</p>",
                 table_html(knowledge_table(summary), "knowledge"), "<h3>Probes (log-probabilities)</h3>",
                 table_html(probes_table(summary), "probes")]
        if (shifts := shifts_table(summary)) is not None:
            body += [f'<p class="note">{text_html(SHIFTS_NOTE)}</p>', table_html(shifts, "shifts")]
    body += ["<h2>Utility</h2>", figure_html(figures.utility_figure(summary["normal_data"]), "perplexity and KL"),
             table_html(normal_table(summary), "normal")]
    lm_eval = lm_eval_table(summary)
    if lm_eval:
        body += ["<h3>lm-evaluation-harness</h3>", f'<p class="note">{text_html(LM_EVAL_NOTE)}</p>',
                 table_html(lm_eval, "lm_eval")]
    stages = stages_table(summary)
    if stages:
        body += ["<h2>Run time</h2>", figure_html(figures.stages_figure(summary["stage_seconds"]), "seconds per stage"),
                 table_html(stages, "stages")]
    body += ["<h2>Answers</h2>", examples_html(rows),
             '<p class="note">From <code>metrics.json</code>, <code>history.jsonl</code> and <code>examples.jsonl</code>'
             " by unlearnlm.</p>"]
    return page(title(summary), body, FILTER_JS)


def write_html(path, summary: dict[str, Any], rows: Sequence[dict[str, Any]], history: Sequence[dict[str, Any]],
               config: dict[str, Any]) -> None:
    atomic_write_text(path, render_html(summary, rows, history, config))
