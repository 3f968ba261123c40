"""The one training loop: accelerate, seeded, early stopping on the judge, best checkpoint kept.

Read it top to bottom: tokenise every stream once, let the method prepare its paired data, then each
step draw a forget batch (plus the paired rows of the same examples) and a normal batch, compute the
method's loss, step the optimizer. Every ``eval_every`` steps a monitor (greedy generation on held-out
flagged prompts, judged; KL on normal data) decides whether to stop, and the best weights are kept. A step
whose loss or gradient is not finite stops the run (:class:`~unlearnlm.errors.TrainingDiverged`); every
``checkpoint_every`` steps the whole training state is saved (:mod:`unlearnlm.checkpoint`) so that a killed
run continues where it stopped.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from tqdm.auto import tqdm

from unlearnlm import checkpoint, distributed
from unlearnlm.config import DataConfig, ModelConfig, TrainConfig
from unlearnlm.data.formatting import TokenizedDialogue, collate
from unlearnlm.data.records import Dialogue
from unlearnlm.errors import ConfigError, TrainingDiverged
from unlearnlm.methods.base import PrepareContext, StepOutput, UnlearningMethod, reference_top_k
from unlearnlm.models import CompiledBlocks, Reference, load_parameters, trainable_parameters
from unlearnlm.quant_aware import through_grid

_PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16}  # accelerate's mixed_precision -> autocast dtype


@dataclass
class Check:
    """One early-stopping evaluation."""

    step: int
    flagged_rate: float
    normal_kl: float
    over_refusal: float = 0.0
    seconds: float = 0.0
    membership_auc: float | None = None
    """How well membership inference still tells the forget data from unseen data (tasks that measure it)."""
    belief_drift: float | None = None
    """How far beliefs nobody asked to unlearn moved from the original's (tasks that measure it: the hallucination
    task's untouched stop pairs, absolute change in truth preference)."""
    perplexity_change: float | None = None
    """Relative change of the perplexity of human-written stop texts from the original's (0.1: +10%; None: not read,
    ``train.max_perplexity_increase`` being unset)."""


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
    resumed_from: int | None = None
    """The step of the checkpoint a resumed run continued from (None: it ran from the start)."""
    mined: list[dict[str, int]] = field(default_factory=list)
    """With ``train.mine_refusals``: per mining round, the step, where the prompts asked came from (``pool``: the
    normal data or the reserve), how many were asked and refused, and how many rows were then held as refused."""
    boosted: list[int] = field(default_factory=list)
    """With ``train.normal_boost``: the steps of the checks that raised the keep-the-rest terms' scale."""


Monitor = Callable[[nn.Module, int], Check]
#: ``miner(model, dialogues) -> refused``: whether the model now refuses each of these normal dialogues' prompts.
Miner = Callable[[nn.Module, list[Dialogue]], list[bool]]


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


def _grid(model: nn.Module, step: int, cfg: TrainConfig):
    """The context a training step runs in: through the quantization grid on every ``quant_aware_every``-th step
    when ``train.quant_aware_bits`` is set (:mod:`unlearnlm.quant_aware`), else nothing."""
    if cfg.quant_aware_bits is None or step % cfg.quant_aware_every:
        return contextlib.nullcontext()
    return through_grid(model, cfg.quant_aware_bits, cfg.quant_aware_group_size)


def _grad_norm(accelerator: Accelerator, params: list[nn.Parameter], cfg: TrainConfig) -> float | None:
    """Clip the gradients (when ``max_grad_norm`` > 0) and return their norm before clipping; None when it is not
    checked: under fp16 the loss scaler skips steps with infinite gradients itself, and some distributed set-ups
    do not report a norm."""
    if cfg.mixed_precision == "fp16":
        if cfg.max_grad_norm > 0:
            accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
        return None
    norm = accelerator.clip_grad_norm_(params, cfg.max_grad_norm if cfg.max_grad_norm > 0 else math.inf)
    return None if norm is None else float(norm)


def check_normal_boost(method: UnlearningMethod, cfg: TrainConfig) -> None:
    """``train.normal_boost`` needs a method that scales its keep-the-rest terms (:attr:`scales_normal`)."""
    if cfg.normal_boost != 1.0 and not method.scales_normal:
        raise ConfigError(f"train.normal_boost: method {method.name!r} does not scale its normal terms; set "
                          "train.normal_boost: 1 or use a method that does (distance_cluster)")


