"""Forgetting losses on the forget answers' likelihood or next-token distribution, each with a retain term:
GradDiff (TOFU), SimNPO, maximum-entropy forgetting (ME+GD) and self-distillation with adjusted logits (UNDIAL).

Each reads the ``forget`` and ``normal`` streams in one forward pass. The retain term is the published one,
token cross-entropy on the normal answers (``retain_loss: nll``), or KL to the original (``kl``), the term the
package's own method and NPO use.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from torch import nn

from unlearnlm import losses
from unlearnlm.methods.base import (
    Adjust,
    PreparedData,
    PrepareContext,
    StepOutput,
    forward_many,
    reference_top_k,
    register,
    require_non_negative,
    require_positive,
)
from unlearnlm.methods.baselines import RetainLoss, RetainTermMethod, retain_loss, teacher_kl
from unlearnlm.models import Reference

def _forget_and_retain(model: nn.Module, reference: Reference, batch: dict[str, Any], kind: str, alpha: float):
    """One pass over the forget batch (and the normal batch when its weight is not 0): (forget Outputs, retain term)."""
    streams = ("forget", "normal") if alpha else ("forget",)
    out = forward_many(model, {name: batch[name] for name in streams})
    forget = out["forget"]
    retain = retain_loss(kind, out["normal"], reference, batch["normal"]) if alpha else forget.logits.new_zeros(())
    return forget, retain


@dataclass
class GradDiffOptions:
    """Weights of open-unlearning's GradDiff (``configs/trainer/GradDiff.yaml``: gamma 1, alpha 1, retain NLL)."""

    gamma: float = 1.0
    """Weight of gradient ascent on the forget answers."""
    alpha: float = 1.0
    """Weight of the retain term on normal dialogues."""
    retain_loss: RetainLoss = "nll"
    """``nll`` (published: gradient descent on the retain set) or ``kl`` (to the original)."""

    def __post_init__(self) -> None:
        require_non_negative(gamma=self.gamma, alpha=self.alpha)


@register
class GradDiff(RetainTermMethod):
    """Gradient difference: ascent on the forget answers, descent on the retain set (TOFU, arXiv 2401.06121).

    Maini, Feng, Schwarzschild, Lipton & Kolter, "TOFU: A Task of Fictitious Unlearning for LLMs" (2024), the
    "gradient difference" baseline: loss = γ · (-NLL(y_bad | x)) + α · retain, with retain = NLL on normal answers.
    """

    name = "grad_diff"
    Options = GradDiffOptions

    def step(self, model: nn.Module, reference: Reference, batch: dict[str, Any]) -> StepOutput:
        o = self.options
        forget, retain = _forget_and_retain(model, reference, batch, o.retain_loss, o.alpha)
        ga = -losses.nll(forget.logits, forget.labels)
        loss = o.gamma * ga + o.alpha * retain
        return StepOutput(loss=loss, terms={"ga": ga.item(), "retain": retain.item()})


@dataclass
class SimNPOOptions:
    """SimNPO's TOFU forget05 setting (OPTML-Group/Unlearn-Simple, ``TOFU/config/forget.yaml`` and its README:
    beta 2.5, gamma 0, npo_coeff 0.1375, grad_diff_coeff 1; forget10 uses beta 4.5, npo_coeff 0.125)."""

    beta: float = 2.5
    """Inverse temperature (β): larger values saturate the loss sooner."""
    gamma: float = 0.0
    """Reward margin (γ) inside the sigmoid; 0 in the published TOFU runs."""
    w_forget: float = 0.1375
    """Weight of the SimNPO term (the code's ``npo_coeff``)."""
    alpha: float = 1.0
    """Weight of the retain term (the code's ``grad_diff_coeff``)."""
    retain_loss: RetainLoss = "nll"
    """``nll`` (published) or ``kl`` (to the original)."""

    def __post_init__(self) -> None:
        require_positive(beta=self.beta)
        require_non_negative(gamma=self.gamma, w_forget=self.w_forget, alpha=self.alpha)


@register
class SimNPO(RetainTermMethod):
    """SimNPO: reference-free, length-normalised NPO (Fan et al. 2024, arXiv 2410.07163).

    Fan, Liu, Lin, Jia, Zhang, Mei & Liu, "Simplicity Prevails: Rethinking Negative Preference Optimization for LLM
    Unlearning": loss = w_forget · -(2/β) log σ(-(β/|y|) log π_θ(y_bad|x) - γ) + α · retain. Dropping the reference
    model removes NPO's bias toward forget answers the original already found unlikely. The margin γ stands outside
    β as in the paper's equation; the official code multiplies it by β (identical at the default γ = 0).
    """

    name = "simnpo"
    Options = SimNPOOptions

    def step(self, model: nn.Module, reference: Reference, batch: dict[str, Any]) -> StepOutput:
        o = self.options
        forget, retain = _forget_and_retain(model, reference, batch, o.retain_loss, o.alpha)
        simnpo = losses.simnpo(forget.logits, forget.labels, o.beta, o.gamma)
        loss = o.w_forget * simnpo + o.alpha * retain
        return StepOutput(loss=loss, terms={"simnpo": simnpo.item(), "retain": retain.item()})


