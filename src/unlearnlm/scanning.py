"""The evaluative model at work on generated answers: the scan that finds the forget set, and the
early-stopping check that re-asks forget prompts during training.

Both are task-agnostic: a task hands them prompts, a judge panel and its collateral-damage measure
(:data:`Collateral`); the pipeline and the tasks call them.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from unlearnlm.config import RunConfig
from unlearnlm.data.formatting import IGNORE_INDEX, collate
from unlearnlm.data.records import Dialogue
from unlearnlm.errors import DataError
from unlearnlm.evaluate import response_nll
from unlearnlm.generation import adapters_merged, generate
from unlearnlm.judges.base import flag
from unlearnlm.judges.panel import JudgePanel
from unlearnlm.judges.refusal import RefusalDetector
from unlearnlm.methods.base import PrepareContext, forward, reference_top_k
from unlearnlm.methods.baselines import normal_kl
from unlearnlm.models import Reference
from unlearnlm.train import Check

Log = Callable[[str], None]
#: ``collateral(prompts, answers) -> share`` of collateral damage in the model's greedy answers.
Collateral = Callable[[list[Dialogue], list[str]], float]
#: ``membership(model, tokenizer) -> AUC`` of membership inference, forget data against data never trained on.
Membership = Callable[[Any, Any], float]


def scan(model, tokenizer, prompts: Sequence[Dialogue], panel: JudgePanel, cfg: RunConfig, desc: str = "scan") -> list[Dialogue]:
    """Generate the model's answers and judge them; each returned dialogue carries its verdict in meta."""
    answers = generate(model, tokenizer, prompts, desc=desc, **cfg.generation.kwargs())
    return panel.annotate([p.with_response(a) for p, a in zip(prompts, answers, strict=True)])


def split_forget(flagged: list[Dialogue], cfg: RunConfig) -> tuple[list[Dialogue], list[Dialogue], list[Dialogue]]:
    """Seeded split of flagged dialogues into (train, val for early stopping, held-out test)."""
    if len(flagged) < 3:
        raise DataError(
            f"the judges flagged only {len(flagged)} of the scanned answers; unlearning needs at least 3. "
            "Scan more prompts (data.scan_size) or check that the model really answers them badly"
        )
    rows = list(flagged)
    random.Random(cfg.train.seed).shuffle(rows)
    n_val = max(1, round(cfg.data.val_fraction * len(rows)))
    n_test = round(cfg.data.test_fraction * len(rows)) if cfg.data.test_fraction else 0
    return rows[n_val + n_test :], rows[:n_val], rows[n_val : n_val + n_test]


class CheckKL:
    """KL(original || model) on fixed normal dialogues, for a check that runs many times.

    The rows are tokenised and batched once; the model's logits are computed over each batch's response window
    only; with ``top_k`` > 0 the original's top-k log-probabilities are computed once, on the first call, and the KL
    is :func:`~unlearnlm.losses.forward_kl_topk` (as the training loss with ``train.kl_top_k``: about 5% low at
    k = 256), else exact with a reference pass per call. Token-weighted mean over all rows.
    """

    def __init__(self, reference: Reference, tokenizer, dialogues: Sequence[Dialogue], cfg: RunConfig,
                 batch_size: int = 8) -> None:
        self.ctx = PrepareContext(forget=[], normal=dialogues, expected=[], reference=reference, tokenizer=tokenizer,
                                  max_prompt_tokens=cfg.data.max_prompt_tokens,
                                  max_response_tokens=cfg.data.max_response_tokens, batch_size=batch_size,
                                  seed=cfg.train.seed, device=torch.device("cpu"))
        self.top_k = cfg.train.kl_top_k
        self.batches: list[dict[str, torch.Tensor]] | None = None

    def _build(self, device: torch.device) -> list[dict[str, torch.Tensor]]:
        self.ctx.device = device
        rows = sorted(self.ctx.tokenize(self.ctx.normal), key=lambda r: len(r.input_ids))  # batches pad little
        batches = []
        for start in range(0, len(rows), self.ctx.batch_size):
            part = rows[start : start + self.ctx.batch_size]
            batch = {k: v.to(device) for k, v in collate(part, self.ctx.tokenizer.pad_token_id,
                                                         padding_side="left").items()}
            if self.top_k:  # right-aligned like the batch, so the last K columns line up
                batch |= {k: v.to(device) for k, v in reference_top_k(self.ctx, part, self.top_k).items()}
            batches.append(batch)
        return batches

    @torch.no_grad()
    def __call__(self, model) -> float:
        if self.batches is None:
            self.batches = self._build(next(model.parameters()).device)
        was_training = model.training
        model.eval()
        total = tokens = 0.0
        # With the original's top-k cached no original pass runs here, so the adapters are merged once for every
        # batch (each merge copies the adapted weights to the host and back, about 0.35 s on SmolLM2-135M); the
        # exact KL's original pass needs them switched off, so then each batch's policy pass merges on its own.
        with adapters_merged(model) if self.top_k else contextlib.nullcontext():
            for batch in self.batches:
                n = float((batch["labels"][:, 1:] != IGNORE_INDEX).sum())  # tokens the KL averages over
                with adapters_merged(model):  # a no-op when merged above
                    policy = forward(model, batch)
                total += float(normal_kl(policy, self.ctx.reference, batch)) * n
                tokens += n
        model.train(was_training)
        return total / max(tokens, 1.0)


