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
            assert torch.equal(p, base[name]), name  # bit for bit: unmerging alone leaves rounding behind


def test_the_roomy_cache_layer_holds_what_concatenation_would():
    from transformers.cache_utils import DynamicLayer

    from unlearnlm.generation import RoomyLayer

    torch.manual_seed(0)
    roomy, plain = RoomyLayer(room=2), DynamicLayer()
    # the prompt's pass, two steps within the room, a crop from outside, then steps up to and past the new room
    steps = [5, 1, 1, "crop", 1, 1, 1, 3]
    allocated, buffers = [], None
    for step in steps:
        if step == "crop":
            roomy.crop(-2)
            plain.crop(-2)
            continue
        k, v = torch.randn(2, 3, step, 4), torch.randn(2, 3, step, 4)
        got, want = roomy.update(k, v), plain.update(k, v)
        for a, b in zip(got, want, strict=True):
            assert torch.equal(a, b)
        assert roomy.get_seq_length() == plain.get_seq_length()
        allocated.append(roomy._buffers is not buffers)
        buffers = roomy._buffers
    # a new allocation at the prompt's pass, after the crop, and when 3 tokens overflow the room; none in between
    assert allocated == [True, False, False, True, False, False, True]
    assert buffers[0].shape[-2] == roomy.get_seq_length() + roomy.room


def test_generation_with_the_roomy_cache_gives_the_default_caches_tokens(tiny_model, tokenizer):
    from unlearnlm.data.formatting import render_prompt
    from unlearnlm.generation import RoomyLayer, _cache_keyword, roomy_cache

    texts = [render_prompt(tokenizer, d) for d in PROMPTS]
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)  # left-padded batch
    kwargs = dict(max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    with torch.no_grad():
        plain = tiny_model.generate(**enc, **kwargs)
        cache = roomy_cache(tiny_model, 12)
        roomy = tiny_model.generate(**enc, **{_cache_keyword(): cache}, **kwargs)
    assert torch.equal(plain, roomy)
    assert all(isinstance(layer, RoomyLayer) for layer in cache.layers)
    assert cache.get_seq_length() == plain.shape[1] - 1  # written into, not bypassed


def test_generate_answers_through_the_roomy_cache(tiny_model, tokenizer, monkeypatch):
    from unlearnlm import generation

    made, original = [], generation.roomy_cache

    def spy(model, room):
        made.append(room)
        return original(model, room)

    monkeypatch.setattr(generation, "roomy_cache", spy)
    generate(tiny_model, tokenizer, PROMPTS, max_new_tokens=5, batch_size=2)
    assert made == [5, 5]  # one cache per batch, with room for the answer


def test_generate_gives_the_same_answers_with_either_cache(tiny_model, tokenizer):
    kwargs = dict(max_new_tokens=10, batch_size=2)
    assert generate(tiny_model, tokenizer, PROMPTS, kv_cache="roomy", **kwargs) == generate(
        tiny_model, tokenizer, PROMPTS, kv_cache="dynamic", **kwargs)
    with pytest.raises(ValueError, match="kv_cache"):
        generate(tiny_model, tokenizer, PROMPTS, kv_cache="static", **kwargs)


def test_linear_weights_cast_once_give_autocasts_numbers_bit_for_bit(tiny_model, tokenizer, monkeypatch):
    """Under bf16 autocast, the linear layers compute with weights cast once for the block (bf16 weights reach the
    matmuls) and give exactly autocast's own logits; outside autocast they run in fp32; afterwards every layer's
    forward is its own again (an instance-level wrapper put back)."""
    from torch import nn

    from unlearnlm.generation import weights_cast_once

    ids = tokenizer(["What is two plus two, please?", "Hi there"], return_tensors="pt", padding=True)
    wrapper = tiny_model.lm_head.forward
    tiny_model.lm_head.forward = lambda x: wrapper(x)  # an instance-level forward, as a wrapper would set one
    seen: list[torch.dtype] = []
    linear = nn.functional.linear
    monkeypatch.setattr(nn.functional, "linear", lambda x, w, b=None: (seen.append(w.dtype), linear(x, w, b))[1])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        each_call = tiny_model(**ids).logits
    assert set(seen) == {torch.float32}  # autocast casts inside the matmul: fp32 weights reach it
    seen.clear()
    with torch.no_grad(), weights_cast_once(tiny_model, torch.bfloat16):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            once = tiny_model(**ids).logits
        assert set(seen) == {torch.bfloat16}
        seen.clear()
        plain = tiny_model(**ids).logits  # no autocast: fp32 as always
        assert set(seen) == {torch.float32}
    assert torch.equal(once, each_call)
    assert torch.equal(plain, tiny_model(**ids).logits)
    layers = [m for m in tiny_model.modules() if type(m) is nn.Linear]
    assert all("forward" not in m.__dict__ for m in layers if m is not tiny_model.lm_head)
    assert tiny_model.lm_head.__dict__["forward"].__name__ == "<lambda>"
    del tiny_model.lm_head.forward  # the fixture's model as it came


def test_generate_gives_the_same_answers_with_weights_cast_once_or_per_call(tiny_model, tokenizer):
    kwargs = dict(max_new_tokens=10, batch_size=2, mixed_precision="bf16")
    assert generate(tiny_model, tokenizer, PROMPTS, weight_cast="once", **kwargs) == generate(
        tiny_model, tokenizer, PROMPTS, weight_cast="per_call", **kwargs)
    with pytest.raises(ValueError, match="weight_cast"):
        generate(tiny_model, tokenizer, PROMPTS, weight_cast="never", **kwargs)


def test_prefilled_answers_continue_the_prefill_after_the_assistant_header(tiny_model, tokenizer):
    from unlearnlm.data.formatting import render_prompt

    prefills = ["Sure, here", "1."]
    got = generate(tiny_model, tokenizer, PROMPTS[:2], max_new_tokens=6, batch_size=2, prefills=prefills)
    for d, prefill, answer in zip(PROMPTS[:2], prefills, got, strict=True):
        enc = tokenizer([render_prompt(tokenizer, d) + prefill], return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            out = tiny_model.generate(**enc, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        assert answer == tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    assert got != generate(tiny_model, tokenizer, PROMPTS[:2], max_new_tokens=6, batch_size=2)
    assert generate(tiny_model, tokenizer, PROMPTS[:2], max_new_tokens=6, batch_size=2, prefills=["", ""]) == \
        generate(tiny_model, tokenizer, PROMPTS[:2], max_new_tokens=6, batch_size=2)
    with pytest.raises(ValueError, match="one per dialogue"):
        generate(tiny_model, tokenizer, PROMPTS[:2], max_new_tokens=2, batch_size=2, prefills=["x"])
