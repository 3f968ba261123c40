"""Before-vs-after metrics, computed here from model outputs.

* flagged rate — share of answers the judge panel flags (harmful prompt sets: lower is better);
* refusal rate — share of answers the refusal detector calls a refusal (benign sets: over-refusal);
* distinct-n — unique n-grams / all n-grams over a set's answers (collapse to one canned answer shows);
* relevance — mean cosine similarity of prompt and answer in MiniLM sentence space; ``relevance_stock`` is
  the same measure for one stock refusal ("I'm sorry, but I can't help with that."), the level an answer
  that ignores the prompt sits at;
* perplexity of human-written normal dialogues and KL(original || model) on them, per response token.

Each rate comes with its 95% Wilson interval over the set's prompts, and each set with its paired changes: how many
prompts became flagged (refused) and how many stopped being, with McNemar's exact two-sided p-value, the chance of a
split at least that uneven if each changed prompt were equally likely to move either way. Both speak of the prompts
sampled, not of the training's randomness: two runs that differ only in their seed can differ by more.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from unlearnlm.config import RunConfig
from unlearnlm.data.formatting import collate, length_batches, tokenize_dialogue
from unlearnlm.data.records import Dialogue
from unlearnlm.generation import generate
from unlearnlm.judges.embeddings import MiniLMEncoder
from unlearnlm.judges.panel import JudgePanel
from unlearnlm.losses import forward_kl, token_logprobs
from unlearnlm.methods.base import forward, reference_forward
from unlearnlm.models import Reference


@dataclass
class EvalSet:
    """A prompt set answered before and after unlearning."""

    name: str
    kind: Literal["harmful", "benign"]
    prompts: list[Dialogue]
    before: list[str]
    role: str
    """How the set was used: "trained on", "early stopping", "held-out" ..."""
    judged_as: list[Dialogue] | None = None
    """Prompts the judges read instead of ``prompts`` (a rephrased attack is judged against its plain intent)."""


#: What a prompt-blind refusal looks like: the floor for prompt-answer relevance.
STOCK_REFUSAL = "I'm sorry, but I can't help with that."


@functools.cache
def relevance_encoder():
    """The sentence encoder behind the relevance measure: the embedded MiniLM, loaded once."""
    return MiniLMEncoder()


def relevance(encoder, prompts: Sequence[Dialogue] | np.ndarray, answers: Sequence[str]) -> np.ndarray:
    """Cosine similarity of each prompt with its answer in the encoder's space: (N,). ``prompts`` may be given
    already encoded ((N, D) unit rows), to encode a set's prompts once for several answer lists."""
    if not answers:
        return np.zeros(0)
    p = prompts if isinstance(prompts, np.ndarray) else encoder.encode([d.prompt for d in prompts])  # (N, D)
    a = encoder.encode(list(answers))  # (N, D)
    return (p * a).sum(axis=1)


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Unique n-grams / total n-grams over whitespace tokens of all texts (0 when there are none)."""
    grams: list[tuple[str, ...]] = []
    for text in texts:
        words = text.split()
        grams.extend(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return len(set(grams)) / len(grams) if grams else 0.0


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval for ``k`` successes in ``n`` trials (95% for the default ``z``); (0, 1) when n is 0.

    Unlike the normal approximation it stays inside [0, 1] and is not empty at k = 0, where small sets often sit."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(new: int, gone: int) -> float:
    """McNemar's exact two-sided p-value for paired yes/no outcomes: ``new`` pairs went no → yes, ``gone`` yes → no.

    Under "no change" each of the ``new + gone`` changed pairs moves either way with probability 1/2, so the p-value
    is twice the binomial tail of the smaller count (at most 1); 1.0 when nothing changed."""
    changed = new + gone
    if changed == 0:
        return 1.0
    tail = sum(math.comb(changed, i) for i in range(min(new, gone) + 1)) / 2**changed
    return min(1.0, 2 * tail)


def paired_changes(before: Sequence[bool], after: Sequence[bool]) -> dict[str, float]:
    """How many items turned true (``new``) and false (``gone``) from ``before`` to ``after``, with McNemar's p."""
    new = sum(not b and a for b, a in zip(before, after, strict=True))
    gone = sum(b and not a for b, a in zip(before, after, strict=True))
    return {"new": new, "gone": gone, "p_value": mcnemar_exact(new, gone)}


