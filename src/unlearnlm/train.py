"""The one training loop: accelerate, seeded, early stopping on the judge, best checkpoint kept.

Read it top to bottom: tokenise every stream once, let the method prepare its paired data, then each
step draw a forget batch (plus the paired rows of the same examples) and a normal batch, compute the
method's loss, step the optimizer. Every ``eval_every`` steps a monitor (greedy generation on held-out
flagged prompts, judged; KL on normal data) decides whether to stop, and the best weights are kept.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from tqdm.auto import tqdm

from unlearnlm.config import DataConfig, TrainConfig
from unlearnlm.data.formatting import TokenizedDialogue, collate
from unlearnlm.data.records import Dialogue
from unlearnlm.methods.base import PrepareContext, UnlearningMethod, reference_top_k
from unlearnlm.models import Reference, trainable_parameters


@dataclass
class Check:
    """One early-stopping evaluation."""

    step: int
    flagged_rate: float
    normal_kl: float
    over_refusal: float = 0.0
    seconds: float = 0.0


@dataclass
class TrainResult:
    """What happened during training."""

    steps: int
    best_step: int
    stop_reason: str
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    prepare_info: dict[str, Any] = field(default_factory=dict)


Monitor = Callable[[nn.Module, int], Check]


class _Stream:
    """Cycles through a tokenised list in seeded random order, one batch of indices at a time."""

    def __init__(self, size: int, batch_size: int, rng: random.Random) -> None:
        self.size, self.batch_size, self.rng = size, batch_size, rng
        self.order: list[int] = []

    def next_indices(self) -> list[int]:
        out = []
        while len(out) < min(self.batch_size, self.size):
            if not self.order:
                self.order = list(range(self.size))
                self.rng.shuffle(self.order)
            out.append(self.order.pop())
        return out


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of the learning rate at optimizer step ``step`` (0-based): linear warm-up over
    ``warmup_steps``, then constant or decayed to 0 at ``max_steps``."""
    warmup = max(cfg.warmup_steps, 1)
    if step + 1 < warmup:
        return (step + 1) / warmup
    if cfg.lr_schedule == "constant":
        return 1.0
    progress = min(1.0, (step + 1 - warmup) / max(cfg.max_steps - warmup, 1))  # 0 → 1 after warm-up
    return 1.0 - progress if cfg.lr_schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))


def _acceptable(check: Check, cfg: TrainConfig) -> bool:
    """Normal abilities kept: KL within its bound and no more over-refusal than allowed."""
    return check.normal_kl <= cfg.max_normal_kl and check.over_refusal <= cfg.max_over_refusal


def _better(check: Check, best: Check, cfg: TrainConfig) -> bool:
    """Lower flagged rate wins among acceptable checks; ties go to the lower KL."""
    if not _acceptable(check, cfg):
        return False
    return (check.flagged_rate, check.normal_kl) < (best.flagged_rate, best.normal_kl)


