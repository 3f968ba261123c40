"""Unlearning in representation space: RMU, circuit breakers (representation rerouting) and RepBend.

Each reads hidden states at chosen layers, indexed as in Hugging Face's ``hidden_states`` (0: the embeddings, i: the
output of decoder layer i - 1, -1: the last, after the final norm), over the positions that produce response
tokens, the package's convention for every loss (published RMU and circuit breakers read every token of their texts;
published RepBend reads response tokens too). RMU and circuit breakers read no logits, so only parameters below
their deepest layer receive gradients. Circuit breakers and RepBend compute the original's states on the forget rows
once, in ``prepare``; on normal rows they come from one reference pass per step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from unlearnlm import losses
from unlearnlm.errors import ConfigError
from unlearnlm.methods.base import (
    PreparedData,
    PrepareContext,
    StepOutput,
    UnlearningMethod,
    check_layers,
    forward_many,
    reference_forward,
    reference_map,
    reference_windows,
    register,
    require_non_negative,
    require_positive,
    response_window,
)
from unlearnlm.methods.baselines import normal_kl
from unlearnlm.methods.preference import refusal_targets
from unlearnlm.models import Reference


@dataclass
class RMUOptions:
    """RMU's published Zephyr-7B setting (Li et al., arXiv 2403.03218, and the WMDP repository's README: layer_id 7,
    steering coefficient 6.5, alpha 1200). Both numbers depend on the model's activation norms: retune them."""

    layer: int = 8
    """Hidden-state index steered (WMDP's ``layer_id`` 7, the output of decoder layer 7, is ``hidden_states[8]``)."""
    steering_coeff: float = 6.5
    """c: the norm of the target c·u the forget states are steered to."""
    alpha: float = 1200.0
    """Weight of the retain term (MSE to the original's states on normal dialogues)."""
    coeff_scale: float | None = None
    """None: c is ``steering_coeff``. A number s: c = s × the original's mean state norm at ``layer`` over the forget
    answers' positions (computed once before training; ``steering_coeff`` is then unused), so that the target's size
    follows the model's activations instead of Zephyr-7B's: the published c = 6.5 is 4% of the 135M model's layer-8
    norm on the hallucination task's forget answers (about 148), a target no run here approached. Adaptive RMU (Dang
    et al. 2024, arXiv 2408.06223) scales the coefficient by the frozen model's forget-state norm for the same
    reason; this option is our reading of that idea, not its published setting."""

    def __post_init__(self) -> None:
        require_positive(steering_coeff=self.steering_coeff)
        require_non_negative(alpha=self.alpha)
        if self.coeff_scale is not None:
            require_positive(coeff_scale=self.coeff_scale)


@register
class RMU(UnlearningMethod):
    """RMU: steer forget states to a random direction, keep normal states (Li et al. 2024, WMDP, arXiv 2403.03218).

    Li, Pan, Gopal, Yue et al., "The WMDP Benchmark: Measuring and Reducing Malicious Use With Unlearning"
    (Representation Misdirection for Unlearning): with h the hidden states at ``layer`` and u a fixed random unit
    vector (entries uniform in [0, 1), normalised, as in the WMDP code; seeded by ``train.seed``),
    loss = MSE(h_θ(forget), c·u) + α · MSE(h_θ(normal), h_orig(normal)). Scrambled states at a middle layer make the
    later layers produce noise for the flagged requests.
    """

    name = "rmu"
    Options = RMUOptions
    streams = ("forget", "normal")

    def reads_normal_kl(self) -> bool:
        return False  # its retain term compares hidden states

    def prepare(self, ctx: PrepareContext) -> PreparedData:
        check_layers(ctx.reference, self.options.layer, "method.options.layer")
        generator = torch.Generator().manual_seed(ctx.seed)
        u = torch.rand(ctx.reference.config.hidden_size, generator=generator)  # (H,)
        c, info = self.options.steering_coeff, {}
        if self.options.coeff_scale is not None:
            norm = mean_state_norm(ctx, ctx.forget, self.options.layer)
            c = self.options.coeff_scale * norm
            info = {"forget_state_norm": norm, "steering_coeff": c}
        control = c * u / u.norm()  # (H,)
        return PreparedData(tensors={"control": control.expand(len(ctx.forget), -1)}, info=info)  # (N_f, H)

    def step(self, model: nn.Module, reference: Reference, batch: dict[str, Any]) -> StepOutput:
        o = self.options
        out = forward_many(model, {name: batch[name] for name in ("forget", "normal")}, o.layer)
        forget = out["forget"]
        steer = losses.state_mse(forget.hidden, batch["control"][:, None, :], forget.labels)  # (B, K, H) vs (B, 1, H)
        ref = reference_forward(reference, batch["normal"], o.layer)  # (B, K', H)
        retain = losses.state_mse(out["normal"].last(ref.labels.shape[1]).hidden, ref.hidden, ref.labels)
        loss = steer + o.alpha * retain
        return StepOutput(loss=loss, terms={"steer": steer.item(), "retain": retain.item()})


