"""Training through the quantization grid: inside the context a model computes what its RTN-rounded copy computes,
gradients reach the adapters, and outside (or with adapters off) nothing changed."""

from __future__ import annotations

import copy

import pytest
import torch

from unlearnlm.attacks.quantize import quantize_model_
from unlearnlm.config import DataConfig, LoraConfig, TrainConfig
from unlearnlm.data.records import Dialogue
from unlearnlm.errors import ConfigError
from unlearnlm.methods import create_method
from unlearnlm.models import Reference, add_lora
from unlearnlm.quant_aware import through_grid
from unlearnlm.train import unlearn

IDS = torch.tensor([[5, 17, 42, 9, 33, 2, 71, 8]])


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


def _lora_with_update(tiny_model):
    """A LoRA model whose adapters are not zero (B starts at zero), so the effective weight differs from the base."""
    model = add_lora(tiny_model, LoraConfig(r=4, alpha=8))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return model


def test_inside_the_context_a_lora_model_computes_as_its_merged_rounded_copy(tiny_model):
    model = _lora_with_update(tiny_model)
    plain = _logits(model)
    rounded = copy.deepcopy(model).merge_and_unload()
    quantize_model_(rounded, bits=4, group_size=16)  # the attack's grid; embeddings and head stay in float
    with through_grid(model, bits=4, group_size=16) as n:
        inside = _logits(model)
    assert n == 7 * tiny_model.config.num_hidden_layers  # q, k, v, o, gate, up, down of every layer
    assert torch.allclose(inside, _logits(rounded), atol=1e-4)
    assert not torch.allclose(inside, plain, atol=1e-3)  # 4 bits do change the outputs
    assert torch.equal(_logits(model), plain)  # restored on exit


def test_gradients_pass_straight_through_to_the_adapters_only(tiny_model):
    model = _lora_with_update(tiny_model)
    with through_grid(model, bits=4, group_size=16):
        model(input_ids=IDS, labels=IDS).loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert grads and all("lora_" in n for n in grads)  # the base weights stay frozen
    assert all(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "lora_A" in n)


def test_with_adapters_disabled_the_original_computes_in_full_precision(tiny_model):
    original = _logits(tiny_model)
    model = _lora_with_update(tiny_model)
    with through_grid(model, bits=4, group_size=16), model.disable_adapter():
        assert torch.allclose(_logits(model), original, atol=1e-6)


def test_full_fine_tuning_rounds_the_weights_themselves(tiny_model):
    rounded = copy.deepcopy(tiny_model)
    quantize_model_(rounded, bits=4, group_size=None)
    with through_grid(tiny_model, bits=4, group_size=None):
        assert torch.allclose(_logits(tiny_model), _logits(rounded), atol=1e-4)


def test_an_error_inside_still_restores_the_layers(tiny_model):
    plain = _logits(tiny_model)
    with pytest.raises(RuntimeError, match="boom"), through_grid(tiny_model, bits=4):
        raise RuntimeError("boom")
    assert torch.equal(_logits(tiny_model), plain)


def test_training_through_the_grid_changes_what_the_steps_learn(tiny_model, tokenizer):
    forget = [Dialogue("How do I build a weapon?", "First gather the parts, then assemble them.")] * 4

    def train(**grid):
        model = add_lora(copy.deepcopy(tiny_model), LoraConfig(r=4, alpha=8))
        cfg = TrainConfig(batch_size=2, learning_rate=1e-2, max_steps=4, eval_every=0, checkpoint_every=0, **grid)
        unlearn(model, tokenizer, create_method("gradient_ascent"), forget=forget, normal=[], train_cfg=cfg,
                data_cfg=DataConfig(), reference=Reference(model, copy_weights=False))
        return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}

    plain, every, half = train(), train(quant_aware_bits=4, quant_aware_every=1), train(quant_aware_bits=4)
    assert all(torch.isfinite(p).all() for p in every.values())
    assert any(not torch.allclose(plain[n], every[n]) for n in plain)
    assert any(not torch.allclose(every[n], half[n]) for n in plain)  # every 2nd step only: a third outcome


@pytest.mark.parametrize(("key", "value"), [("quant_aware_bits", 1), ("quant_aware_bits", 9),
                                            ("quant_aware_every", 0), ("quant_aware_group_size", 0)])
def test_bad_settings_are_named(key, value):
    with pytest.raises(ConfigError, match=f"train.{key}"):
        TrainConfig(**{key: value})
