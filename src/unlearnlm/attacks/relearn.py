"""Relearning probe: fine-tune a copy of the unlearned model for a few steps, then measure the forget figures again.

If unlearning only hid the knowledge, a few steps of ordinary fine-tuning bring it back, even on data that does not
contain it: Łucki et al., 2024 ("An Adversarial Perspective on Machine Unlearning for AI Safety", arXiv 2409.18025)
recover most hazardous capabilities of RMU-edited models by fine-tuning on 10 unrelated examples, and Deeb & Roger,
2024 ("Do Unlearning Methods Remove Information from Language Model Weights?", arXiv 2410.08827) recover 88 % of
pre-unlearning accuracy by fine-tuning on some of the forgotten facts and testing on others of the same kind.

The data (``RelearnOptions.data``) is the run's own, never new:

* ``forget``: forget prompts the unlearning trained on (sets whose role is "trained on"), each with the original's
  answer that the judges flagged, i.e. the old behaviour itself. The units they ask about (:attr:`Task.knowledge_unit
  <unlearnlm.tasks.base.Task.knowledge_unit>`: a person, a statement pair; otherwise the prompt) are relearned; every
  row of every harmful set that asks about another unit is measured, so no measured question asks for what the
  copy was taught. Where units are shared across sets (privacy, hallucination: the trained questions and their
  paraphrases ask about the same people), half the units (seeded) are relearned and the other half measured; where
  each prompt is its own unit (harm, custom), every trained-on prompt is relearned and the held-out splits, the
  rephrased set and the other-source set are measured. These rows were trained on *for unlearning* (the method
  pushed away from exactly these answers) but never evaluated as held-out: relearning on them asks whether pulling
  the model back on some forgotten examples brings back the others.
* ``benign``: as many rows of the run's held-out benign set (the set named ``benign``) with the original's answers:
  unrelated data, measured on the same rows as ``forget``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from torch import nn

from unlearnlm.config import check
from unlearnlm.data.formatting import collate, tokenize_dialogue
from unlearnlm.data.records import Dialogue
from unlearnlm.errors import DataError, UnlearnLMError
from unlearnlm.evaluate import EvalSet
from unlearnlm.losses import nll


@dataclass
class RelearnOptions:
    """Settings of ``unlearnlm attack relearn``."""

    steps: list[int] = field(default_factory=lambda: [1, 2, 5, 10])
    """Optimizer steps after which the copy is measured (training goes on from one to the next)."""
    data: Literal["forget", "benign"] = "forget"
    """What the copy is fine-tuned on (module docstring)."""
    learning_rate: float | None = None
    """AdamW learning rate; None: the run's ``train.learning_rate`` (LoRA or full, as the run trained)."""
    batch_size: int | None = None
    """Rows per step; None: the run's ``train.batch_size``."""
    examples: int | None = None
    """At most this many relearning rows (a seeded sample); None: all there are."""
    seed: int = 0

    def __post_init__(self) -> None:
        check(bool(self.steps) and all(isinstance(s, int) and s > 0 for s in self.steps), "--steps",
              f"give positive step counts, e.g. --steps 1 2 5 10; got {self.steps}")
        self.steps = sorted(set(self.steps))
        check(self.data in ("forget", "benign"), "--data", f"must be forget or benign, got {self.data!r}")
        for key in ("learning_rate", "batch_size", "examples"):
            value = getattr(self, key)
            check(value is None or value > 0, f"--{key.replace('_', '-')}", f"must be positive, got {value}")


def unit_of(dialogue: Dialogue, key: str | None) -> str:
    """The piece of knowledge a question asks for: its ``meta[key]``, or the prompt itself."""
    return str(dialogue.meta[key]) if key and key in dialogue.meta else dialogue.prompt


def subset(s: EvalSet, keep: Sequence[bool]) -> EvalSet:
    """The rows of ``s`` where ``keep`` holds, with their before answers (and judged-as prompts)."""
    pick = lambda rows: [r for r, k in zip(rows, keep, strict=True) if k]  # noqa: E731
    return replace(s, prompts=pick(s.prompts), before=pick(s.before),
                   judged_as=pick(s.judged_as) if s.judged_as is not None else None)


def draw(rows: Sequence[Dialogue], n: int | None, seed: int) -> list[Dialogue]:
    """Up to ``n`` rows (all when None), a seeded draw kept in input order."""
    if n is None or n >= len(rows):
        return list(rows)
    picked = set(random.Random(seed).sample(range(len(rows)), n))
    return [r for i, r in enumerate(rows) if i in picked]


