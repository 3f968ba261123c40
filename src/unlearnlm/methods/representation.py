"""Unlearning in representation space: RMU and circuit breakers (representation rerouting).

Both read hidden states at chosen layers, indexed as in Hugging Face's ``hidden_states`` (0: the embeddings, i: the
output of decoder layer i - 1, -1: the last, after the final norm), over the positions that produce response
tokens, the package's convention for every loss. (The published methods read every token of their forget and
retain texts.) Only parameters below the chosen layers receive gradients; the original's states on normal data
come from one reference pass per step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
    reference_windows,
    register,
    require_non_negative,
    require_positive,
    response_window,
)
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

    def __post_init__(self) -> None:
        require_positive(steering_coeff=self.steering_coeff)
        require_non_negative(alpha=self.alpha)


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

    def prepare(self, ctx: PrepareContext) -> PreparedData:
        check_layers(ctx.reference, self.options.layer, "method.options.layer")
        generator = torch.Generator().manual_seed(ctx.seed)
        u = torch.rand(ctx.reference.config.hidden_size, generator=generator)  # (H,)
        control = self.options.steering_coeff * u / u.norm()  # (H,)
        return PreparedData(tensors={"control": control.expand(len(ctx.forget), -1)})  # (N_f, H), one row each

    def step(self, model: nn.Module, reference: Reference, batch: dict[str, Any]) -> StepOutput:
        o = self.options
        out = forward_many(model, {name: batch[name] for name in ("forget", "normal")}, o.layer)
        forget = out["forget"]
        steer = losses.state_mse(forget.hidden, batch["control"][:, None, :], forget.labels)  # (B, K, H) vs (B, 1, H)
        ref = reference_forward(reference, batch["normal"], o.layer)  # (B, K', H)
        retain = losses.state_mse(out["normal"].last(ref.labels.shape[1]).hidden, ref.hidden, ref.labels)
        loss = steer + o.alpha * retain
        return StepOutput(loss=loss, terms={"steer": steer.item(), "retain": retain.item()})


def rerouting_schedule(progress: float, alpha: float) -> tuple[float, float]:
    """Circuit breakers' weights at progress t/T: (c_rr, c_retain) = (α(1 - t/2T), α·t/2T), rerouting first and
    retaining more as training goes. Example: α = 10 at the end (t = T) gives (5, 5); a third of the way in,
    (25/3, 5/3)."""
    return alpha * (1.0 - progress / 2.0), alpha * progress / 2.0


@dataclass
class CircuitBreakersOptions:
    """Circuit breakers' Llama-3-8B setting (Zou et al., arXiv 2406.04313, Section 4 / Appendix: rerouting at layers
    10 and 20, α = 10; α = 5 for Mistral-7B)."""

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
    Note that the model starts at the rerouting term's maximum (cos = 1), where its gradient is 0: training leaves it
    through the retain term's and numerical noise, which Adam amplifies, as in the published LoRA runs.
    """

    name = "circuit_breakers"
    Options = CircuitBreakersOptions
    streams = ("forget", "normal")

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