def _acceptable(check: Check, cfg: TrainConfig) -> bool:
    """Normal abilities kept: KL within its bound, no more over-refusal than allowed and, where the check measures
    them and the config bounds them, untouched beliefs moved and human-written text's perplexity rose no further
    than allowed."""
    drift_ok = check.belief_drift is None or cfg.max_belief_drift is None or check.belief_drift <= cfg.max_belief_drift
    text_ok = (check.perplexity_change is None or cfg.max_perplexity_increase is None
               or check.perplexity_change <= cfg.max_perplexity_increase)
    return check.normal_kl <= cfg.max_normal_kl and check.over_refusal <= cfg.max_over_refusal and drift_ok and text_ok


def _erased(check: Check, cfg: TrainConfig) -> bool:
    """Membership inference at or below its bound, where both the task measures it and the config bounds it."""
    return check.membership_auc is None or cfg.max_membership_auc is None or check.membership_auc <= cfg.max_membership_auc


def rank(check: Check) -> tuple[float, float, float]:
    """How checks are ordered (lower is better): flagged rate, then membership AUC, then KL."""
    return check.flagged_rate, check.membership_auc if check.membership_auc is not None else 0.0, check.normal_kl


def _better(check: Check, best: Check, cfg: TrainConfig) -> bool:
    """Lower flagged rate wins among acceptable checks; ties go to the lower membership AUC, then the lower KL."""
    return _acceptable(check, cfg) and rank(check) < rank(best)


def logged(out: StepOutput) -> dict[str, float]:
    """A step's entry in the history: the total loss and every term; under a launcher their mean over the processes
    (each computed them on its own batch), so every process logs, and checks, the same figures."""
    return distributed.mean_over_processes({"loss": out.loss.item(), **out.terms})


def non_finite(record: dict[str, float], grad_norm: float | None = None) -> str:
    """What went NaN or infinite in a step (the loss terms first, then the gradient norm); "" if nothing did.

    ``record`` is the step's :func:`logged` entry: every process reads the same one, so they stop together.
    """
    loss = record["loss"]
    terms = {name: value for name, value in record.items() if name != "loss"}
    bad = {name: value for name, value in terms.items() if not math.isfinite(value)}
    if bad:
        return f"loss term {', '.join(f'{name!r} is {value}' for name, value in bad.items())} (total loss {loss})"
    if not math.isfinite(loss):
        return f"the total loss is {loss} while every term is finite ({terms}): a weight overflowed it"
    if grad_norm is not None and not math.isfinite(grad_norm):
        return f"the gradient norm is {grad_norm} (loss {loss:.4g})"
    return ""


def diverged(step: int, what: str, progress: _Progress, cfg: TrainConfig,
             checkpoint_dir: Path | None) -> TrainingDiverged:
    """The error that stops a run at a non-finite step: where, which term, and what is left to fall back on."""
    best = progress.best
    kept = "the original model" if best.step == 0 else f"step {best.step} (in memory only; nothing is saved)"
    on_disk = (f"; the last checkpoint on disk is step {progress.saved_step} in {checkpoint_dir}"
               if progress.saved_step is not None else "")
    return TrainingDiverged(
        f"training diverged at step {step}: {what}. The run stopped before using this step and saved no model; "
        f"the best checkpoint so far was {kept}{on_disk}. Lower train.learning_rate (now {cfg.learning_rate:g}), "
        f"keep train.max_grad_norm above 0 (now {cfg.max_grad_norm:g}) or add train.warmup_steps, then run again",
        progress.history,
    )


