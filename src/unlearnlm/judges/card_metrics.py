"""Metrics shared by the judges' cards: AUC/precision/recall/F1, calibration, latency, target verdicts."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from unlearnlm.data.records import Dialogue
from unlearnlm.errors import ConfigError

__all__ = ["binary_metrics", "expected_calibration_error", "latency_per_100", "target"]


def expected_calibration_error(y: np.ndarray, scores: np.ndarray, bins: int = 10) -> float:
    """Mean |accuracy - confidence| over equal-width score bins, weighted by bin size."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(scores, edges[1:-1]), 0, bins - 1)
    return float(sum(abs(y[which == b].mean() - scores[which == b].mean()) * (which == b).mean() for b in range(bins) if (which == b).any()))


def binary_metrics(y: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float | int | None]:
    """AUC, accuracy, precision, recall, F1 and ECE of ``scores`` (N,) against labels ``y`` (N,) in {0, 1}."""
    from sklearn.metrics import roc_auc_score

    y, scores = np.asarray(y, dtype=np.int64), np.asarray(scores, dtype=np.float64)
    if y.shape != scores.shape or not len(y):
        raise ConfigError(f"labels and scores must be non-empty and the same length, got {y.shape} and {scores.shape}")
    flagged = scores >= threshold
    tp = int((flagged & (y == 1)).sum())
    return {
        "n": int(len(y)),
        "positives": int(y.sum()),
        "auc": float(roc_auc_score(y, scores)) if len(set(y.tolist())) == 2 else None,
        "accuracy": float((flagged == (y == 1)).mean()),
        "precision": tp / max(int(flagged.sum()), 1),
        "recall": tp / max(int(y.sum()), 1),
        "f1": 2 * tp / max(int(flagged.sum() + y.sum()), 1),
        "ece": expected_calibration_error(y, scores),
    }


def target(value: float | None, goal: float, higher_is_better: bool, what: str) -> dict:
    """One issue target: ``{"target", "value", "met", "reason"}`` (reason only when missed)."""
    met = value is not None and (value >= goal if higher_is_better else value <= goal)
    sign = ">=" if higher_is_better else "<="
    reason = None if met else (f"{what} not measured" if value is None else f"{what} is {value:.3f}, needs {sign} {goal}")
    return {"target": f"{what} {sign} {goal}", "value": value, "met": bool(met), "reason": reason}


def latency_per_100(score: Callable[[Sequence[Dialogue]], np.ndarray], dialogues: Sequence[Dialogue]) -> float:
    """Seconds to score 100 dialogues (measured on up to 100 of ``dialogues`` after one warm-up call)."""
    sample = list(dialogues[:100])
    score(sample[:2])  # load models, fill caches
    start = time.perf_counter()
    score(sample)
    return (time.perf_counter() - start) * 100.0 / max(len(sample), 1)
