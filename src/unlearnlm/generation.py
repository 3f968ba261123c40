"""Batched greedy generation with left padding and the KV cache."""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Iterator, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase
from transformers.cache_utils import DynamicCache, DynamicLayer

from unlearnlm import distributed
from unlearnlm.data.formatting import length_batches, render_prompt
from unlearnlm.data.records import Dialogue


@contextlib.contextmanager
def adapters_merged(model: nn.Module) -> Iterator[None]:
    """A peft model's adapters folded into its base weights for the duration, then taken out again.

    Unmerged, every adapted projection adds two small matmuls and a dropout at each decoding step. Measured once on
    SmolLM2-135M, LoRA r=16, 64 benign prompts under bf16 autocast, 2 CPU cores: 18.0 s unmerged, 15.6 s merged,
    12.4 s for the model without adapters (the rest is peft's per-layer Python overhead).
    Unmerging subtracts the product that merging added, which leaves the base weights off by float rounding (about
    1e-7 relative in fp32); small, but it made a run's trajectory depend on how many checks it ran (the harm default
    checked from step 40 instead of 10 flagged 55% at step 40 against 53%, 2026-12-06) and let the original (the
    adapters switched off) drift. So the adapted layers' base weights are copied to the CPU before merging and copied
    back after unmerging: bit for bit the weights from before (a test checks it), for about a copy of those weights in
    host memory while it lasts. Nothing is done for a model without adapters, with adapters already merged, or inside
    ``disable_adapter()`` (the original's outputs).
    """
    from peft import PeftModel
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)] if isinstance(model, PeftModel) else []
    if not layers or any(m.merged or m.disable_adapters for m in layers):
        yield
        return
    bases = [m.get_base_layer().weight for m in layers]
    kept = [w.detach().to("cpu", copy=True) for w in bases]
    model.merge_adapter()
    try:
        yield
    finally:
        model.unmerge_adapter()
        with torch.no_grad():
            for w, original in zip(bases, kept, strict=True):
                w.copy_(original)


@contextlib.contextmanager
def weights_cast_once(model: nn.Module, dtype: torch.dtype) -> Iterator[None]:
    """Every fp32 ``nn.Linear`` of ``model`` computes, for the duration and while autocast to ``dtype`` is on, with
    its weight and bias cast to ``dtype`` once at the start, where autocast casts them again at every call.

    Autocast casts a linear layer's input, weight and bias to its dtype and multiplies those, so handing it weights
    already in that dtype gives the same numbers bit for bit (a test checks it). What changes is how often weights are
    cast: autocast keeps its casts for a block only of weights that require gradients, and a LoRA model's base weights
    are frozen, so greedy decoding cast every one of them again at every token. Measured on SmolLM2-135M with LoRA
    r=16 (a run's checks and after answers), 64 benign prompts, 48 new tokens, bf16, 2 cores with AMX, 2026-12-06:
    16.9 and 11.5 s cast at every call against 9.3 and 8.5 s cast once, the same answers
    (``benchmarks/bench_generation.py --lora --mixed-precision bf16 --weight-cast per_call once per_call once``).
    It costs a copy of the linear weights in ``dtype`` for the duration (270 MB for SmolLM2-135M), so
    :func:`generate` uses it on the CPU only, where memory is plentiful and bandwidth is what bounds decoding.
    Outside autocast (or under another dtype) a layer runs as it always does. The weights must not change inside the
    block: it holds one cast of them, taken when it starts.
    """
    patched = []
    for module in model.modules():
        if type(module) is not nn.Linear or module.weight.dtype != torch.float32:
            continue
        weight = module.weight.detach().to(dtype)
        bias = module.bias.detach().to(dtype) if module.bias is not None else None
        own = module.__dict__.get("forward")  # an instance-level forward (a wrapper) to put back afterwards

        def cast_forward(x: torch.Tensor, *, _run=module.forward, _w=weight, _b=bias) -> torch.Tensor:
            kind = x.device.type
            if torch.is_autocast_enabled(kind) and torch.get_autocast_dtype(kind) == _w.dtype:
                return nn.functional.linear(x, _w, _b)
            return _run(x)

        module.forward = cast_forward
        patched.append((module, own))
    try:
        yield
    finally:
        for module, own in patched:
            if own is None:
                del module.forward
            else:
                module.forward = own


class RoomyLayer(DynamicLayer):
    """A full-attention KV cache layer that writes each new token into room kept free for it.

    transformers' :class:`~transformers.cache_utils.DynamicLayer` concatenates the whole cache with each token's keys
    and values, so every decoding step copies every cached key and value of every layer. This layer allocates, at the
    prompt's pass, the prompt's length plus ``room`` positions, writes each step's keys and values in place, and hands
    attention a view of the filled part: the same keys and values, so the same answers (a test checks it). Profiled
    on SmolLM2-135M, 32 benign prompts, 48 new tokens, fp32, 2 CPU cores: the concatenations were 30% of the
    operators' time; 64 prompts at batch 32 took 14.1 s against 16.2 s (``benchmarks/bench_generation.py --kv-cache
    dynamic roomy``). Anything that replaces the layer's tensors from outside (cropping, beam reordering) is read back
    into a new allocation at the next update.
    """

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room
        self._buffers: tuple[torch.Tensor, torch.Tensor] | None = None
        self._handed: torch.Tensor | None = None  # the keys view last returned: anything else was set from outside

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        held = self.get_seq_length()
        new = key_states.shape[-2]
        buffers = self._buffers
        if (
            buffers is None
            or self.keys is not self._handed
            or buffers[0].shape[:-2] != key_states.shape[:-2]
            or held + new > buffers[0].shape[-2]
        ):
            size = held + new + self.room
            buffers = tuple(s.new_empty(*s.shape[:-2], size, s.shape[-1]) for s in (key_states, value_states))
            if held:
                buffers[0][..., :held, :] = self.keys
                buffers[1][..., :held, :] = self.values
            self._buffers = buffers
        buffers[0][..., held : held + new, :] = key_states
        buffers[1][..., held : held + new, :] = value_states
        self.keys, self.values = buffers[0][..., : held + new, :], buffers[1][..., : held + new, :]
        self._handed = self.keys
        return self.keys, self.values


