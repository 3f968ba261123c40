"""Forgetting losses on the forget answers' likelihood or next-token distribution, each with a retain term:
GradDiff (TOFU), SimNPO, and maximum-entropy forgetting (ME+GD).

Each reads the ``forget`` and ``normal`` streams in one forward pass. The retain term is the published one,
token cross-entropy on the normal answers (``retain_loss: nll``), or KL to the original (``kl``), the term the
package's own method and NPO use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from unlearnlm import losses
from unlearnlm.methods.base import (
    StepOutput,
    forward_many,
    register,
    require_non_negative,
    require_positive,
)
from unlearnlm.methods.baselines import RetainLoss, RetainTermMethod, retain_loss
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
