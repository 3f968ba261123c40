"""Batched greedy generation: answers in input order, and the precision it computes in."""

import pytest
import torch

from unlearnlm import distributed
from unlearnlm.data.records import Dialogue
from unlearnlm.generation import generate

PROMPTS = [Dialogue("Hi"), Dialogue("What is two plus two, please?"), Dialogue("Name a colour.")]


def _dtypes_seen(model, tokenizer, **kwargs) -> set[torch.dtype]:
    seen: set[torch.dtype] = set()
    handle = model.model.layers[0].self_attn.q_proj.register_forward_hook(lambda m, i, out: seen.add(out.dtype))
    try:
        generate(model, tokenizer, PROMPTS, max_new_tokens=3, batch_size=2, **kwargs)
    finally:
        handle.remove()
    return seen


@pytest.mark.parametrize(("setting", "supported", "dtype"), [
    ("no", True, torch.float32), ("bf16", False, torch.bfloat16),
    ("auto", True, torch.bfloat16), ("auto", False, torch.float32),
])
def test_generation_computes_in_the_precision_asked(tiny_model, tokenizer, monkeypatch, setting, supported, dtype):
    monkeypatch.setattr(distributed, "bf16_supported", lambda: supported)
    assert _dtypes_seen(tiny_model, tokenizer, mixed_precision=setting) == {dtype}
    assert tiny_model.dtype == torch.float32  # autocast only: the weights stay as they were


def test_answers_come_back_in_input_order(tiny_model, tokenizer):
    together = generate(tiny_model, tokenizer, PROMPTS, max_new_tokens=4, batch_size=2)
    alone = [generate(tiny_model, tokenizer, [p], max_new_tokens=4, batch_size=1)[0] for p in PROMPTS]
    assert together == alone