def roomy_cache(model: nn.Module, room: int) -> DynamicCache:
    """The dynamic cache ``model.generate`` would make, with :class:`RoomyLayer` for its full-attention layers.

    Sliding-window, linear-attention and other layer kinds keep transformers' own classes.
    """
    cache = DynamicCache(config=model.config)
    cache.layers = [RoomyLayer(room) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


@functools.cache
def _cache_keyword() -> str:
    """The keyword ``generate`` takes a cache by: ``cache`` in later transformers 5, else ``past_key_values``."""
    from transformers.generation.utils import GenerationMixin

    params = inspect.signature(GenerationMixin.prepare_inputs_for_generation).parameters
    return "cache" if "cache" in params else "past_key_values"


@torch.no_grad()
def generate(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    dialogues: Sequence[Dialogue],
    *,
    max_new_tokens: int,
    batch_size: int,
    max_prompt_tokens: int = 256,
    mixed_precision: str = "no",
    kv_cache: str = "roomy",
    weight_cast: str = "once",
    desc: str | None = None,
    prefills: Sequence[str] | None = None,
) -> list[str]:
    """Greedy answers to each dialogue's prompt (its system turn included), in input order.

    Prompts are sorted by length so each batch pads little, then answers are put back in order. Under a launcher the
    batches are shared out between the processes (:func:`~unlearnlm.distributed.map_shared`) and every process gets
    every answer: the batches are the ones a single process makes, so the answers are the same.
    ``mixed_precision``: ``bf16`` generates under bf16 autocast, ``auto`` does so where the device computes bf16
    faster than fp32: a GPU, a CPU with AMX (:func:`~unlearnlm.distributed.resolve_precision`). On 64 benign prompts,
    SmolLM2-135M, 2 CPU cores with AMX, batch 32: 12.5 s against 26.9 s in fp32
    (``benchmarks/bench_generation.py --mixed-precision no bf16``); 41% of the greedy answers are identical to
    fp32's, the rest part ways after some words, as they would on another GPU.
    A peft model generates with its adapters merged (:func:`adapters_merged`). The model's train/eval mode is
    restored afterwards. ``kv_cache``: ``roomy`` (:func:`roomy_cache`, the same answers, faster) or ``dynamic``
    (transformers' default; kept for ``benchmarks/bench_generation.py`` to compare against). ``weight_cast``:
    under bf16 on the CPU, ``once`` casts the linear weights to bf16 once per call (:func:`weights_cast_once`, the
    same answers, faster), ``per_call`` leaves it to autocast at every layer call (to compare against).
    ``prefills``: text that opens each answer, one per dialogue, written after the assistant header as if the model
    had said it (the prefilling attack, :mod:`unlearnlm.attacks.prefill`); what is returned is the continuation only.
    """
    if kv_cache not in ("roomy", "dynamic"):
        raise ValueError(f"kv_cache must be 'roomy' or 'dynamic', got {kv_cache!r}")
    if weight_cast not in ("once", "per_call"):
        raise ValueError(f"weight_cast must be 'once' or 'per_call', got {weight_cast!r}")
    if not dialogues:
        return []
    was_training = model.training
    model.eval()
    texts = [render_prompt(tokenizer, d) for d in dialogues]
    if prefills is not None:
        if len(prefills) != len(texts):
            raise ValueError(f"prefills: one per dialogue, got {len(prefills)} for {len(texts)} dialogues")
        texts = [t + p for t, p in zip(texts, prefills, strict=True)]
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    batches = length_batches(lengths, batch_size)
    device = next(model.parameters()).device
    bf16 = distributed.resolve_precision(mixed_precision) == "bf16"

    def answer(mine: list[list[int]]) -> list[list[str]]:
        decoded = []
        for idx in tqdm(mine, desc=desc, disable=desc is None or not distributed.is_main(), leave=False):
            enc = tokenizer(
                [texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True,
                max_length=max_prompt_tokens, add_special_tokens=False,
            ).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                out = model.generate(
                    **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                    **({_cache_keyword(): roomy_cache(model, max_new_tokens)} if kv_cache == "roomy" else {}),
                )  # (b, T_prompt + T_new)
            decoded.append(tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True))
        return decoded

    answers: list[str] = [""] * len(texts)
    cast_once = bf16 and device.type == "cpu" and weight_cast == "once"
    with adapters_merged(model), weights_cast_once(model, torch.bfloat16) if cast_once else contextlib.nullcontext():
        shared = distributed.map_shared(answer, batches)
    for idx, decoded in zip(batches, shared, strict=True):
        for i, text in zip(idx, decoded, strict=True):
            answers[i] = text.strip()
    model.train(was_training)
    return answers