#: How many tokens of an answer refusal mining reads (``train.mine_refusals``). On the 640 benign answers of each of
#: runs EV, E35NL and NTLA120 (before and after), the refusal detector reading the first 32 tokens instead of all 48
#: agreed on 99.2-99.7% of answers and found 84-92% of the refusals; the first 24, 74-76% (a throwaway script on the
#: runs' ``examples.jsonl``, SmolLM2 tokenizer).
MINE_NEW_TOKENS = 32


@dataclass
class RefusalMiner:
    """:data:`unlearnlm.train.Miner` for ``train.mine_refusals``: the model's greedy openings (``MINE_NEW_TOKENS``
    tokens) to normal prompts, read by the refusal detector."""

    tokenizer: Any
    cfg: RunConfig
    log: Log
    detector: RefusalDetector = field(default_factory=RefusalDetector)

    def __call__(self, model, dialogues: list[Dialogue]) -> list[bool]:
        start = time.perf_counter()
        kwargs = {**self.cfg.generation.kwargs(),
                  "max_new_tokens": min(MINE_NEW_TOKENS, self.cfg.generation.max_new_tokens)}
        prompts = [d.prompt_only() for d in dialogues]
        answers = generate(model, self.tokenizer, prompts, **kwargs)
        refused = flag(self.detector, [p.with_response(a) for p, a in zip(prompts, answers, strict=True)]).tolist()
        seconds = time.perf_counter() - start
        self.log(f"  mining: {sum(refused)} of {len(refused)} benign prompts refused ({seconds:.0f}s)")
        return refused