def unlearn(
    model: nn.Module,
    tokenizer,
    method: UnlearningMethod,
    *,
    forget: Sequence[Dialogue],
    normal: Sequence[Dialogue],
    expected: Sequence[Dialogue] = (),
    train_cfg: TrainConfig,
    data_cfg: DataConfig,
    reference: Reference,
    monitor: Monitor | None = None,
    initial_check: Check | None = None,
    accelerator: Accelerator | None = None,
) -> TrainResult:
    """Run ``method`` on ``model`` in place; on return the model holds the best checkpoint's weights."""
    if not forget:
        raise ValueError("nothing to unlearn: the forget set is empty (did the judge flag any dialogue?)")
    if "normal" in method.streams and not normal:
        raise ValueError(f"method {method.name!r} needs normal dialogues, and none were given")
    accelerator = accelerator or Accelerator(
        gradient_accumulation_steps=train_cfg.gradient_accumulation_steps, mixed_precision=train_cfg.mixed_precision
    )
    set_seed(train_cfg.seed)
    rng = random.Random(train_cfg.seed + accelerator.process_index)  # each process sees its own order
    device = accelerator.device
    start_time = time.perf_counter()

    ctx = PrepareContext(
        forget=forget, normal=normal, expected=expected, reference=reference.to(device), tokenizer=tokenizer,
        max_prompt_tokens=data_cfg.max_prompt_tokens, max_response_tokens=data_cfg.max_response_tokens,
        batch_size=train_cfg.batch_size * 4, seed=train_cfg.seed, device=device,
    )
    prepared = method.prepare(ctx)
    tokens = {"forget": ctx.tokenize(forget)}
    if "normal" in method.streams:
        tokens["normal"] = ctx.tokenize(normal)
    for name, rows in prepared.pairs.items():
        tokens[name] = ctx.tokenize(rows)
    normal_cache: dict[str, torch.Tensor] = {}
    if train_cfg.kl_top_k and "normal" in tokens:  # the original's outputs on normal rows, once
        normal_cache = reference_top_k(ctx, tokens["normal"], train_cfg.kl_top_k)
    forget_stream = _Stream(len(forget), train_cfg.batch_size, rng)
    normal_stream = _Stream(len(normal), train_cfg.batch_size, rng) if "normal" in tokens else None

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=train_cfg.learning_rate, weight_decay=train_cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(lr_factor, cfg=train_cfg))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    model.train()

    def to_batch(rows: list[TokenizedDialogue]) -> dict[str, torch.Tensor]:
        # Left padding: every response ends at the last column, so a step computes logits for a short window.
        return {k: v.to(device) for k, v in collate(rows, tokenizer.pad_token_id, padding_side="left").items()}

    best = initial_check or Check(step=0, flagged_rate=math.inf, normal_kl=0.0)
    best_state = trainable_parameters(accelerator.unwrap_model(model))
    checks = [best] if initial_check else []
    history: list[dict[str, float]] = []
    stale, stop_reason, step = 0, "max_steps", 0
    bar = tqdm(range(1, train_cfg.max_steps + 1), desc=f"unlearn[{method.name}]", leave=False,
               disable=not accelerator.is_local_main_process)
    for step in bar:
        with accelerator.accumulate(model):
            idx = forget_stream.next_indices()
            batch: dict[str, Any] = {name: to_batch([tokens[name][i] for i in idx]) for name in ["forget", *prepared.pairs]}
            batch.update({name: t[idx].to(device) for name, t in prepared.tensors.items()})
            batch["progress"] = step / train_cfg.max_steps  # for methods whose weights follow a schedule
            if normal_stream is not None:
                n_idx = normal_stream.next_indices()
                batch["normal"] = to_batch([tokens["normal"][i] for i in n_idx])
                batch["normal"].update({k: t[n_idx].to(device) for k, t in normal_cache.items()})
            out = method.step(model, reference, batch)
            accelerator.backward(out.loss)
            if train_cfg.max_grad_norm > 0 and accelerator.sync_gradients:
                accelerator.clip_grad_norm_(params, train_cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        history.append({"step": step, "loss": out.loss.item(), **out.terms})
        bar.set_postfix(loss=f"{out.loss.item():.3f}")
        if monitor is None or train_cfg.eval_every == 0 or (step % train_cfg.eval_every and step != train_cfg.max_steps):
            continue
        check = monitor(accelerator.unwrap_model(model), step)
        checks.append(check)
        if _better(check, best, train_cfg):
            best, stale = check, 0
            best_state = trainable_parameters(accelerator.unwrap_model(model))
        else:
            stale += 1
        if check.flagged_rate <= train_cfg.target_flagged_rate and _acceptable(check, train_cfg):
            stop_reason = "target_reached"
            break
        if stale >= train_cfg.patience:
            stop_reason = "patience"
            break
    model = accelerator.unwrap_model(model)
    if monitor is not None:  # restore the best checkpoint (the original if nothing beat it)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in best_state:
                    p.copy_(best_state[name])
    model.eval()
    return TrainResult(
        steps=step, best_step=best.step if monitor is not None else step, stop_reason=stop_reason,
        seconds=time.perf_counter() - start_time, history=history, checks=checks, prepare_info=prepared.info,
    )
