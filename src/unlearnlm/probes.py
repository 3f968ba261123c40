"""Probes of what a model still knows, from its token log-probabilities (no generation).

* **Membership inference** (is the answer's text something the model was trained on?): three scores
  per dialogue, each "higher = more member-like", and the ROC AUC of members against non-members:

  - ``loss`` — minus the mean negative log-likelihood of the response tokens (Yeom et al., 2018);
  - ``zlib`` — minus the response's total NLL divided by its zlib-compressed length in bytes, which
    discounts text that is simply easy to predict (Carlini et al., 2021, "Extracting Training Data
    from Large Language Models");
  - ``min_k`` — the mean log-probability of the k % least likely response tokens (Shi et al., 2024,
    "Detecting Pretraining Data from Large Language Models", Min-K% Prob; k = 20 % by default).

  An AUC of 0.5 means members and non-members are indistinguishable; after unlearning, forgotten
  data should score like data never trained on (TOFU's "forget quality" idea, Maini et al., 2024).
* **Truth preference**: the share of statement pairs whose true side the model finds more likely
  than the false side (mean log-probability per token, so length does not decide) as the answer to
  the same question, and the mean margin.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from unlearnlm.data.formatting import collate, length_batches, tokenize_dialogue
from unlearnlm.data.records import Dialogue
from unlearnlm.losses import token_logprobs
from unlearnlm.methods.base import forward

MIA_SCORES = ("loss", "zlib", "min_k")


def roc_auc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """P(a random positive scores above a random negative), ties counted half (the Mann-Whitney U).

    Raises:
        ValueError: either list is empty.
    """
    pos, neg = np.asarray(positive, dtype=np.float64), np.asarray(negative, dtype=np.float64)
    if not len(pos) or not len(neg):
        raise ValueError("roc_auc needs at least one positive and one negative score")
    scores = np.concatenate([pos, neg])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores):  # average ranks of ties
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def mia_scores(token_logps: Sequence[float], text: str, k: float = 0.2) -> dict[str, float]:
    """The three membership scores of one response from its token log-probabilities (higher = member)."""
    lp = np.asarray(token_logps, dtype=np.float64)
    if not len(lp):
        raise ValueError("mia_scores needs at least one token log-probability")
    n_low = max(1, math.ceil(k * len(lp)))
    return {
        "loss": float(lp.mean()),
        "zlib": float(lp.sum() / len(zlib.compress(text.encode("utf-8")))),
        "min_k": float(np.sort(lp)[:n_low].mean()),
    }


@torch.no_grad()
def response_token_logprobs(model: nn.Module, tokenizer, dialogues: Sequence[Dialogue], *, max_prompt_tokens: int = 96,
                            max_response_tokens: int = 64, batch_size: int = 16) -> list[np.ndarray]:
    """Per dialogue, the log-probability of each response token (end-of-turn token included), in the order given.

    Rows are batched by length and left-padded, and the LM head runs over each batch's response window only
    (:func:`~unlearnlm.methods.base.forward`): a check that reads membership at every step pays for the answers'
    positions, not for the chat template's.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    rows = [tokenize_dialogue(tokenizer, d, max_prompt_tokens=max_prompt_tokens, max_response_tokens=max_response_tokens)
            for d in dialogues]
    out: list[np.ndarray] = [np.empty(0)] * len(rows)
    for picked_rows in length_batches([len(r.input_ids) for r in rows], batch_size):
        batch = collate([rows[i] for i in picked_rows], tokenizer.pad_token_id, padding_side="left")
        window = forward(model, {k: v.to(device) for k, v in batch.items()})
        picked, mask = token_logprobs(window.logits, window.labels)  # (B, K-1)
        for i, row, m in zip(picked_rows, picked.cpu().numpy(), mask.cpu().numpy().astype(bool), strict=True):
            out[i] = row[m]
    model.train(was_training)
    return out


def membership_scores(model: nn.Module, tokenizer, dialogues: Sequence[Dialogue], k: float = 0.2,
                      **lengths: int) -> list[dict[str, float]]:
    """The three membership scores of each dialogue's response."""
    logps = response_token_logprobs(model, tokenizer, dialogues, **lengths)
    return [mia_scores(lp, d.response, k) for lp, d in zip(logps, dialogues, strict=True)]