@dataclass
class MaxEntropyOptions:
    """ME+GD's published weights (sail-sg/closer-look-LLM-unlearning, ``config/tofu.yaml`` and
    ``scripts/tofu/me_gd.sh``: forget_coeff 0.1, regularization_coeff 1)."""

    w_forget: float = 0.1
    """Weight of the maximum-entropy term (the code's ``forget_coeff``)."""
    alpha: float = 1.0
    """Weight of the retain term (the code's ``regularization_coeff``)."""
    retain_loss: RetainLoss = "nll"
    """``nll`` (published: GD, gradient descent on the retain set) or ``kl`` (to the original)."""

    def __post_init__(self) -> None:
        require_non_negative(w_forget=self.w_forget, alpha=self.alpha)


@register
class MaxEntropy(RetainTermMethod):
    """ME+GD: maximise next-token entropy on forget answers, NLL on retain (Yuan et al. 2024, arXiv 2410.08109).

    Yuan, Pang, Du, Chen, Zhang & Lin, "A Closer Look at Machine Unlearning for Large Language Models", their
    objective for untargeted unlearning: loss = w_forget · mean_t KL(p_θ(·|x, y_<t) || uniform) + α · retain. The
    forget answers end up where a model that never learnt them would be, uncertain, rather than pushed toward
    whatever gradient ascent happens to find. Read from the paper's statement (KL of the model's distribution to
    the uniform one, i.e. log V - entropy); the authors' code calls ``F.kl_div(log p, uniform)``, which is
    KL(uniform || p), a different function with the same minimum. Applied to response tokens, as every method here
    (the authors' ME+GD runs also cover the question tokens).
    """

    name = "me_gd"
    Options = MaxEntropyOptions

    def step(self, model: nn.Module, reference: Reference, batch: dict[str, Any]) -> StepOutput:
        o = self.options
        forget, retain = _forget_and_retain(model, reference, batch, o.retain_loss, o.alpha)
        me = losses.uniform_kl(forget.logits, forget.labels)
        loss = o.w_forget * me + o.alpha * retain
        return StepOutput(loss=loss, terms={"me": me.item(), "retain": retain.item()})


@dataclass
class UndialOptions:
    """UNDIAL's settings (Dong et al. 2024; the authors' open-unlearning recipe, ``community/methods/UNDIAL``: no retain
    set in the paper, so alpha 0; beta searched over 3, 10 and 30, of which the middle one is the default here)."""

    beta: float = 10.0
    """Strength of the adjustment: nats taken off the logit of each forget answer's next token in the teacher."""
    alpha: float = 0.0
    """Weight of the retain term on normal dialogues (0, as published: the paper trains on the forget set only)."""
    retain_loss: RetainLoss = "nll"
    """``nll`` (open-unlearning's retain term when alpha > 0) or ``kl`` (to the original)."""
    top_k: int = 256
    """The teacher as its top-k log-probabilities on each forget row, computed once before training, the rest of its
    mass lumped (:func:`~unlearnlm.losses.forward_kl_topk`, as ``train.kl_top_k`` does for the normal rows); 0: the
    exact teacher, from a pass of the original over every forget batch."""

    def __post_init__(self) -> None:
        require_positive(beta=self.beta)
        require_non_negative(alpha=self.alpha, top_k=self.top_k)


@register
class Undial(RetainTermMethod):
    """UNDIAL: self-distillation toward the original with the forget tokens' logits lowered (arXiv 2402.10052).

    Dong, Lin, Belkin, Huerta & Vulić, "UNDIAL: Self-Distillation with Adjusted Logits for Robust Unlearning in Large
    Language Models" (NAACL 2025): on each forget answer, the teacher is the original's next-token distribution with
    ``beta`` subtracted from the logit of the token the answer has next (:func:`~unlearnlm.losses.adjusted_logits`),
    and the model is trained toward it with cross-entropy, here as KL(teacher || model), which has the same gradient.
    loss = KL(softmax(z_orig - β·e_y) || p_θ) + α · retain. The target is fixed and bounded, so the loss cannot run
    away as gradient ascent's does; the authors report steadier training across learning rates than GA or NPO.
    """

    name = "undial"
    Options = UndialOptions

    def _teacher(self) -> Adjust:
        """The original's logits -> the teacher's (:func:`~unlearnlm.losses.adjusted_logits` at ``beta``)."""
        return partial(losses.adjusted_logits, beta=self.options.beta)

    def prepare(self, ctx: PrepareContext) -> PreparedData:
        """With ``top_k``: the teacher's top-k on every forget row, once (a pass of the original per step saved)."""
        if not self.options.top_k:
            return PreparedData()
        top = reference_top_k(ctx, ctx.tokenize(ctx.forget), self.options.top_k, adjust=self._teacher())
        return PreparedData(tensors={"teacher_logp": top["ref_logp"], "teacher_index": top["ref_index"]})

    def step(self, model: nn.Module, reference: Reference, batch: dict[str, Any]) -> StepOutput:
        o = self.options
        forget, retain = _forget_and_retain(model, reference, batch, o.retain_loss, o.alpha)
        cached = (batch["teacher_logp"], batch["teacher_index"]) if "teacher_logp" in batch else None
        distill = teacher_kl(forget, reference, batch["forget"], cached, adjust=self._teacher())
        loss = distill + o.alpha * retain
        return StepOutput(loss=loss, terms={"undial": distill.item(), "retain": retain.item()})
