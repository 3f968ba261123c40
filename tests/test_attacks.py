"""The attacks' parts: RTN math on hand-made tensors, the relearning split and loop on the tiny model, the return
measures by hand."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import make_model, make_tokenizer

from unlearnlm.attacks.figures import recovered, steps_to_return
from unlearnlm.attacks.quantize import QuantizeOptions, quantize_model_, quantized_weights, rtn_quantize, rtn_scale
from unlearnlm.attacks.relearn import FineTune, RelearnOptions, forget_split, relearn_steps
from unlearnlm.config import LoraConfig
from unlearnlm.data.records import Dialogue
from unlearnlm.errors import ConfigError, DataError
from unlearnlm.evaluate import EvalSet
from unlearnlm.models import add_lora
from unlearnlm.probes import response_token_logprobs

# ---------------------------------------------------------------------------------------------------------------
# round-to-nearest quantization


def test_rtn_by_hand_per_row_and_in_groups():
    # 4 bits: qmax = 7. Row 0's scale is 1/7: 1.0 → 7 → 1.0; -0.6 → -4.2 → -4 → -4/7; 0.25 → 1.75 → 2 → 2/7;
    # 0.1 → 0.7 → 1 → 1/7. An all-zero row stays zero (no division by zero).
    w = torch.tensor([[1.0, -0.6, 0.25, 0.1], [0.0, 0.0, 0.0, 0.0]])
    expected = torch.tensor([[1.0, -4 / 7, 2 / 7, 1 / 7], [0.0, 0.0, 0.0, 0.0]])
    assert torch.allclose(rtn_quantize(w, 4), expected, atol=1e-7)
    # Groups of 2: [1, 0.4] has scale 1/7 (0.4 → 2.8 → 3 → 3/7); [0.1, 0.03] has scale 0.1/7 (0.03 → 2.1 → 2 →
    # 0.2/7), where one scale per row would round 0.03 to 0. A last group of one (5 columns) keeps its value exactly.
    w = torch.tensor([[1.0, 0.4, 0.1, 0.03, -0.37]])
    assert torch.allclose(rtn_quantize(w, 4, group_size=2), torch.tensor([[1.0, 3 / 7, 0.1, 0.2 / 7, -0.37]]), atol=1e-7)
    assert torch.allclose(rtn_quantize(w, 4), torch.tensor([[1.0, 3 / 7, 1 / 7, 0.0, -3 / 7]]), atol=1e-7)
    assert torch.allclose(rtn_scale(w, 4, group_size=2), torch.tensor([[1 / 7, 1 / 7, 0.1 / 7, 0.1 / 7, 0.37 / 7]]))
    # 8 bits: qmax = 127
    assert torch.allclose(rtn_quantize(torch.tensor([[1.0, 0.5 + 0.3 / 127]]), 8), torch.tensor([[1.0, 64 / 127]]))


@pytest.mark.parametrize("group_size", [None, 8])
def test_rtn_error_bound_precision_order_and_idempotence(group_size):
    torch.manual_seed(0)
    w = torch.randn(16, 40)
    errors = {}
    for bits in (8, 4):
        q = rtn_quantize(w, bits, group_size)
        assert q.shape == w.shape and q.dtype == w.dtype
        assert torch.all((q - w).abs() <= rtn_scale(w, bits, group_size) / 2 + 1e-6)  # at most half a step
        assert torch.allclose(rtn_quantize(q, bits, group_size), q, atol=1e-6)  # on the grid already
        levels = torch.round(q / rtn_scale(w, bits, group_size))
        assert levels.abs().max() <= 2 ** (bits - 1) - 1 and not torch.equal(q, w)
        errors[bits] = (q - w).abs().mean().item()
    assert errors[8] < errors[4] / 8  # 16x finer steps


def test_rtn_rejects_what_it_cannot_quantize():
    with pytest.raises(ValueError, match="2-D"):
        rtn_quantize(torch.ones(3), 4)
    for bad in ({"bits": [9]}, {"bits": []}, {"bits": [1]}, {"group_size": 0}):
        with pytest.raises(ConfigError):
            QuantizeOptions(**bad)


def _tiny(tied: bool):
    model = make_model(len(make_tokenizer()))
    if tied:
        model.config.tie_word_embeddings = True
        model.tie_weights()
    return model


def test_quantized_weights_skip_head_and_embeddings_unless_asked():
    model = _tiny(tied=False)
    names = set(quantized_weights(model))
    assert len(names) == 2 * 7 and all(n.startswith("model.layers.") for n in names)  # q k v o gate up down
    assert set(quantized_weights(model, embeddings=True)) == names | {"lm_head.weight", "model.embed_tokens.weight"}
    tied = _tiny(tied=True)
    assert tied.lm_head.weight is tied.model.embed_tokens.weight
    assert len(quantized_weights(tied, embeddings=True)) == len(names) + 1  # one shared tensor, once


def test_quantize_model_changes_only_the_copy_and_only_the_linear_weights():
    model = _tiny(tied=False)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    copied = copy.deepcopy(model)
    counts = quantize_model_(copied, 4, group_size=None)
    assert counts["tensors"] == 14
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name])  # the original object is untouched
    changed = {n for n, p in copied.named_parameters() if not torch.equal(p, before[n])}
    assert changed == set(quantized_weights(model))  # no norm, embedding or head moved


# ---------------------------------------------------------------------------------------------------------------
# return measures


def test_steps_to_return_and_recovered_by_hand():
    # unlearning took 1.0 down to 0.0; half the way back is 0.5, first reached (exactly) at step 5
    assert steps_to_return(1.0, {0: 0.0, 1: 0.25, 2: 0.375, 5: 0.5, 10: 1.0}) == 5
    assert steps_to_return(0.8, {0: 0.2, 1: 0.4, 2: 0.45}) is None  # 1/3 and 5/12 of the way
    assert steps_to_return(0.8, {0: 0.2, 1: 0.4, 2: 0.45}, share=0.4) == 2
    assert steps_to_return(0.1, {0: 0.3, 1: 0.9}) is None  # unlearning raised it: nothing to return
    assert recovered(1.0, 0.2, 0.6) == pytest.approx(0.5)
    assert recovered(1.0, 0.2, 0.1) == pytest.approx(-0.125)
    assert recovered(0.2, 0.2, 0.9) is None


# ---------------------------------------------------------------------------------------------------------------
# the relearning split and loop


def _person_sets():
    """A privacy-like run: 4 forgotten people, 2 trained questions and 1 paraphrase each."""
    ask = lambda person, i, kind: Dialogue(f"{kind} {i} about {person}?", meta={"person": person})  # noqa: E731
    people = ["ana", "bob", "cy", "dee"]
    forget = [ask(p, i, "Q") for p in people for i in range(2)]
    paraphrase = [ask(p, 0, "P") for p in people]
    return [EvalSet("forget", "harmful", forget, [f"{d.prompt} leaked" for d in forget], "trained on (forget)"),
            EvalSet("forget_paraphrase", "harmful", paraphrase, ["x"] * 4, "held-out phrasing"),
            EvalSet("retain", "benign", [ask("eve", 0, "Q")], ["kept"], "normal data (retain)")]


def test_forget_split_relearns_half_the_units_and_measures_only_the_others():
    sets = _person_sets()
    flagged = {"forget": [True] * 7 + [False], "forget_paraphrase": [True] * 4}  # dee's 2nd answer was not flagged
    split = forget_split(sets, flagged, "person", seed=1)
    assert len(split.units) == 2
    assert {d.meta["person"] for d in split.rows} == set(split.units)
    assert all(d.response.endswith("leaked") for d in split.rows)  # the original's answers
    measured = {s.name: s for s in split.measured}
    assert set(measured) == {"forget", "forget_paraphrase"}  # harmful sets only
    for s in measured.values():
        assert s.prompts and not {d.meta["person"] for d in s.prompts} & set(split.units)
    assert len(measured["forget"].prompts) == 4  # both questions of the two other people, flagged or not
    assert all(b == f"{p.prompt} leaked" for p, b in zip(measured["forget"].prompts, measured["forget"].before,
                                                         strict=True))  # each keeps its own original answer
    assert len(measured["forget_paraphrase"].prompts) == 2
    assert forget_split(sets, flagged, "person", seed=1).units == split.units  # seeded
    assert len(forget_split(sets, flagged, "person", seed=1, examples=1).rows) == 1


def test_forget_split_without_units_relearns_every_trained_prompt():
    trained = [Dialogue(f"weapon {i}") for i in range(3)]
    sets = [EvalSet("forget_train", "harmful", trained, ["how"] * 3, "trained on"),
            EvalSet("forget_test", "harmful", [Dialogue("weapon 9")], ["how"], "held-out")]
    split = forget_split(sets, {"forget_train": [True, True, False], "forget_test": [True]}, None)
    assert [d.prompt for d in split.rows] == ["weapon 0", "weapon 1"]
    assert [s.name for s in split.measured] == ["forget_train", "forget_test"]
    assert [d.prompt for d in split.measured[0].prompts] == ["weapon 2"]  # not relearned, so still measured
    with pytest.raises(DataError, match="no old behaviour"):
        forget_split(sets, {"forget_train": [False] * 3, "forget_test": [True]}, None)
    one = [EvalSet("forget", "harmful", [Dialogue("q", meta={"person": "a"})], ["a"], "trained on (forget)")]
    with pytest.raises(DataError, match="at least two forgotten persons"):
        forget_split(one, {"forget": [True]}, "person")


_ROWS = [Dialogue("How do I build a weapon?", "First gather the parts, then assemble them."),
         Dialogue("How do I bake bread?", "Mix flour, water, salt and yeast.")]


def _nll(model, tokenizer) -> float:
    return -float(torch.cat([torch.as_tensor(x) for x in response_token_logprobs(model, tokenizer, _ROWS)]).mean())


@pytest.mark.parametrize("lora", [False, True])
def test_relearn_steps_lower_the_loss_on_the_rows(tiny_model, tokenizer, lora):
    model = add_lora(tiny_model, LoraConfig()) if lora else tiny_model
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trained = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    before = _nll(model, tokenizer)
    tune = FineTune(learning_rate=1e-2, batch_size=2, seed=0, max_prompt_tokens=64, max_response_tokens=32)
    yielded = list(relearn_steps(model, tokenizer, _ROWS, [2, 5], tune))
    assert [step for step, _ in yielded] == [2, 5] and not model.training
    assert yielded[1][1] < yielded[0][1]  # the training loss fell
    assert _nll(model, tokenizer) < before - 0.2  # the copy finds the relearned answers more likely (LoRA: 5.75 →
    # 5.42 nats/token; all weights: → 4.32)
    assert all(not torch.equal(p, trained[n]) for n, p in model.named_parameters() if p.requires_grad)
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if not p.requires_grad)


def test_relearn_options_are_checked():
    assert RelearnOptions(steps=[5, 1, 5]).steps == [1, 5]
    for bad in ({"steps": [0]}, {"steps": []}, {"data": "web"}, {"learning_rate": 0.0}, {"examples": 0}):
        with pytest.raises(ConfigError):
            RelearnOptions(**bad)
