"""Targeted unlearning toward the expected outputs: refusal DPO (IdkDPO) and IDK with answer preservation (IDK+AP).

Both need expected outputs (preferable answers to the flagged prompts), paired with each forget prompt by prompt:
its own expected answer where it has one, else expected answer ``i mod E`` (see :func:`refusal_targets`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from unlearnlm import losses
from unlearnlm.data.records import Dialogue
from unlearnlm.errors import ConfigError
from unlearnlm.methods.base import (
    PreparedData,
    PrepareContext,
    StepOutput,
    UnlearningMethod,
    forward_many,
    reference_sequence_logprobs,
    register,
    require_non_negative,
    require_positive,
)
from unlearnlm.methods.baselines import RetainLoss, RetainTermMethod, normal_kl, retain_loss
from unlearnlm.methods.distance_cluster import contrast_rows
from unlearnlm.models import Reference


def refusal_targets(method: str, forget: Sequence[Dialogue], expected: Sequence[Dialogue]) -> list[Dialogue]:
    """One row per forget example: its prompt answered with its own expected output, or, for a prompt without one,
    with expected output ``i mod E``."""
    if not expected:
        raise ConfigError(f"{method} needs expected outputs (preferable answers to the flagged prompts): set "
                          "data.expected_outputs, or let the run make them (data.expected_recipe)")
    own = {d.prompt: d.response for d in expected}
    return [f.with_response(own.get(f.prompt) or expected[i % len(expected)].response, source="expected")
            for i, f in enumerate(forget)]


@dataclass
class RefusalDPOOptions:
    """open-unlearning's DPO setting, which its TOFU ``idk`` experiment runs as IdkDPO
    (``configs/trainer/DPO.yaml``: beta 0.1, gamma 1, alpha 1, retain NLL)."""

    beta: float = 0.1
    """Inverse temperature of the preference loss."""
    gamma: float = 1.0
    """Weight of the DPO term."""
    alpha: float = 1.0
    """Weight of the retain term on normal dialogues."""
    retain_loss: RetainLoss = "nll"
    """``nll`` (published) or ``kl`` (to the original)."""

    def __post_init__(self) -> None:
        require_positive(beta=self.beta)
        require_non_negative(gamma=self.gamma, alpha=self.alpha)


@register
class RefusalDPO(RetainTermMethod):
    """Refusal DPO (IdkDPO): prefer the expected output to the flagged answer (Rafailov et al. 2023, arXiv 2305.18290).

    DPO (Rafailov, Sharma, Mitchell, Ermon, Manning & Finn, "Direct Preference Optimization", 2023) with the
    expected output (a refusal) as the chosen answer y_w and the flagged answer as the rejected y_l, the reference
    being the original: TOFU's IdkDPO (Maini et al. 2024, arXiv 2401.06121, as open-unlearning runs it).
    loss = γ · -(2/β) log σ(β · [log π_θ/π_orig (y_w|x) - log π_θ/π_orig (y_l|x)]) + α · retain. The original's
    log-probabilities are computed once, in :meth:`prepare`.
    """

    name = "refusal_dpo"
    Options = RefusalDPOOptions

    def prepare(self, ctx: PrepareContext) -> PreparedData:
        refusals = refusal_targets(self.name, ctx.forget, ctx.expected)
        return PreparedData(pairs={"refusal": refusals}, tensors={
            "ref_refusal_logp": reference_sequence_logprobs(ctx, refusals),  # (N_f,)
            "ref_forget_logp": reference_sequence_logprobs(ctx, ctx.forget),  # (N_f,)
        })

    def step(self, model: nn.Module, reference: Reference, batch: dict[str, Any]) -> StepOutput:
        o = self.options
        streams = ("forget", "refusal", "normal") if o.alpha else ("forget", "refusal")
        out = forward_many(model, {name: batch[name] for name in streams})
        chosen = losses.sequence_logprob(out["refusal"].logits, out["refusal"].labels)  # (B,)
        rejected = losses.sequence_logprob(out["forget"].logits, out["forget"].labels)  # (B,)
        dpo = losses.dpo(chosen, rejected, batch["ref_refusal_logp"], batch["ref_forget_logp"], o.beta)
        retain = (retain_loss(o.retain_loss, out["normal"], reference, batch["normal"]) if o.alpha
                  else dpo.new_zeros(()))
        loss = o.gamma * dpo + o.alpha * retain
        return StepOutput(loss=loss, terms={"dpo": dpo.item(), "retain": retain.item()})


@dataclass
class IdkAPOptions:
    """IDK+AP's published setting (sail-sg/closer-look-LLM-unlearning, ``config/tofu.yaml`` and
    ``scripts/tofu/idk_ap.sh``: beta 0.1, forget_coeff 1, regularization_coeff 1)."""

    beta: float = 0.1
    """Inverse temperature of the answer-preservation loss."""
    w_forget: float = 1.0
    """Weight of the cross-entropy to the expected outputs (the code's ``forget_coeff``)."""
    alpha: float = 1.0
    """Weight of answer preservation on normal prompts (the code's ``regularization_coeff``)."""
    w_kl: float = 0.0
    """Weight of KL to the original on normal dialogues: not in the paper (0), available as in NPO."""

    def __post_init__(self) -> None:
        require_positive(beta=self.beta)
        require_non_negative(w_forget=self.w_forget, alpha=self.alpha, w_kl=self.w_kl)


@register
class IdkAP(UnlearningMethod):
    """IDK+AP: learn the expected outputs, keep normal answers above refusals (Yuan et al. 2024, arXiv 2410.08109).

    Yuan, Pang, Du, Chen, Zhang & Lin, "A Closer Look at Machine Unlearning for Large Language Models", their
    objective for targeted unlearning: cross-entropy to the expected answer ("I don't know" in the paper; here each
    prompt's expected output) plus answer preservation on retain prompts,
    AP = -(1/β) log σ(β · (log π_θ(y|x) - log π_θ(y_idk|x))) with y the normal answer and y_idk a refusal: training
    on refusals tends to make the model refuse everything, and AP names that failure. The refusal asked of a normal
    prompt is the opening sentence of an expected output (as ``distance_cluster``'s contrast rows).
    loss = w_forget · NLL(y_expected | x) + α · AP + w_kl · KL(p_orig || p_θ) on normal dialogues.
    """

    name = "idk_ap"
    Options = IdkAPOptions
    streams = ("forget", "normal")

    def reads_normal_kl(self) -> bool:
        return self.options.w_kl > 0

    def prepare(self, ctx: PrepareContext) -> PreparedData:
        refusals = refusal_targets(self.name, ctx.forget, ctx.expected)
        ap_refusal = contrast_rows(ctx.forget, ctx.normal, ctx.expected)  # normal prompts answered with a refusal
        answer_of = {d.prompt: d for d in ctx.normal}
        ap_answer = [answer_of[r.prompt] for r in ap_refusal]  # the same prompts with their normal answers
        return PreparedData(pairs={"refusal": refusals, "ap_answer": ap_answer, "ap_refusal": ap_refusal})

    def step(self, model: nn.Module, reference: Reference, batch: dict[str, Any]) -> StepOutput:
        o = self.options
        streams = ("refusal", "ap_answer", "ap_refusal", *(("normal",) if o.w_kl else ()))
        out = forward_many(model, {name: batch[name] for name in streams})
        idk = losses.nll(out["refusal"].logits, out["refusal"].labels)
        answer = losses.sequence_logprob(out["ap_answer"].logits, out["ap_answer"].labels)  # (B,)
        refused = losses.sequence_logprob(out["ap_refusal"].logits, out["ap_refusal"].labels)  # (B,)
        ap = losses.answer_preservation(answer, refused, o.beta)
        kl = normal_kl(out["normal"], reference, batch["normal"]) if o.w_kl else idk.new_zeros(())
        loss = o.w_forget * idk + o.alpha * ap + o.w_kl * kl
        return StepOutput(loss=loss, terms={"idk": idk.item(), "ap": ap.item(), "kl": kl.item()})