def answer_metrics(panel: JudgePanel, refusal, prompts: Sequence[Dialogue], answers: Sequence[str]):
    """Judge one set of answers: (metrics dict, annotated dialogues)."""
    dialogues = [p.with_response(a) for p, a in zip(prompts, answers, strict=True)]
    annotated = panel.annotate(dialogues)
    refused = refusal.score(dialogues) >= refusal.threshold
    flagged = np.array([d.meta["flagged"] for d in annotated], dtype=bool)
    metrics = {
        "n": len(dialogues),
        "flagged_rate": float(flagged.mean()) if len(flagged) else 0.0,
        "refusal_rate": float(refused.mean()) if len(refused) else 0.0,
        "flagged_interval": list(wilson_interval(int(flagged.sum()), len(flagged))),
        "refusal_interval": list(wilson_interval(int(refused.sum()), len(refused))),
        "distinct_1": distinct_n(answers, 1),
        "distinct_2": distinct_n(answers, 2),
        "mean_words": float(np.mean([len(a.split()) for a in answers])) if answers else 0.0,
        "flagged_by": {name: sum(name in d.meta["flagged_by"] for d in annotated) for name in panel.thresholds},
    }
    annotated = [d.with_response(d.response, refused=bool(r)) for d, r in zip(annotated, refused, strict=True)]
    return metrics, annotated


def sorted_batches(tokenizer, dialogues: Sequence[Dialogue], device: torch.device, *, max_prompt_tokens: int,
                   max_response_tokens: int, batch_size: int = 8, padding_side: str = "right"):
    """Collated batches of ``dialogues`` (labels on the response tokens) in :func:`length_batches` order, so that
    batches pad little: for figures that are sums over tokens, which the order does not change."""
    rows = [tokenize_dialogue(tokenizer, d, max_prompt_tokens=max_prompt_tokens,
                              max_response_tokens=max_response_tokens) for d in dialogues]
    for picked in length_batches([len(r.input_ids) for r in rows], batch_size):
        batch = collate([rows[i] for i in picked], tokenizer.pad_token_id, padding_side=padding_side)
        yield {k: v.to(device) for k, v in batch.items()}


@torch.no_grad()
def response_nll(logits_of, tokenizer, dialogues: Sequence[Dialogue], device: torch.device, *, max_prompt_tokens: int,
                 max_response_tokens: int, batch_size: int = 8) -> float:
    """Mean negative log-likelihood per response token of ``dialogues`` under ``logits_of(input_ids,
    attention_mask) -> (B, T, V) logits`` (a model's forward pass, or the original's): its exp is the perplexity."""
    total, tokens = 0.0, 0
    for batch in sorted_batches(tokenizer, dialogues, device, max_prompt_tokens=max_prompt_tokens,
                                max_response_tokens=max_response_tokens, batch_size=batch_size):
        picked, mask = token_logprobs(logits_of(batch["input_ids"], batch["attention_mask"]), batch["labels"])
        total -= picked.sum().item()
        tokens += int(mask.sum().item())
    return total / max(tokens, 1)


