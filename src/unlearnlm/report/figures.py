"""The report's figures: pure functions from the dicts a run writes to matplotlib figures, and PNG encoding.

Figures are built on :class:`matplotlib.figure.Figure` directly and drawn by the Agg canvas, so nothing here
touches pyplot's global state or needs a display.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

BEFORE, AFTER, SECOND, KL_COLOUR, BEST = "#9aa0a6", "#1f6fb4", "#e07b16", "#7b4fa8", "#2a9d4b"
WIDTH = 10.0  # inches at 100 dpi: the page's 1,000-pixel column
MEASURE_TITLES = {"flagged_rate": "flagged rate (judge panel)", "refusal_rate": "refusal rate (refusal detector)"}


def new_figure(ncols: int = 1, nrows: int = 1, height: float = 3.2) -> tuple[Figure, np.ndarray]:
    """A figure with an Agg canvas and its axes as a flat array."""
    fig = Figure(figsize=(WIDTH, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes.ravel()


def png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG file contents."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _percent_axis(ax: Axes, axis: str = "y") -> None:
    # decimals=None: as many as the ticks need (0.5% steps would otherwise read "1%, 1%, 2%")
    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(PercentFormatter(1.0, decimals=None))


def checks_figure(checks: Sequence[Mapping[str, float]], *, best_step: int | None, labels: tuple[str, str],
                  bounds: Mapping[str, float]) -> Figure:
    """Early-stopping checks against step: flagged rate and collateral damage (left), normal KL (right).

    ``bounds`` may hold ``target_flagged_rate``, ``max_over_refusal`` and ``max_normal_kl`` (``train.*``); each
    is drawn as a dashed line in its curve's colour. The kept (best) step is a green vertical line.
    """
    fig, (rates, kl) = new_figure(2)
    steps = [c["step"] for c in checks]
    rates.plot(steps, [c["flagged_rate"] for c in checks], "o-", color=AFTER, label=labels[0])
    rates.plot(steps, [c.get("over_refusal", 0.0) for c in checks], "s-", color=SECOND, label=labels[1])
    if "target_flagged_rate" in bounds:
        rates.axhline(bounds["target_flagged_rate"], color=AFTER, ls=":", lw=1.2,
                      label=f"target ≤ {bounds['target_flagged_rate']:.0%}")
    if "max_over_refusal" in bounds:
        rates.axhline(bounds["max_over_refusal"], color=SECOND, ls="--", lw=1.2,
                      label=f"bound ≤ {bounds['max_over_refusal']:.0%}")
    kl.plot(steps, [c["normal_kl"] for c in checks], "D-", color=KL_COLOUR, label="KL(original ‖ model), normal data")
    if "max_normal_kl" in bounds:
        kl.axhline(bounds["max_normal_kl"], color=KL_COLOUR, ls="--", lw=1.2, label=f"bound ≤ {bounds['max_normal_kl']:g}")
    for ax in (rates, kl):
        if best_step is not None:
            ax.axvline(best_step, color=BEST, lw=2, alpha=0.6, label=f"kept: step {best_step}")
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _percent_axis(rates)
    rates.set_ylim(-0.02, 1.02)
    kl.set_ylim(0, 1.25 * max([c["normal_kl"] for c in checks] + [bounds.get("max_normal_kl", 0.0)]) or 1.0)
    rates.set_title("early-stopping prompts", fontsize=10)
    kl.set_title("normal-data KL", fontsize=10)
    return fig


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over ``window`` values (shorter at the start)."""
    csum = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(idx - window, 0)
    return (csum[idx] - csum[lo]) / (idx - lo)