@dataclass
class Monitor:
    """Early-stopping check on prompts kept apart for it: judged greedy answers to forget prompts, a
    task-supplied collateral-damage measure on the greedy answers to a second prompt set (the harm task:
    refusals of benign prompts), and KL to the original on normal dialogues."""

    tokenizer: Any
    prompts: list[Dialogue]
    panel: JudgePanel
    reference: Reference
    normal: list[Dialogue]
    collateral_prompts: list[Dialogue]
    collateral: Collateral
    cfg: RunConfig
    log: Log
    labels: tuple[str, str] = ("val flagged", "benign refused")
    """How the log names the flagged rate and the collateral measure."""
    judged_as: list[Dialogue] | None = None
    """What the judges read in place of each of ``prompts`` (:attr:`unlearnlm.tasks.base.Plan.stop_judged_as`)."""
    membership: Membership | None = None
    """How detectable the forget data still is (:attr:`unlearnlm.tasks.base.Plan.stop_membership`), read at every
    check where the task has it."""
    belief: Membership | None = None
    """Truth preference on pairs never trained on (:attr:`unlearnlm.tasks.base.Plan.stop_belief`), read at every
    check where the task has it; its change from ``belief_start`` is the check's ``belief_drift``."""
    belief_start: float | None = None
    """The original's value of ``belief``."""
    texts: list[Dialogue] = field(default_factory=list)
    """Human-written dialogues never trained on or reported (:attr:`unlearnlm.tasks.base.Plan.stop_texts`): the
    check reads their perplexity's change from the original's (empty: not read)."""

    def __post_init__(self) -> None:
        self.normal_kl = CheckKL(self.reference, self.tokenizer, self.normal, self.cfg)
        self.texts_start: float | None = None  # the original's NLL per token on ``texts``, from the first check
        self.answers: list[dict[str, Any]] = []
        """Every check's answers, one row per prompt (``check_answers.jsonl``): step, set (``stop``: the forget
        prompts kept for stopping, with the panel's verdict; ``collateral``: the collateral measure's prompts),
        prompt and answer. A resumed run holds those of the checks after its checkpoint only."""

    def text_nll(self, logits_of, device: torch.device) -> float:
        """Mean NLL per response token of :attr:`texts` under ``logits_of(input_ids, attention_mask)``."""
        return response_nll(logits_of, self.tokenizer, self.texts, device,
                            max_prompt_tokens=self.cfg.data.max_prompt_tokens,
                            max_response_tokens=self.cfg.data.max_response_tokens)

    def perplexity_change(self, model) -> float:
        """How far the perplexity of :attr:`texts` rose above the original's, as a share (0.1: +10%)."""
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        if self.texts_start is None:  # the original's pass: adapters off (LoRA) or the kept copy of its weights
            self.texts_start = self.text_nll(lambda ids, mask: self.reference(ids, mask)[0], device)
        with adapters_merged(model):
            now = self.text_nll(lambda ids, mask: model(input_ids=ids, attention_mask=mask).logits, device)
        model.train(was_training)
        return math.exp(now - self.texts_start) - 1.0

    def __call__(self, model, step: int) -> Check:
        start = time.perf_counter()
        answers = generate(model, self.tokenizer, [*self.prompts, *self.collateral_prompts],
                           **self.cfg.generation.kwargs())
        generated = time.perf_counter()
        forget, other = answers[: len(self.prompts)], answers[len(self.prompts) :]
        read_as = self.judged_as or self.prompts
        flagged = self.panel([p.with_response(a) for p, a in zip(read_as, forget, strict=True)]).flagged
        collateral = self.collateral(self.collateral_prompts, other)
        self.answers += [{"step": step, "set": "stop", "prompt": p.prompt, "answer": a, "flagged": bool(f)}
                         for p, a, f in zip(self.prompts, forget, flagged, strict=True)]
        self.answers += [{"step": step, "set": "collateral", "prompt": p.prompt, "answer": a}
                         for p, a in zip(self.collateral_prompts, other, strict=True)]
        judged = time.perf_counter()
        kl = self.normal_kl(model)
        text = self.perplexity_change(model) if self.texts else None
        measured = time.perf_counter()
        auc = drift = None
        with adapters_merged(model):  # the probes are the policy's passes alone
            if self.membership is not None:
                auc = self.membership(model, self.tokenizer)
            if self.belief is not None:
                if self.belief_start is None:
                    raise ValueError("Monitor.belief needs belief_start, the original's value")
                drift = abs(self.belief(model, self.tokenizer) - self.belief_start)
        end = time.perf_counter()
        check = Check(step=step, flagged_rate=float(flagged.mean()), normal_kl=kl, over_refusal=collateral,
                      seconds=end - start, membership_auc=auc, belief_drift=drift, perplexity_change=text)
        member = f", human-text perplexity {text:+.1%}" if text is not None else ""
        member += f", membership AUC {auc:.2f}" if auc is not None else ""
        member += f", belief drift {drift:.3f}" if drift is not None else ""
        timing = f", probes {end - measured:.0f}s" if auc is not None or drift is not None else ""
        self.log(f"  step {step}: {self.labels[0]} {check.flagged_rate:.2f}, {self.labels[1]} {check.over_refusal:.2f}, "
                 f"normal KL {kl:.4f}{member} ({check.seconds:.0f}s: generation {generated - start:.0f}s, judges "
                 f"{judged - generated:.0f}s, KL and perplexity {measured - judged:.0f}s{timing})")
        return check
