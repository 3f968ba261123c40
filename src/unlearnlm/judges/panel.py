"""Compose judges: a dialogue is flagged when any enabled judge flags it; each score is kept."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from unlearnlm import distributed
from unlearnlm.data.records import Dialogue
from unlearnlm.errors import ConfigError
from unlearnlm.judges.base import Judge


def _harm() -> Judge:
    from unlearnlm.judges.harm_train import get_harm_judge

    return get_harm_judge(train_if_missing=True)


def _pii() -> Judge:
    from unlearnlm.judges.pii import PIIJudge

    return PIIJudge()


def _hallucination() -> Judge:
    from unlearnlm.judges.hallucination import HallucinationJudge

    return HallucinationJudge()


def _toxicity() -> Judge:
    from unlearnlm.judges.toxicity import ToxicityJudge

    return ToxicityJudge()


#: judge name -> loader; each loader returns a ready judge (training it once if needed).
#: Judges that need arguments (protected records, your own model) are composed in Python:
#: ``JudgePanel([get_harm_judge(), PIIJudge(protected=...), HFClassifierJudge(...)])``.
JUDGE_LOADERS: dict[str, Callable[[], Judge]] = {
    "harm": _harm,
    "pii": _pii,
    "hallucination": _hallucination,
    "toxicity": _toxicity,
}


def check_judge_names(names: Sequence[str]) -> None:
    """Every name must be a registered judge (checked when the config is read, before a judge is loaded)."""
    if not names:
        raise ConfigError("judges: enable at least one judge, e.g. judges: [harm]")
    unknown = [n for n in names if n not in JUDGE_LOADERS]
    if unknown:
        raise ConfigError(f"judges: unknown judge(s) {unknown}; available: {sorted(JUDGE_LOADERS)}")


@dataclass
class Verdicts:
    """Per-dialogue outcome of a panel: the flag and every judge's score."""

    flagged: np.ndarray  # (N,) bool
    scores: dict[str, np.ndarray]  # judge name -> (N,) float in [0, 1]

    def flagged_by(self, i: int, thresholds: dict[str, float]) -> list[str]:
        return [name for name, s in self.scores.items() if s[i] >= thresholds[name]]


class JudgePanel:
    """Several judges acting as one evaluative model."""

    def __init__(self, judges: Sequence[Judge]) -> None:
        if not judges:
            raise ConfigError("judges: enable at least one judge, e.g. judges: [harm]")
        self.judges = list(judges)
        self.thresholds = {j.name: j.threshold for j in self.judges}

    @classmethod
    def from_names(cls, names: Sequence[str]) -> JudgePanel:
        check_judge_names(names)
        return cls([JUDGE_LOADERS[n]() for n in names])

    def __call__(self, dialogues: Sequence[Dialogue]) -> Verdicts:
        """Every judge's scores and the panel's flags; under a launcher each process scores its share of the
        dialogues and every process gets all the scores (:func:`~unlearnlm.distributed.map_shared`)."""
        def score(mine: list[Dialogue]) -> list[tuple[float, ...]]:
            columns = [np.asarray(j.score(mine), dtype=np.float64) for j in self.judges]  # each (n,)
            return list(zip(*(c.tolist() for c in columns), strict=True))

        rows = distributed.map_shared(score, dialogues)  # (N,) of one score per judge
        scores = {j.name: np.array([r[k] for r in rows], dtype=np.float64) for k, j in enumerate(self.judges)}
        flagged = np.zeros(len(dialogues), dtype=bool)
        for name, s in scores.items():
            flagged |= s >= self.thresholds[name]
        return Verdicts(flagged=flagged, scores=scores)

    def annotate(self, dialogues: Sequence[Dialogue]) -> list[Dialogue]:
        """Copies of ``dialogues`` with ``meta['scores']``, ``meta['flagged']`` and ``meta['flagged_by']``."""
        v = self(dialogues)
        return [
            d.with_response(
                d.response,
                scores={n: round(float(s[i]), 4) for n, s in v.scores.items()},
                flagged=bool(v.flagged[i]),
                flagged_by=v.flagged_by(i, self.thresholds),
            )
            for i, d in enumerate(dialogues)
        ]
