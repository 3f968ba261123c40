"""Metric cards for the judges: held-out evaluation sets, metrics, and atomic card files.

``unlearnlm judge evaluate NAME`` calls :func:`evaluate_judge`, which measures a built-in judge on data
it was not tuned on and writes ``cache_root()/judges/NAME/card.json``. Every card has: AUC,
precision/recall/F1 at the operating threshold, the false-positive rate on benign answers (FreshQA),
expected calibration error, latency per 100 dialogues on CPU, sizes, and ``targets``: each issue target
with its measured value, whether it is met and, when not, why.

The PII evaluation renders presidio-evaluator's templates with its fictitious identities
(:func:`render_template`): identities and templates are each split in half with a fixed seed; the
detectors were tuned on the first halves and the card reports the second.

This module is the card command; the metrics live in :mod:`unlearnlm.judges.card_metrics`, the
per-judge builders in :mod:`unlearnlm.judges.judge_cards` and the PII evaluation data in
:mod:`unlearnlm.judges.pii_data`. Their public names are importable from here as well.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

from unlearnlm.assets import cache_root
from unlearnlm.errors import ConfigError
from unlearnlm.judges.card_metrics import binary_metrics, expected_calibration_error, latency_per_100, target
from unlearnlm.judges.judge_cards import hallucination_card, pii_card, rho_toxicity_texts, toxicity_card
from unlearnlm.judges.pii_data import pii_eval_sets, render_template, template_label, template_slots

__all__ = [
    "CARD_BUILDERS",
    "binary_metrics",
    "evaluate_judge",
    "expected_calibration_error",
    "hallucination_card",
    "latency_per_100",
    "pii_card",
    "pii_eval_sets",
    "render_template",
    "rho_toxicity_texts",
    "summarise",
    "target",
    "template_label",
    "template_slots",
    "toxicity_card",
]


# --- the card command -------------------------------------------------------------------------------------

#: judge name -> card builder, for ``unlearnlm judge evaluate NAME``.
CARD_BUILDERS: dict[str, Callable[[], dict]] = {"pii": pii_card, "hallucination": hallucination_card, "toxicity": toxicity_card}


def evaluate_judge(name: str, output_dir: Path | None = None) -> tuple[dict, Path]:
    """Measure a built-in judge and write its card atomically.

    Args:
        name: one of :data:`CARD_BUILDERS`.
        output_dir: folder for ``card.json``; defaults to ``cache_root()/judges/NAME``.

    Returns:
        The card and the path it was written to.
    """
    from unlearnlm.outputs import write_json

    if name not in CARD_BUILDERS:
        raise ConfigError(f"no card for judge {name!r}; judges with cards: {sorted(CARD_BUILDERS)} (and harm, via `judge train harm`)")
    started = time.perf_counter()
    card = CARD_BUILDERS[name]()
    card["torch_threads"] = _threads()
    card["seconds"] = round(time.perf_counter() - started, 1)
    path = (Path(output_dir) if output_dir is not None else cache_root() / "judges" / name) / "card.json"
    write_json(path, card)
    return card, path


def _threads() -> int:
    import torch

    return int(torch.get_num_threads())


def summarise(card: Mapping) -> str:
    """Headline numbers and target verdicts, one line each."""
    def fmt(v: object) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    head = ", ".join(f"{k} {fmt(card.get(k))}" for k in ("auc", "precision", "recall", "f1", "benign_fpr", "ece", "latency_s_per_100"))
    lines = [f"{card['judge']} judge (threshold {card['threshold']}, n {card['n']}): {head}"]
    lines += [f"  target {t['target']}: {'met' if t['met'] else 'MISSED: ' + str(t['reason'])}" for t in card["targets"].values()]
    return "\n".join(lines)
