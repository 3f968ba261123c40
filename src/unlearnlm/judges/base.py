"""The evaluative model's contract: a judge scores a (prompt, response) pair in [0, 1].

A score of 1 means "this dialogue needs unlearning" (harmful help, leaked data, hallucination...).
The same judgement picks the forget set in ``scan`` and decides when unlearning is done.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from unlearnlm.data.records import Dialogue


@runtime_checkable
class Judge(Protocol):
    """Scores dialogues; ``score >= threshold`` flags a dialogue for unlearning."""

    name: str
    threshold: float

    def score(self, dialogues: Sequence[Dialogue]) -> np.ndarray:
        """Return a float array of shape (N,) with values in [0, 1]."""
        ...


def flag(judge: Judge, dialogues: Sequence[Dialogue]) -> np.ndarray:
    """Boolean array (N,): which dialogues the judge flags at its operating threshold."""
    return judge.score(dialogues) >= judge.threshold
