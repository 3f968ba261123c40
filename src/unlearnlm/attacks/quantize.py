"""Simulated round-to-nearest (RTN) weight quantization: quantize, then dequantize back into float weights.

Why simulate: the question is whether the *values* a deployed low-bit model computes with bring forgotten
knowledge back (Zhang et al., 2024, "Catastrophic Failure of LLM Unlearning via Quantization", arXiv 2410.16454:
unlearning moves weights so little that they fall back into the original's quantization buckets). Rounding the
weights to the grid a low-bit format stores and computing in float gives those values on any CPU, with no kernel
library; it does not measure a real kernel's speed or its activation rounding.

The grid is symmetric absmax per group: a group of ``group_size`` consecutive weights of one output row (the whole
row when ``group_size`` is None: per output channel) shares one scale ``s = max|w| / qmax`` with
``qmax = 2**(bits-1) - 1`` (127 at 8 bits, 7 at 4 bits; the extra negative level is unused, so zero is exact and the
grid is symmetric). Each weight becomes ``s * clamp(round(w / s), -qmax, qmax)``, so it moves by at most ``s / 2``.
A last group shorter than ``group_size`` (a row length that is no multiple of it) gets its own scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from unlearnlm.config import check
from unlearnlm.grid import rtn_quantize, rtn_scale  # noqa: F401  (the grid lives with the training side too)

#: Group size of the default grid: the size most 4-bit checkpoints ship with (GPTQ's and AWQ's default).
DEFAULT_GROUP_SIZE = 128


@dataclass
class QuantizeOptions:
    """Settings of ``unlearnlm attack quantize``."""

    bits: list[int] = field(default_factory=lambda: [8, 4])
    """Bit widths to try, each on its own copy of the unlearned model (2 to 8)."""
    group_size: int | None = DEFAULT_GROUP_SIZE
    """Weights per scale along each output row; None (CLI: 0) = one scale per output row (per channel)."""
    embeddings: bool = False
    """Also quantize the input embeddings and the output head. Off by default, as GPTQ, AWQ and bitsandbytes keep
    them in high precision; a model with tied embeddings shares one tensor for both, quantized once."""

    def __post_init__(self) -> None:
        check(bool(self.bits), "--bits", "give at least one bit width, e.g. --bits 8 4")
        bad = [b for b in self.bits if not isinstance(b, int) or isinstance(b, bool) or not 2 <= b <= 8]
        check(not bad, "--bits", f"each bit width must be an integer from 2 to 8, got {bad}")
        check(self.group_size is None or self.group_size > 0, "--group-size",
              f"must be positive (or 0 on the command line for one scale per output row), got {self.group_size}")


def quantized_weights(model: nn.Module, embeddings: bool = False) -> dict[str, nn.Parameter]:
    """The weights RTN rounds, by name: every ``nn.Linear`` weight, and with ``embeddings`` the input embeddings
    and output head too. Without it the head is skipped even where it is an ``nn.Linear``; biases and norms are
    never quantized. A tensor shared by two modules (tied embeddings) is listed once."""
    skip = set()
    if not embeddings:
        for get in (model.get_input_embeddings, model.get_output_embeddings):
            module = get()
            if module is not None:
                skip.add(id(module.weight))
    kinds = (nn.Linear, nn.Embedding) if embeddings else (nn.Linear,)
    out: dict[str, nn.Parameter] = {}
    seen: set[int] = set()
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, kinds) and weight is not None and id(weight) not in skip | seen:
            seen.add(id(weight))
            out[f"{name}.weight"] = weight
    return out


@torch.no_grad()
def quantize_model_(model: nn.Module, bits: int, group_size: int | None = None,
                    embeddings: bool = False) -> dict[str, int]:
    """Round ``model``'s weights (:func:`quantized_weights`) in place; returns how many tensors and values were
    rounded. Call it on a copy: the model's own weights are replaced."""
    weights = quantized_weights(model, embeddings)
    values = 0
    for param in weights.values():
        param.copy_(rtn_quantize(param, bits, group_size))
        values += param.numel()
    return {"tensors": len(weights), "values": values}
