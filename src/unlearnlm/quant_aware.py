"""Training through the quantization grid: forward passes that compute with round-to-nearest weights.

Why: unlearning moves weights so little that rounding them to a 4-bit grid puts many back into the original's
buckets, and the forgotten behaviour returns (Zhang et al., 2024, arXiv 2410.16454; on this project's harm default
4-bit RTN brought 43% of the held-out harmful compliance back, README *Attacks*). Inside :func:`through_grid` every
linear layer that ``unlearnlm attack quantize`` rounds computes with its *effective* weight rounded to the same
grid (:func:`unlearnlm.grid.rtn_quantize`): under LoRA the base weight plus the adapters' update, with
full fine-tuning the weight itself. Gradients pass through the rounding unchanged (the straight-through estimator,
``w + (q(w) - w).detach()``), so a loss computed inside the context trains the weights so that their rounded
version behaves as the loss asks. ``train.quant_aware_bits`` runs every ``train.quant_aware_every``-th training step
this way and the others in full precision, so that both the saved model and its rounded copy are trained.

A layer whose adapters are disabled (the original, as the reference of a LoRA run) computes in full precision, as
do the input embeddings and the output head (which the attack leaves alone by default). The rounded weight of each
layer is computed once per context and reused by every forward pass in it (and by the recomputation of gradient
checkpointing during the backward pass, which must therefore run inside the context too).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F

from unlearnlm.grid import rtn_quantize


def _straight_through(weight: torch.Tensor, bits: int, group_size: int | None) -> torch.Tensor:
    """``weight`` rounded to the grid in the forward pass, with the identity as its gradient."""
    return weight + (rtn_quantize(weight, bits, group_size) - weight).detach()


def _is_lora_linear(module: nn.Module) -> bool:
    return all(hasattr(module, a) for a in ("base_layer", "lora_A", "lora_B", "get_delta_weight", "disable_adapters"))


def _frozen_ids(model: nn.Module) -> set[int]:
    """Weights the attack leaves in full precision by default: the input embeddings and the output head."""
    ids = set()
    for get in (getattr(model, "get_input_embeddings", None), getattr(model, "get_output_embeddings", None)):
        module = get() if get is not None else None
        if module is not None and getattr(module, "weight", None) is not None:
            ids.add(id(module.weight))
    return ids


@contextmanager
def through_grid(model: nn.Module, bits: int, group_size: int | None = 128) -> Iterator[int]:
    """Inside, ``model``'s linear layers compute with their effective weights rounded to a ``bits``-bit symmetric
    absmax grid of ``group_size`` weights per scale (straight-through gradients); yields how many layers do.

    The layers' ``forward`` methods are replaced on the instances and restored on exit, even after an error.
    """
    skip = _frozen_ids(model)
    patched: list[nn.Module] = []
    bases: set[int] = set()
    modules = list(model.modules())
    for module in modules:
        if _is_lora_linear(module) and isinstance(module.base_layer, nn.Linear):
            bases.add(id(module.base_layer))  # with the adapters' own layers: not rounded on their own
            bases.update(id(m) for part in (module.lora_A, module.lora_B) for m in part.modules())
            module.forward = _lora_forward(module, module.forward, bits, group_size)
            patched.append(module)
    for module in modules:
        if isinstance(module, nn.Linear) and id(module) not in bases and id(module.weight) not in skip:
            module.forward = _linear_forward(module, bits, group_size)
            patched.append(module)
    try:
        yield len(patched)
    finally:
        for module in patched:
            del module.forward  # the class's own forward again


def _linear_forward(module: nn.Linear, bits: int, group_size: int | None):
    cache: list[torch.Tensor] = []

    def forward(x: torch.Tensor) -> torch.Tensor:
        if not cache:
            cache.append(_straight_through(module.weight, bits, group_size))
        return F.linear(x, cache[0], module.bias)

    return forward


def _lora_forward(module: nn.Module, plain, bits: int, group_size: int | None):
    cache: dict[tuple[str, ...], torch.Tensor] = {}

    def forward(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if module.disable_adapters or kwargs.get("adapter_names") is not None:
            return plain(x, *args, **kwargs)  # the original (reference passes), or peft's mixed batches
        base = module.base_layer
        active = tuple(a for a in module.active_adapters if a in module.lora_A.keys())
        if active not in cache:
            weight = base.weight
            if not module.merged:  # merged adapters are in the base weight already
                for name in active:
                    weight = weight + module.get_delta_weight(name).to(weight.dtype)
            cache[active] = _straight_through(weight, bits, group_size)
        return F.linear(x.to(cache[active].dtype), cache[active], base.bias)

    return forward