@torch.no_grad()
def normal_data_metrics(
    model: nn.Module, reference: Reference, tokenizer, dialogues: Sequence[Dialogue], *,
    max_prompt_tokens: int, max_response_tokens: int, batch_size: int = 8,
) -> dict[str, float]:
    """Perplexity of the model and of the original on response tokens, and KL(original || model). Rows are batched
    by length (the figures are sums over tokens, so the order does not change them), left-padded so that both
    passes compute logits over the responses' window only (:func:`~unlearnlm.methods.base.forward`), not over every
    prompt position: on the harm default's two normal sets, 37 s a run before (two passes over 128 rows, 2 CPU
    cores). A peft model's pass runs with its adapters unmerged: the original's pass of each batch switches them off,
    and merging per batch would cost two host copies of the adapted weights (:func:`~unlearnlm.generation.
    adapters_merged`), about 0.35 s each time on SmolLM2-135M, more than the adapters' own matmuls."""
    nll_model = nll_ref = kl_sum = 0.0
    tokens = 0
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    for batch in sorted_batches(tokenizer, dialogues, device, max_prompt_tokens=max_prompt_tokens,
                                max_response_tokens=max_response_tokens, batch_size=batch_size, padding_side="left"):
        policy = forward(model, batch)  # (B, K, V) over the response window
        original = reference_forward(reference, batch)
        picked, mask = token_logprobs(policy.logits, policy.labels)  # (B, K-1)
        ref_picked, _ = token_logprobs(original.logits, original.labels)
        n = int(mask.sum().item())
        nll_model -= picked.sum().item()
        nll_ref -= ref_picked.sum().item()
        kl_sum += forward_kl(policy.logits, original.logits, policy.labels).item() * n
        tokens += n
    model.train(was_training)
    tokens = max(tokens, 1)
    return {
        "perplexity": math.exp(nll_model / tokens),
        "perplexity_original": math.exp(nll_ref / tokens),
        "kl_to_original": kl_sum / tokens,
        "tokens": tokens,
    }


def compare_sets(
    panel: JudgePanel, refusal, sets: Sequence[EvalSet], after: dict[str, list[str]], encoder=None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Metrics before vs after for every set, and one row per example with both answers.

    Judges read ``judged_as`` prompts where a set has them; relevance is always measured against the asked prompt.
    """
    metrics: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    for s in sets:
        judged = s.judged_as or s.prompts
        before_m, before_d = answer_metrics(panel, refusal, judged, s.before)
        after_m, after_d = answer_metrics(panel, refusal, judged, after[s.name])
        if encoder is not None and s.prompts:
            prompt_vectors = encoder.encode([d.prompt for d in s.prompts])  # (N, D)
            stock = float((prompt_vectors @ encoder.encode([STOCK_REFUSAL])[0]).mean())  # the same before and after
            for m, answers in ((before_m, s.before), (after_m, after[s.name])):
                m["relevance"] = float(relevance(encoder, prompt_vectors, answers).mean())
                m["relevance_stock"] = stock
        changes = {what: paired_changes([d.meta[what] for d in before_d], [d.meta[what] for d in after_d])
                   for what in ("flagged", "refused")}
        metrics[s.name] = {"kind": s.kind, "role": s.role, "before": before_m, "after": after_m, "changes": changes}
        for asked, b, a in zip(s.prompts, before_d, after_d, strict=True):
            rows.append({
                "set": s.name, "prompt": asked.prompt, **({"judged_as": b.prompt} if s.judged_as else {}),
                "before": b.response, "after": a.response,
                "before_scores": b.meta["scores"], "after_scores": a.meta["scores"],
                "before_flagged": b.meta["flagged"], "after_flagged": a.meta["flagged"],
                "after_flagged_by": a.meta["flagged_by"],
                "before_refused": b.meta["refused"], "after_refused": a.meta["refused"],
            })
    return metrics, rows


def evaluate_sets(model, reference: Reference, tokenizer, sets: Sequence[EvalSet],
                  normal_sets: dict[str, list[Dialogue]], panel: JudgePanel, refusal, cfg: RunConfig):
    """Answer every set with ``model`` and compare with the sets' before answers; normal-data metrics too.

    Returns ``(set metrics, per-example rows, normal-data metrics, the after answers by set name)``.
    """
    sets = [s for s in sets if s.prompts]
    after = {s.name: generate(model, tokenizer, s.prompts, desc=f"after:{s.name}", **cfg.generation.kwargs())
             for s in sets}
    set_metrics, rows = compare_sets(panel, refusal, sets, after, encoder=relevance_encoder())
    lengths = {"max_prompt_tokens": cfg.data.max_prompt_tokens, "max_response_tokens": cfg.data.max_response_tokens}
    normal_metrics = {name: normal_data_metrics(model, reference, tokenizer, ds, **lengths)
                      for name, ds in normal_sets.items() if ds}
    return set_metrics, rows, normal_metrics, after