def losses_figure(history: Sequence[Mapping[str, float]]) -> Figure | None:
    """Every loss term against step, one panel each (terms differ in scale); a trailing mean over 1/10 of the
    steps is drawn over the raw values. None when there is no history."""
    terms = list(dict.fromkeys(k for row in history for k in row if k != "step"))
    if not history or not terms:
        return None
    ncols = min(3, len(terms))
    nrows = math.ceil(len(terms) / ncols)
    fig, axes = new_figure(ncols, nrows, height=2.3 * nrows + 0.3)
    window = max(1, len(history) // 10)
    for ax, term in zip(axes, terms, strict=False):
        points = [(row["step"], row[term]) for row in history if term in row]
        steps = np.array([s for s, _ in points])
        values = np.array([v for _, v in points], dtype=float)
        ax.plot(steps, values, color=AFTER, alpha=0.3, lw=1)
        ax.plot(steps, _smooth(values, window), color=AFTER, lw=2)
        ax.set_title(term, fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in axes[len(terms):]:
        ax.set_visible(False)
    for ax in axes[-ncols:]:
        ax.set_xlabel("step")
    return fig


def bars_figure(series: Mapping[str, Mapping[str, Mapping[str, Any]]], measures: Sequence[str],
                colours: Sequence[str]) -> Figure:
    """Grouped horizontal bars, one panel per measure: for each set, one bar per series.

    ``series`` maps a label ("before", "after", or a run's name) to ``{set name: metrics}`` as ``metrics.json``
    holds them (``sets[name]["before"]``); a set missing from a series draws no bar.
    """
    names = list(dict.fromkeys(name for sets in series.values() for name in sets))
    fig, axes = new_figure(len(measures), height=0.28 * len(names) * max(2, len(series)) / 2 + 1.4)
    height = 0.8 / len(series)
    y = np.arange(len(names))
    for ax, measure in zip(axes, measures, strict=True):
        for i, (label, sets) in enumerate(series.items()):
            values = [sets[n][measure] if n in sets else np.nan for n in names]
            offset = (i - (len(series) - 1) / 2) * height
            bars = ax.barh(y + offset, values, height=height, color=colours[i % len(colours)], label=label)
            ax.bar_label(bars, labels=[f"{v:.0%}" if not np.isnan(v) else "" for v in values], fontsize=7, padding=2)
        ax.set_yticks(y, names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 1.12)
        _percent_axis(ax, "x")
        ax.set_title(MEASURE_TITLES.get(measure, measure), fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside upper center", ncols=len(series), fontsize=8)
    return fig


def utility_figure(normal_data: Mapping[str, Mapping[str, float]]) -> Figure:
    """Perplexity of the original and the unlearned model (left) and KL between them (right), per normal set."""
    fig, (ppl, kl) = new_figure(2, height=2.6)
    names = list(normal_data)
    y = np.arange(len(names))
    for offset, key, colour, label in ((-0.2, "perplexity_original", BEFORE, "original"),
                                       (0.2, "perplexity", AFTER, "after")):
        bars = ppl.barh(y + offset, [normal_data[n][key] for n in names], height=0.4, color=colour, label=label)
        ppl.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
    kls = [normal_data[n]["kl_to_original"] for n in names]
    bars = kl.barh(y, kls, height=0.5, color=KL_COLOUR)
    kl.bar_label(bars, fmt="%.4f", fontsize=7, padding=2)
    kl.set_xlim(0, 1.25 * max(kls) or 1e-3)
    for ax, name in ((ppl, "perplexity (response tokens)"), (kl, "KL(original ‖ after) per token")):
        ax.set_yticks(y, names, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(name, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    ppl.margins(x=0.15)
    fig.legend(*ppl.get_legend_handles_labels(), loc="outside upper center", ncols=2, fontsize=8)
    return fig


def stages_figure(stage_seconds: Mapping[str, float]) -> Figure:
    """Wall-clock seconds per pipeline stage; parts of a stage ("of which ...") are drawn lighter."""
    names = list(stage_seconds)
    fig, (ax,) = new_figure(height=0.4 * len(names) + 0.9)
    colours = [BEFORE if name.startswith("of which") else AFTER for name in names]
    bars = ax.barh(np.arange(len(names)), [stage_seconds[n] for n in names], color=colours)
    ax.bar_label(bars, fmt="%.1f s", fontsize=8, padding=2)
    ax.set_yticks(np.arange(len(names)), [textwrap.shorten(n, 60) for n in names], fontsize=8)
    ax.invert_yaxis()
    ax.margins(x=0.12)
    ax.set_xlabel("seconds")
    ax.grid(axis="x", alpha=0.3)
    return fig


#: Marker shapes cycled with the colours, so that more than ten runs still get one distinct style each.
MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def _run_points(ax: Axes, points: Sequence[tuple[float, float, str]]) -> None:
    """One dot per run in its own colour and shape, named in the figure's legend: labels written beside the dots
    overprint each other where runs land close together (methods that barely moved sit on the original)."""
    for i, (x, y, label) in enumerate(points):
        ax.scatter([x], [y], s=60, color=f"C{i % 10}", marker=MARKERS[(i // 10 + i) % len(MARKERS)], zorder=3,
                   label=label, alpha=0.85)


def tradeoff_figure(points: Sequence[Mapping[str, Any]], flagged_label: str) -> Figure:
    """Efficacy against utility and against over-refusal, one point per run (named in the legend); the original as a
    grey star.

    Each point holds ``label``, ``flagged_before``, ``flagged_after``, ``over_refusal_before``,
    ``over_refusal_after`` and optionally ``perplexity_change`` (:func:`unlearnlm.report.content.headline`).
    Lower-left is better in both panels.
    """
    fig, (ppl, refusal) = new_figure(2, height=3.8 + 0.2 * math.ceil((len(points) + 1) / 5))
    first = points[0]
    panels = ((ppl, "perplexity_change", 0.0, "perplexity change, human-written text"),
              (refusal, "over_refusal_after", first["over_refusal_before"], "over-refusal (benign sets, pooled)"))
    for ax, key, original, ylabel in panels:
        ys = [p.get(key, np.nan) for p in points]
        _run_points(ax, [(p["flagged_after"], y, p["label"]) for p, y in zip(points, ys, strict=True)])
        ax.scatter([first["flagged_before"]], [original], marker="*", s=260, facecolor="none", edgecolor=BEFORE,
                   linewidth=1.5, zorder=4, label="original")
        low, high = np.nanmin([*ys, original, 0.0]), np.nanmax([*ys, original, 0.0])
        pad = 0.15 * (high - low) or 0.01
        ax.set_ylim(low - pad, high + pad)
        ax.axhline(original, color=BEFORE, lw=1, ls=":")
        _percent_axis(ax)
        _percent_axis(ax, "x")
        ax.set_ylabel(ylabel)
        ax.set_xlabel(f"{flagged_label}: flagged after")
        ax.set_xlim(-0.05, 1.2)
        ax.grid(alpha=0.3)
    fig.legend(*ppl.get_legend_handles_labels(), loc="outside lower center", fontsize=8, ncols=min(5, len(points) + 1))
    return fig
