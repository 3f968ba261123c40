"""Reports of a run: ``report.md`` (Markdown), ``report.html`` (one self-contained page with figures), the model
card (``model/README.md``), and a page comparing several runs of one task (:mod:`unlearnlm.report.compare`).

Every report is a pure function of what a run writes (``metrics.json``, ``examples.jsonl``, ``history.jsonl``,
``config.yaml``), so ``unlearnlm report RUN --output DIR`` rebuilds them from a finished run folder.

    content.py    titles, number formats and every table, shared by all the reports
    markdown.py   report.md
    figures.py    matplotlib figures from the run's dicts (Agg, no pyplot)
    page.py       report.html: figures, tables and the searchable answers
    card.py       the Hugging Face model card
    compare.py    several runs of one task side by side
    run_files.py  read a run folder
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unlearnlm.outputs import atomic_write_text
from unlearnlm.report.markdown import render_report
from unlearnlm.report.page import write_html


def write_reports(folder: Path, summary: dict[str, Any], rows: list[dict[str, Any]],
                  history: list[dict[str, Any]], config: dict[str, Any]) -> None:
    """``report.md`` and ``report.html`` in ``folder``."""
    atomic_write_text(folder / "report.md", render_report(summary, rows))
    write_html(folder / "report.html", summary, rows, history, config)