def mean_state_norm(ctx: PrepareContext, rows, layer: int) -> float:
    """The original's hidden-state norm at ``layer``, averaged over every position that produces a response token of
    ``rows`` (the positions RMU's losses read)."""
    def norms(out) -> torch.Tensor:
        mask = losses.state_mask(out.labels, torch.float32)[0].bool()  # (k,)
        return out.hidden[0].float()[mask].norm(dim=-1).cpu()  # (n_i,)

    return torch.cat(reference_map(ctx, ctx.tokenize(rows), norms, layer, logits=False)).mean().item()


def rerouting_schedule(progress: float, alpha: float) -> tuple[float, float]:
    """Circuit breakers' weights at progress t/T: (c_rr, c_retain) = (α(1 - t/2T), α·t/2T), rerouting first and
    retaining more as training goes. Example: α = 10 at the end (t = T) gives (5, 5); a third of the way in,
    (25/3, 5/3)."""
    return alpha * (1.0 - progress / 2.0), alpha * progress / 2.0


@dataclass
class CircuitBreakersOptions:
    """Circuit breakers' Llama-3-8B setting (Zou et al., arXiv 2406.04313, experimental setup, and the authors'
    Llama-3-8B script: ``--target_layers 10,20 --lorra_alpha 10``, 150 steps; α = 5 for Mistral-7B)."""

    layers: list[int] = field(default_factory=lambda: [10, 20])
    """Hidden-state indices rerouted and retained (``hidden_states[i]``, as the published code reads them)."""
    alpha: float = 10.0
    """α of the schedule c_rr = α(1 - t/2T), c_retain = α·t/2T."""

    def __post_init__(self) -> None:
        if not self.layers:
            raise ConfigError("method.options.layers: give at least one hidden-state index, e.g. [10, 20]")
        require_positive(alpha=self.alpha)


@register
class CircuitBreakers(UnlearningMethod):
    """Circuit breakers: reroute harmful states, keep the rest (Zou et al. 2024, arXiv 2406.04313).

    Zou, Phan, Wang, Duenas, Lin, Andriushchenko, Wang, Kolter, Fredrikson & Hendrycks, "Improving Alignment and
    Robustness with Circuit Breakers", Representation Rerouting: loss = c_rr · mean ReLU(cos(h_θ, h_orig)) on forget
    (harmful) responses + c_retain · mean ||h_θ - h_orig||₂ on normal responses, at ``layers``, with the schedule of
    :func:`rerouting_schedule` driven by the loop's ``progress``. The published code reads the retain states at every
    layer; here both terms read ``layers``. The original's forget states are computed once, in :meth:`prepare`.
    The model starts where both terms have zero gradient (cos = 1 is the rerouting term's maximum, distance 0 the
    retain term's minimum): training leaves it through numerical noise, which Adam's normalised steps amplify, as in
    the published LoRA runs.
    """

    name = "circuit_breakers"
    Options = CircuitBreakersOptions
    streams = ("forget", "normal")

    def reads_normal_kl(self) -> bool:
        return False  # its retain term compares hidden states

    def prepare(self, ctx: PrepareContext) -> PreparedData:
        check_layers(ctx.reference, self.options.layers, "method.options.layers")
        return PreparedData(tensors={"ref_hidden": reference_windows(ctx, ctx.forget, tuple(self.options.layers))})

    def step(self, model: nn.Module, reference: Reference, batch: dict[str, Any]) -> StepOutput:
        layers = tuple(self.options.layers)
        c_rr, c_retain = rerouting_schedule(batch["progress"], self.options.alpha)
        out = forward_many(model, {name: batch[name] for name in ("forget", "normal")}, layers)
        forget = out["forget"].last(response_window(batch["forget"]["labels"]))  # hidden (B, K, L, H)
        rr = losses.rerouting(forget.hidden, batch["ref_hidden"][:, -forget.labels.shape[1] :], forget.labels)
        ref = reference_forward(reference, batch["normal"], layers)  # hidden (B, K', L, H)
        retain = losses.state_distance(out["normal"].last(ref.labels.shape[1]).hidden, ref.hidden, ref.labels)
        loss = c_rr * rr + c_retain * retain
        return StepOutput(loss=loss, terms={"rr": rr.item(), "retain": retain.item(), "c_rr": c_rr,
                                            "c_retain": c_retain})


