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


def test_a_lora_model_generates_merged_and_comes_back_unmerged(tiny_model, tokenizer):
    from peft.tuners.tuners_utils import BaseTunerLayer

    from unlearnlm.config import LoraConfig
    from unlearnlm.models import add_lora

    model = add_lora(tiny_model, LoraConfig(r=4, alpha=8), seed=0)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)  # adapters that change the weights (B starts at zero)
    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    base = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    states = []
    handle = layers[0].register_forward_hook(lambda m, i, out: states.append(m.merged))
    try:
        generate(model, tokenizer, PROMPTS, max_new_tokens=2, batch_size=2)
        assert states and all(states)  # merged while generating
        states.clear()
        with model.disable_adapter():  # the original's answers: nothing may be merged in
            generate(model, tokenizer, PROMPTS, max_new_tokens=2, batch_size=2)
        assert states and not any(states)
    finally:
        handle.remove()
    assert not any(m.merged for m in layers)
    for name, p in model.named_parameters():
        if "lora_" not in name:
            torch.testing.assert_close(p, base[name], rtol=0, atol=1e-5)