@dataclass
class _Progress:
    """The loop's own state: what a checkpoint saves besides the weights and the optimizer."""

    best: Check
    best_state: dict[str, torch.Tensor]
    """The trainable weights at the best check (at the start: the original's)."""
    checks: list[Check]
    history: list[dict[str, float]] = field(default_factory=list)
    step: int = 0
    """The last step done."""
    stale: int = 0
    """Checks since the last improvement."""
    seconds: float = 0.0
    """Training time spent before this process took over (a resumed run)."""
    saved_step: int | None = None
    """The step of the checkpoint on disk, if any."""
    resumed_from: int | None = None
    """The step of the checkpoint this process continued from (None: it started at step 0)."""
    refused: list[int] = field(default_factory=list)
    """Indices of the normal rows the last mining found refused (``train.mine_refusals``)."""
    mined: list[dict[str, int]] = field(default_factory=list)
    """One entry per mining round (:attr:`TrainResult.mined`)."""
    boosted: list[int] = field(default_factory=list)
    """The steps of the checks that raised the keep-the-rest terms' scale (:meth:`normal_scale`)."""

    def record(self, check: Check, weights: Callable[[], dict[str, torch.Tensor]], cfg: TrainConfig) -> str:
        """Add a check and keep ``weights()`` if it is the best; returns why training stops ("": it goes on)."""
        self.checks.append(check)
        if cfg.normal_boost != 1.0 and check.step > 0 and check.over_refusal > cfg.max_over_refusal:
            self.boosted.append(check.step)
        if _better(check, self.best, cfg):
            self.best, self.best_state, self.stale = check, weights(), 0
        elif check.step > cfg.min_steps and (not cfg.patience_after_move or self.moved()):
            self.stale += 1
        if check.flagged_rate <= cfg.target_flagged_rate and _acceptable(check, cfg) and _erased(check, cfg):
            return "target_reached"
        return "patience" if self.stale >= cfg.patience else ""

    def normal_scale(self, cfg: TrainConfig) -> float:
        """What the method's keep-the-rest terms are multiplied by: ``train.normal_boost`` once per boosting check."""
        return cfg.normal_boost ** len(self.boosted)

    def moved(self) -> bool:
        """Whether some check after step 0 has a lower flagged rate than the original's (the step-0 check; without
        one, any check counts as moved)."""
        start = self.checks[0].flagged_rate if self.checks and self.checks[0].step == 0 else math.inf
        return any(c.step > 0 and c.flagged_rate < start for c in self.checks)

    def state(self) -> dict[str, Any]:
        """For a checkpoint: plain values and tensors only (loaded back with ``weights_only``)."""
        return {"step": self.step, "stale": self.stale, "best": vars(self.best), "best_state": self.best_state,
                "checks": [vars(c) for c in self.checks], "history": self.history, "refused": self.refused,
                "mined": self.mined, "boosted": self.boosted}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> _Progress:
        return cls(best=Check(**state["best"]), best_state=state["best_state"],
                   checks=[Check(**c) for c in state["checks"]], history=state["history"], step=state["step"],
                   stale=state["stale"], seconds=state["seconds"], saved_step=state["step"],
                   resumed_from=state["step"], refused=list(state["refused"]), mined=list(state["mined"]),
                   boosted=list(state.get("boosted", [])))

    def mine(self, miner: Miner, model: nn.Module, normal: Sequence[Dialogue], asked: list[int], pool: str) -> None:
        """Ask the model the normal prompts ``asked`` (from ``pool``: "normal" or "reserve"): those it refuses join
        :attr:`refused`, those it answers leave."""
        refused = distributed.from_main(miner(model, [normal[i] for i in asked]))
        now = set(self.refused).difference(asked).union(i for i, r in zip(asked, refused, strict=True) if r)
        self.refused = sorted(now)
        self.mined.append({"step": self.step, "pool": pool, "asked": len(asked), "refused": int(sum(refused)),
                           "held": len(self.refused)})


def with_refused(indices: list[int], refused: Sequence[int], share: float, rng: random.Random) -> list[int]:
    """A normal batch's rows with ``share`` of them (rounded, at least one) replaced by rows drawn from ``refused``
    (the mined over-refusals); unchanged while there are none."""
    if not refused:
        return indices
    k = min(len(indices), max(1, round(share * len(indices))))
    return [rng.choice(refused) for _ in range(k)] + indices[k:]