def scores_auc(members: Sequence[dict[str, float]], nonmembers: Sequence[dict[str, float]]) -> dict[str, float]:
    """ROC AUC of each membership score from :func:`membership_scores` outputs."""
    return {name: roc_auc([s[name] for s in members], [s[name] for s in nonmembers]) for name in MIA_SCORES}


def membership_auc(model: nn.Module, tokenizer, members: Sequence[Dialogue], nonmembers: Sequence[Dialogue],
                   k: float = 0.2, **lengths: int) -> dict[str, float]:
    """ROC AUC of each membership score, ``members`` against ``nonmembers`` (0.5 = indistinguishable)."""
    return scores_auc(membership_scores(model, tokenizer, members, k, **lengths),
                      membership_scores(model, tokenizer, nonmembers, k, **lengths))


def truth_preference(model: nn.Module, tokenizer, true_side: Sequence[Dialogue], false_side: Sequence[Dialogue],
                     units: Sequence[str] | None = None, **lengths: int) -> dict[str, object]:
    """Share of pairs (``true_side[i]``, ``false_side[i]``: same prompt) whose true response has the higher
    mean token log-probability, and the mean margin (nats/token). With ``units`` (one name per pair, e.g. the
    statement pair a question is about), also ``margins``: every pair's margin, grouped by unit in first-seen
    order, for :func:`preference_shift`."""
    if len(true_side) != len(false_side) or not true_side:
        raise ValueError("truth_preference needs two equally long, non-empty lists of dialogues")
    if units is not None and len(units) != len(true_side):
        raise ValueError(f"truth_preference: {len(units)} units for {len(true_side)} pairs")
    lp_true = [float(x.mean()) for x in response_token_logprobs(model, tokenizer, true_side, **lengths)]
    lp_false = [float(x.mean()) for x in response_token_logprobs(model, tokenizer, false_side, **lengths)]
    margins = np.asarray(lp_true) - np.asarray(lp_false)
    out: dict[str, object] = {"preference": float((margins > 0).mean()), "margin": float(margins.mean()),
                              "pairs": len(margins)}
    if units is not None:
        grouped: dict[str, list[float]] = {}
        for unit, m in zip(units, margins.tolist(), strict=True):
            grouped.setdefault(unit, []).append(m)
        out["margins"] = list(grouped.values())
    return out


def preference_shift(before: Sequence[Sequence[float]], after: Sequence[Sequence[float]], n_boot: int = 2000,
                     level: float = 0.95, seed: int = 0) -> dict[str, float]:
    """How a truth preference moved between two models, from their grouped ``margins`` (:func:`truth_preference`
    with ``units``): the change in the share preferring the truth, its ``level`` interval from a paired bootstrap
    over units (the questions about one statement pair are resampled together, since they move together), and how
    many pairs changed side each way. An interval that holds 0 is a move the units' number cannot tell from chance."""
    if len(before) != len(after) or any(len(b) != len(a) for b, a in zip(before, after, strict=True)) or not before:
        raise ValueError("preference_shift needs the same units with the same number of pairs each, before and after")
    b = [np.asarray(u) > 0 for u in before]
    a = [np.asarray(u) > 0 for u in after]
    gained = np.array([float(ua.sum() - ub.sum()) for ub, ua in zip(b, a, strict=True)])
    sizes = np.array([len(u) for u in b], dtype=float)
    draws = np.random.default_rng(seed).integers(0, len(sizes), size=(n_boot, len(sizes)))
    changes = gained[draws].sum(axis=1) / sizes[draws].sum(axis=1)
    tail = (1.0 - level) / 2
    flat_b, flat_a = np.concatenate(b), np.concatenate(a)
    return {"change": float(gained.sum() / sizes.sum()), "low": float(np.quantile(changes, tail)),
            "high": float(np.quantile(changes, 1.0 - tail)), "to_true": int((~flat_b & flat_a).sum()),
            "to_false": int((flat_b & ~flat_a).sum()), "units": len(sizes), "pairs": int(sizes.sum())}