@dataclass
class RepBendOptions:
    """RepBend's Llama-3-8B setting (Yousefpour et al., arXiv 2504.01550; AIM-Intelligence/RepBend ``train.sh``:
    alpha 0.5, beta 0.5, gamma 0.1, epsilon 0.3, target layers 20 to 30, safe term at every layer)."""

    layers: list[int] = field(default_factory=lambda: list(range(20, 31)))
    """Hidden-state indices bent away on flagged answers (``hidden_states[i]``; 20 to 30 of Llama-3-8B's 33)."""
    retain_layers: Literal["all", "target"] = "all"
    """Where safe states are kept: every hidden state (published, ``alpha_mode: all``) or only ``layers``."""
    alpha: float = 0.5
    """Weight of the safe term: L2 distance to the original's states on normal and refusal rows."""
    beta: float = 0.5
    """Weight of the unsafe term, subtracted: L2 distance to the original's states on flagged answers."""
    gamma: float = 0.1
    """Weight of the cosine term pulling the flagged prompts' last-token states together."""
    epsilon: float = 0.3
    """Weight of KL to the original on normal dialogues."""

    def __post_init__(self) -> None:
        if not self.layers:
            raise ConfigError("method.options.layers: give at least one hidden-state index, e.g. [20, 21, 22]")
        require_non_negative(alpha=self.alpha, beta=self.beta, gamma=self.gamma, epsilon=self.epsilon)


@register
class RepBend(UnlearningMethod):
    """RepBend: push flagged states away from the original's, keep safe ones (Yousefpour et al. 2025, arXiv 2504.01550).

    Yousefpour, Kim, Kwon, Lee, Jeung, Han, Wan, Ngan, Yu & Choi, "Representation Bending for Large Language Model
    Safety": loss = α · mean ||h_θ - h_orig|| (safe) - β · mean ||h_θ - h_orig|| (flagged answers, at ``layers``)
    + γ · mean_{i≠j} (1 - cos) of the flagged prompts' last-token states + ε · KL(p_orig || p_θ) on normal data.
    Safe rows are the normal dialogues and, when expected outputs are given, the flagged prompts answered with them
    (the published "unsafe request, safe response" rows). Read from the authors' code (``methods/rep_bending``, with
    ``eta`` 0 and ``loss_mode: response_all``); their KL is at temperature 2, this one at 1 (the package's normal KL).
    The unsafe term is unbounded, as published: the safe and KL terms hold the model together.
    """

    name = "repbend"
    Options = RepBendOptions
    streams = ("forget", "normal")

    def reads_normal_kl(self) -> bool:
        return self.options.epsilon > 0

    def prepare(self, ctx: PrepareContext) -> PreparedData:
        o = self.options
        check_layers(ctx.reference, o.layers, "method.options.layers")
        n = ctx.reference.config.num_hidden_layers + 1
        target = [i % n for i in o.layers]
        self._read = tuple(range(n)) if o.retain_layers == "all" else tuple(target)  # what each pass reads
        self._target_at = [self._read.index(i) for i in target]  # where ``layers`` sit among them
        pairs = {"refusal": refusal_targets(self.name, ctx.forget, ctx.expected)} if ctx.expected else {}
        return PreparedData(pairs=pairs, tensors={"ref_hidden": reference_windows(ctx, ctx.forget, tuple(target))})

    def step(self, model: nn.Module, reference: Reference, batch: dict[str, Any]) -> StepOutput:
        o = self.options
        safe_streams = ("normal", "refusal") if "refusal" in batch else ("normal",)
        out = forward_many(model, {name: batch[name] for name in ("forget", *safe_streams)}, self._read)
        forget = out["forget"].last(response_window(batch["forget"]["labels"]))
        bent = forget.hidden[:, :, self._target_at]  # (B, K, L, H)
        unsafe = losses.state_distance(bent, batch["ref_hidden"][:, -bent.shape[1] :], forget.labels)
        cosine = losses.pairwise_alignment(losses.first_response_states(bent, forget.labels))  # (B, L, H) in
        refs = {name: reference_forward(reference, batch[name], self._read) for name in safe_streams}
        safe = torch.stack([losses.state_distance(out[name].last(ref.labels.shape[1]).hidden, ref.hidden, ref.labels)
                            for name, ref in refs.items()]).mean()
        kl = normal_kl(out["normal"], reference, batch["normal"], ref=refs["normal"])
        loss = o.alpha * safe - o.beta * unsafe + o.gamma * cosine + o.epsilon * kl
        return StepOutput(loss=loss, terms={"safe": safe.item(), "unsafe": unsafe.item(), "cosine": cosine.item(),
                                            "kl": kl.item()})