@dataclass
class RelearnSplit:
    """What the copy is fine-tuned on, and what is measured after each step count."""

    rows: list[Dialogue]
    """Prompts with the original's answers."""
    units: list[str]
    """The units (:func:`unit_of`) of the forget rows: no measured row asks about one of them."""
    measured: list[EvalSet]
    """Every harmful set, without the rows about a relearned unit; empty sets dropped."""


def forget_split(sets: Sequence[EvalSet], flagged: dict[str, Sequence[bool]], unit_key: str | None, *,
                 examples: int | None = None, seed: int = 0) -> RelearnSplit:
    """The ``forget`` data: trained-on rows whose original answer was ``flagged`` (by set name), split by unit.

    With a ``unit_key`` half the units (seeded, at least one) are relearned and the rest measured; without one
    every trained-on prompt is relearned. ``examples`` caps the rows (a seeded sample) before the units are read.
    """
    trained = [s for s in sets if s.kind == "harmful" and s.role.startswith("trained on")]
    candidates = [p.with_response(a) for s in trained
                  for p, a, bad in zip(s.prompts, s.before, flagged[s.name], strict=True) if bad and a.strip()]
    if not candidates:
        raise DataError("no forget prompt the run trained on has an original answer the judges flag, so there is "
                        "no old behaviour to relearn")
    units = sorted({unit_of(d, unit_key) for d in candidates})
    if unit_key:
        if len(units) < 2:
            raise DataError(f"the relearning probe needs at least two forgotten {unit_key}s (one to relearn, one to "
                            f"measure); the run forgot {len(units)}")
        chosen = set(random.Random(seed).sample(units, len(units) // 2))
        candidates = [d for d in candidates if unit_of(d, unit_key) in chosen]
    rows = draw(candidates, examples, seed)
    relearned = {unit_of(d, unit_key) for d in rows}
    measured = [subset(s, [unit_of(p, unit_key) not in relearned for p in s.prompts])
                for s in sets if s.kind == "harmful"]
    return RelearnSplit(rows, sorted(relearned), [s for s in measured if s.prompts])


def benign_rows(sets: Sequence[EvalSet], n: int, seed: int) -> list[Dialogue]:
    """``n`` rows (seeded) of the run's held-out benign set with the original's answers: unrelated data."""
    benign = [s for s in sets if s.name == "benign"]
    rows = [p.with_response(a) for s in benign for p, a in zip(s.prompts, s.before, strict=True) if a.strip()]
    if not rows:
        raise DataError("the run has no held-out benign set with answers (set 'benign' in examples.jsonl), so there "
                        "is no benign data to relearn on; use --data forget")
    return draw(rows, n, seed)


@dataclass
class FineTune:
    """How the copy is fine-tuned: AdamW at a constant rate, gradients clipped to norm 1, as the run trained."""

    learning_rate: float
    batch_size: int
    seed: int
    max_prompt_tokens: int
    max_response_tokens: int


def relearn_steps(model: nn.Module, tokenizer, rows: Sequence[Dialogue], steps: Sequence[int],
                  tune: FineTune) -> Iterator[tuple[int, float]]:
    """Fine-tune ``model``'s trainable weights in place with plain next-token cross-entropy on the responses of
    ``rows``, batches drawn in seeded random order (every row once before any repeats); after each step count in
    ``steps`` yield ``(step, that step's loss)`` with the model in eval mode, for the caller to measure it.

    Raises:
        UnlearnLMError: a loss turned NaN or infinite (the learning rate is too high).
    """
    tokens = [tokenize_dialogue(tokenizer, d, max_prompt_tokens=tune.max_prompt_tokens,
                                max_response_tokens=tune.max_response_tokens) for d in rows]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=tune.learning_rate, weight_decay=0.0)
    device = next(model.parameters()).device
    rng, order = random.Random(tune.seed), []
    torch.manual_seed(tune.seed)
    for step in range(1, max(steps) + 1):
        model.train()
        batch_idx = []
        while len(batch_idx) < min(tune.batch_size, len(tokens)):
            if not order:
                order = list(range(len(tokens)))
                rng.shuffle(order)
            batch_idx.append(order.pop())
        batch = {k: v.to(device) for k, v in collate([tokens[i] for i in batch_idx], tokenizer.pad_token_id).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (B, T, V)
        loss = nll(logits, batch["labels"])
        if not math.isfinite(loss.item()):
            raise UnlearnLMError(f"relearning diverged at step {step} (loss {loss.item()}); lower --lr "
                                 f"(now {tune.learning_rate:g})")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step in steps:
            model.eval()
            yield step, loss.item()