@dataclass
class _Trainer:
    """What a step changes besides :class:`_Progress`: saved and restored together with it."""

    model: nn.Module
    optimizer: Any
    scheduler: Any
    accelerator: Accelerator
    rng: random.Random
    streams: dict[str, _Stream]

    def state(self) -> dict[str, Any]:
        """For a checkpoint, beside :meth:`_Progress.state`."""
        acc = self.accelerator
        return {"trainable": trainable_parameters(acc.unwrap_model(self.model)),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": acc.scaler.state_dict() if acc.scaler is not None else None,
                "accumulation_step": acc.step, "rng": checkpoint.rng_states(),
                "stream_rng": self.rng.getstate(), "stream_order": {n: s.order for n, s in self.streams.items()}}

    def restore(self, state: dict[str, Any]) -> None:
        """Put the weights, optimizer, scheduler, RNGs and data order back where :meth:`state` found them."""
        acc = self.accelerator
        load_parameters(acc.unwrap_model(self.model), state["trainable"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if acc.scaler is not None and state["scaler"] is not None:
            acc.scaler.load_state_dict(state["scaler"])
        acc.step = state["accumulation_step"]  # where gradient accumulation stands
        checkpoint.set_rng_states(state["rng"])
        self.rng.setstate(state["stream_rng"])
        for name, stream in self.streams.items():
            stream.order = list(state["stream_order"][name])


def unlearn(
    model: nn.Module,
    tokenizer,
    method: UnlearningMethod,
    *,
    forget: Sequence[Dialogue],
    normal: Sequence[Dialogue],
    expected: Sequence[Dialogue] = (),
    refusals: Sequence[str] = (),
    lookalikes: Sequence[Dialogue] = (),
    reserve: Sequence[Dialogue] = (),
    recipe_refusals: Mapping[str, str] | None = None,
    unseen_views: Mapping[str, Dialogue] | None = None,
    unseen_model: ModelConfig | None = None,
    train_cfg: TrainConfig,
    data_cfg: DataConfig,
    reference: Reference,
    monitor: Monitor | None = None,
    miner: Miner | None = None,
    initial_check: Check | None = None,
    accelerator: Accelerator | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
) -> TrainResult:
    """Run ``method`` on ``model`` in place; on return the model holds the best checkpoint's weights.

    With ``checkpoint_dir``, a checkpoint is written there every ``train.checkpoint_every`` steps; with ``resume``
    training continues from the one found there (from the start if there is none), bit for bit as if never stopped.
    With ``miner`` and ``train.mine_refusals`` the normal batches favour the normal prompts the model refuses
    (:attr:`TrainConfig.mine_refusals`); with ``reserve`` (benign dialogues outside ``normal``) mining asks those
    instead, and a reserve row joins the normal batches only once it is found refused.
    """
    if not forget:
        raise ValueError("nothing to unlearn: the forget set is empty (did the judge flag any dialogue?)")
    if "normal" in method.streams and not normal:
        raise ValueError(f"method {method.name!r} needs normal dialogues, and none were given")
    check_normal_boost(method, train_cfg)
    accelerator = accelerator or distributed.accelerator(
        gradient_accumulation_steps=train_cfg.gradient_accumulation_steps, mixed_precision=train_cfg.mixed_precision
    )
    set_seed(train_cfg.seed)
    rng = random.Random(train_cfg.seed + accelerator.process_index)  # each process sees its own order
    device = accelerator.device
    start_time = time.perf_counter()

    ctx = PrepareContext(
        forget=forget, normal=normal, expected=expected, reference=reference.to(device), tokenizer=tokenizer,
        max_prompt_tokens=data_cfg.max_prompt_tokens, max_response_tokens=data_cfg.max_response_tokens,
        batch_size=train_cfg.batch_size * 4, seed=train_cfg.seed, device=device, refusals=refusals,
        lookalikes=lookalikes, recipe_refusals=recipe_refusals or {}, unseen_views=unseen_views or {},
        unseen_model=unseen_model,
    )
    # The original's passes before training: in the model's own precision, or under the steps' autocast
    # (train.reference_precision: train). On one scan the harm default missed the same targets with either (runs
    # demo52 and RF0, README): the precision moves the run as much as any rounding change does, no more.
    ref_cast = _PRECISIONS.get(distributed.resolve_precision(train_cfg.mixed_precision))
    ref_cast = ref_cast if train_cfg.reference_precision == "train" else None
    with reference.autocast(ref_cast):
        prepared = method.prepare(ctx)
    tokens = {"forget": ctx.tokenize(forget)}
    mining = miner is not None and train_cfg.mine_refusals > 0 and "normal" in method.streams
    normal_rows = [*normal, *reserve] if mining else list(normal)  # reserve rows: after the normal ones
    if "normal" in method.streams:
        tokens["normal"] = ctx.tokenize(normal_rows)
    for name, rows in prepared.pairs.items():
        tokens[name] = ctx.tokenize(rows)
    normal_cache: dict[str, torch.Tensor] = {}
    if train_cfg.kl_top_k and "normal" in tokens and method.reads_normal_kl():  # the original's outputs, once
        with reference.autocast(ref_cast):
            normal_cache = reference_top_k(ctx, tokens["normal"], train_cfg.kl_top_k)
    streams = {"forget": _Stream(len(forget), train_cfg.batch_size, rng)}
    if "normal" in tokens:
        streams["normal"] = _Stream(len(normal), train_cfg.batch_size, rng)
    # what mining asks: the reserve rows when there are any, else the normal ones
    pool, mined_from = ("reserve", range(len(normal), len(normal_rows))) if reserve else ("normal", range(len(normal)))
    if mining:
        streams["mine"] = _Stream(len(mined_from), train_cfg.mine_refusals, rng)

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=train_cfg.learning_rate, weight_decay=train_cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(lr_factor, cfg=train_cfg))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    trainer = _Trainer(model, optimizer, scheduler, accelerator, rng, streams)
    weights = lambda: trainable_parameters(accelerator.unwrap_model(model))  # noqa: E731
    best = initial_check or Check(step=0, flagged_rate=math.inf, normal_kl=0.0)
    progress = _Progress(best=best, best_state=weights(), checks=[best] if initial_check else [])
    saved = checkpoint.load(checkpoint_dir) if resume and checkpoint_dir is not None else None
    if saved is not None:  # everything above is deterministic; from here on the checkpoint says where we are
        trainer.restore(checkpoint.for_process(saved, accelerator.process_index, accelerator.num_processes))
        progress = _Progress.from_state(saved)
    model.train()

    def to_batch(rows: list[TokenizedDialogue]) -> dict[str, torch.Tensor]:
        # Left padding: every response ends at the last column, so a step computes logits for a short window.
        return {k: v.to(device) for k, v in collate(rows, tokenizer.pad_token_id, padding_side="left").items()}

    stop_reason = "max_steps"
    bar = tqdm(range(progress.step + 1, train_cfg.max_steps + 1), desc=f"unlearn[{method.name}]", leave=False,
               initial=progress.step, total=train_cfg.max_steps, disable=not accelerator.is_local_main_process)
    # Compiled blocks for the steps only (train.compile): the checks and mining generate with the eager blocks
    compiled = CompiledBlocks(accelerator.unwrap_model(model)) if train_cfg.compile else None
    steps_compiled = compiled.active if compiled is not None else contextlib.nullcontext
    for step in bar:
        with accelerator.accumulate(model):
            idx = streams["forget"].next_indices()
            batch: dict[str, Any] = {name: to_batch([tokens[name][i] for i in idx])
                                     for name in ["forget", *prepared.pairs]}
            batch.update({name: t[idx].to(device) for name, t in prepared.tensors.items()})
            batch["progress"] = step / train_cfg.max_steps  # for methods whose weights follow a schedule
            if progress.boosted:
                batch["normal_scale"] = progress.normal_scale(train_cfg)
            if "normal" in streams:
                n_idx = with_refused(streams["normal"].next_indices(), progress.refused, train_cfg.mine_share, rng)
                batch["normal"] = to_batch([tokens["normal"][i] for i in n_idx])
                batch["normal"].update({k: t[n_idx].to(device) for k, t in normal_cache.items()})
            with _grid(model, step, train_cfg), steps_compiled():  # backward too: checkpointing recomputes
                out = method.step(model, reference, batch)
                record = logged(out)
                progress.history.append({"step": step, **record})
                if problem := non_finite(record):  # before backward: a NaN gradient would reach the weights
                    raise diverged(step, problem, progress, train_cfg, checkpoint_dir)
                accelerator.backward(out.loss)
            if accelerator.sync_gradients:
                if problem := non_finite(record, _grad_norm(accelerator, params, train_cfg)):
                    raise diverged(step, problem, progress, train_cfg, checkpoint_dir)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        progress.step = step
        bar.set_postfix(loss=f"{out.loss.item():.3f}")
        last = step == train_cfg.max_steps
        checked = train_cfg.eval_every and step % train_cfg.eval_every == 0 and step >= train_cfg.first_check
        if monitor is not None and (last or checked):
            # Every process runs the check (its generation is shared out); the main process's result decides for all.
            check = distributed.from_main(monitor(accelerator.unwrap_model(model), step))
            reason = progress.record(check, weights, train_cfg)
            if reason:
                stop_reason = reason
                break
        if mining and not last and checked:  # at every check but the last
            asked = [mined_from[i] for i in streams["mine"].next_indices()]
            progress.mine(miner, accelerator.unwrap_model(model), normal_rows, asked, pool)
        # A checkpoint holds whole optimizer steps (no half-accumulated gradients) and is pointless at the end.
        every = train_cfg.checkpoint_every
        if checkpoint_dir is not None and every and step % every == 0 and not last and accelerator.sync_gradients:
            seconds = progress.seconds + time.perf_counter() - start_time
            state = checkpoint.with_every_process({**trainer.state(), **progress.state(), "seconds": seconds})
            distributed.on_main(partial(checkpoint.save, checkpoint_dir, state))
            progress.saved_step = step
    # The mixed-precision wrapper goes too: what is evaluated and saved after training is the model a user loads.
    model = accelerator.unwrap_model(model, keep_fp32_wrapper=False)
    if monitor is not None:  # restore the best checkpoint (the original if nothing beat it)
        load_parameters(model, progress.best_state)
    model.eval()
    return TrainResult(
        steps=progress.step, best_step=progress.best.step if monitor is not None else progress.step,
        stop_reason=stop_reason, seconds=progress.seconds + time.perf_counter() - start_time,
        history=progress.history, checks=progress.checks, prepare_info=prepared.info,
        resumed_from=progress.resumed_from, mined=progress.mined, boosted=progress.boosted,
    )
