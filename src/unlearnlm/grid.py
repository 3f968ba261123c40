"""The round-to-nearest (RTN) weight grid that ``unlearnlm attack quantize`` rounds to and that
``train.quant_aware_bits`` trains through (:mod:`unlearnlm.quant_aware`).

The grid is symmetric absmax per group: a group of ``group_size`` consecutive weights of one output row (the whole
row when ``group_size`` is None: per output channel) shares one scale ``s = max|w| / qmax`` with
``qmax = 2**(bits-1) - 1`` (127 at 8 bits, 7 at 4 bits; the extra negative level is unused, so zero is exact and the
grid is symmetric). Each weight becomes ``s * clamp(round(w / s), -qmax, qmax)``, so it moves by at most ``s / 2``.
A last group shorter than ``group_size`` (a row length that is no multiple of it) gets its own scale.
"""

from __future__ import annotations

import torch


def rtn_scale(weight: torch.Tensor, bits: int, group_size: int | None = None) -> torch.Tensor:
    """The scale of every weight's group, broadcast to the weight's shape (O, I): ``max|w| / qmax`` per group.

    An all-zero group gets scale 1 (any scale keeps zeros exact), so nothing divides by zero.
    """
    qmax = 2 ** (bits - 1) - 1
    rows, cols = weight.shape
    size = cols if group_size is None else group_size
    n_groups = -(-cols // size)  # ceil
    padded = torch.nn.functional.pad(weight.detach().float().abs(), (0, n_groups * size - cols))  # (O, G*S), zeros
    absmax = padded.reshape(rows, n_groups, size).amax(dim=-1, keepdim=True)  # (O, G, 1); padding never wins
    scale = torch.where(absmax > 0, absmax / qmax, torch.ones_like(absmax))  # (O, G, 1)
    return scale.expand(rows, n_groups, size).reshape(rows, n_groups * size)[:, :cols]  # (O, I)


def rtn_quantize(weight: torch.Tensor, bits: int, group_size: int | None = None) -> torch.Tensor:
    """``weight`` (O, I) rounded to the symmetric absmax grid of ``bits`` bits and dequantized: same shape and dtype.

    Each value moves by at most half its group's scale (:func:`rtn_scale`); values already on a grid stay there.
    """
    if weight.dim() != 2:
        raise ValueError(f"rtn_quantize needs a 2-D weight (out, in), got shape {tuple(weight.shape)}")
    qmax = 2 ** (bits - 1) - 1
    scale = rtn_scale(weight, bits, group_size)  # (O, I)
    levels = torch.clamp(torch.round(weight.detach().float() / scale), -qmax, qmax)  # (O, I) integers
    return (levels * scale).to(weight.dtype)
