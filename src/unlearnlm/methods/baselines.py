"""Baselines in the same registry as the paper's method: gradient ascent, Yao et al., NPO."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from unlearnlm import losses
from unlearnlm.methods.base import (
    Adjust,
    Outputs,
    PreparedData,
    PrepareContext,
    StepOutput,
    UnlearningMethod,
    forward,
    forward_many,
    reference_forward,
    reference_sequence_logprobs,
    register,
    response_window,
)
from unlearnlm.models import Reference


def normal_kl(policy: Outputs, reference: Reference, normal: dict[str, Any], ref: Outputs | None = None,
              first: int = 0) -> Any:
    """Forward KL(original || model) on a normal batch: the shared utility-keeping term (``first`` > 0: on each
    row's first ``first`` response tokens only).

    ``policy`` is the model's pass over the batch (alone or stacked with other streams). When the loop cached the
    original's top-k log-probabilities for the normal rows (``train.kl_top_k``), no reference pass is run; nor when
    the caller passes ``ref``, the original's pass over this batch that it ran already.
    """
    cached = (normal["ref_logp"], normal["ref_index"]) if "ref_logp" in normal else None
    return teacher_kl(policy, reference, normal, cached, ref=ref, first=first)


def teacher_kl(policy: Outputs, reference: Reference, stream: dict[str, Any], cached: tuple[Any, Any] | None = None,
               ref: Outputs | None = None, adjust: Adjust | None = None, first: int = 0) -> Any:
    """Forward KL(teacher || model) over a stream's response tokens, the teacher being the original's next-token
    distribution, or ``adjust(logits, labels)`` of its logits (UNDIAL's adjusted teacher).

    ``cached``: the teacher's top-k log-probabilities and token ids per row, right-aligned (N, W, k) as
    :func:`~unlearnlm.methods.base.reference_top_k` computes them once before training (with the same ``adjust``); no
    reference pass is run then. Otherwise ``ref``, the original's pass over this batch when the caller ran it already,
    or a new one.
    """
    if cached is not None:
        k = response_window(stream["labels"])
        p = policy.last(k)
        logp, index = cached
        return losses.forward_kl_topk(p.logits, logp[:, -k:], index[:, -k:], p.labels, first=first)
    ref = ref if ref is not None else reference_forward(reference, stream)  # (B, K, V)
    teacher = ref.logits if adjust is None else adjust(ref.logits, ref.labels)
    return losses.forward_kl(policy.last(ref.labels.shape[1]).logits, teacher, ref.labels, first=first)


RetainLoss = Literal["nll", "kl"]


def retain_loss(kind: str, policy: Outputs, reference: Reference, normal: dict[str, Any]) -> Any:
    """The retain (normal-data) term many baselines add: ``nll``, token cross-entropy to the normal answers (TOFU's
    "gradient descent" on the retain set), or ``kl``, :func:`normal_kl` to the original."""
    if kind == "nll":
        return losses.nll(policy.logits, policy.labels)
    return normal_kl(policy, reference, normal)


class RetainTermMethod(UnlearningMethod):
    """A method whose normal-data term is ``alpha · retain_loss(options.retain_loss)``: its options have ``alpha``
    and ``retain_loss``, and it reads the KL to the original only when that term is the KL."""

    streams = ("forget", "normal")

    def reads_normal_kl(self) -> bool:
        return self.options.alpha > 0 and self.options.retain_loss == "kl"


@dataclass
class GradientAscentOptions:
    """Plain gradient ascent has no options."""


@register
class GradientAscent(UnlearningMethod):
    """Gradient ascent on the forget answers: minimise -NLL(y_bad | x).

    The simplest unlearning baseline (e.g. Jang et al., arXiv 2210.01504). Unbounded: the loss falls
    without limit, which is why it wrecks fluency when run long.
    """

    name = "gradient_ascent"
    Options = GradientAscentOptions
    streams = ("forget",)

    def step(self, model: nn.Module, reference: Reference, batch: dict[str, Any]) -> StepOutput:
        out = forward(model, batch["forget"])
        ascent = -losses.nll(out.logits, out.labels)
        return StepOutput(loss=ascent, terms={"ga": ascent.item()})


@dataclass
class YaoOptions:
    """Weights from Yao et al. (arXiv 2310.10683), Section 3: ε1 = 0.5, ε2 = 1, ε3 = 1."""

    w_ga: float = 0.5
    """Gradient ascent on harmful answers."""
    w_mismatch: float = 1.0
    """Cross-entropy to random normal answers given the harmful prompts ("random mismatch")."""
    w_kl: float = 1.0
    """Forward KL to the original on normal dialogues."""


@register
class YaoGAMismatchKL(UnlearningMethod):
    """Yao et al., "Large Language Model Unlearning" (arXiv 2310.10683).

    loss = w_ga · (-NLL(y_bad | x)) + w_mismatch · NLL(y_random | x) + w_kl · KL(p_orig || p_θ) on normal.
    """

    name = "yao"
    Options = YaoOptions
    streams = ("forget", "normal")

    def reads_normal_kl(self) -> bool:
        return self.options.w_kl > 0

    def prepare(self, ctx: PrepareContext) -> PreparedData:
        rng = random.Random(ctx.seed)
        answers = [d.response for d in ctx.normal]
        mismatch = [f.with_response(rng.choice(answers)) for f in ctx.forget]
        return PreparedData(pairs={"mismatch": mismatch})

    def step(self, model: nn.Module, reference: Reference, batch: dict[str, Any]) -> StepOutput:
        o = self.options
        out = forward_many(model, {name: batch[name] for name in ("forget", "mismatch", "normal")})
        ga = -losses.nll(out["forget"].logits, out["forget"].labels)
        mismatch = losses.nll(out["mismatch"].logits, out["mismatch"].labels)
        kl = normal_kl(out["normal"], reference, batch["normal"])
        loss = o.w_ga * ga + o.w_mismatch * mismatch + o.w_kl * kl
        return StepOutput(loss=loss, terms={"ga": ga.item(), "mismatch": mismatch.item(), "kl": kl.item()})


@dataclass
class NPOOptions:
    """Options of NPO with a retain term (Zhang et al., arXiv 2404.05868)."""

    beta: float = 0.1
    """Inverse temperature of the preference loss."""
    w_kl: float = 1.0
    """Forward KL to the original on normal dialogues (0: plain NPO)."""


@register
class NPO(UnlearningMethod):
    """Negative Preference Optimization (Zhang et al., arXiv 2404.05868) plus normal-data KL.

    loss = -(2/β) log σ(-β log(π_θ(y_bad|x) / π_orig(y_bad|x))) + w_kl · KL(p_orig || p_θ).
    """

    name = "npo"
    Options = NPOOptions
    streams = ("forget", "normal")

    def reads_normal_kl(self) -> bool:
        return self.options.w_kl > 0

    def prepare(self, ctx: PrepareContext) -> PreparedData:
        """The original's log-probability of each forget answer, once: one number per row replaces a reference
        forward pass over the forget batch at every step."""
        return PreparedData(tensors={"ref_seq_logp": reference_sequence_logprobs(ctx, ctx.forget)})  # (N_f,)

    def step(self, model: nn.Module, reference: Reference, batch: dict[str, Any]) -> StepOutput:
        streams = ("forget", "normal") if self.options.w_kl else ("forget",)
        out = forward_many(model, {name: batch[name] for name in streams})
        policy = out["forget"]
        npo = losses.npo(losses.sequence_logprob(policy.logits, policy.labels), batch["ref_seq_logp"],
                         self.options.beta)
        kl = normal_kl(out["normal"], reference, batch["normal"]) if self.options.w_kl else policy.logits.new_zeros(())
        loss = npo + self.options.w_kl * kl
        return StepOutput(loss=loss, terms={"npo": npo.item(), "kl": kl.item()})
