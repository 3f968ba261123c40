"""The published methods (GradDiff, SimNPO, ME+GD, UNDIAL, refusal DPO, IDK+AP, RMU, circuit breakers, RepBend): their
defaults, option errors, and one behaviour each that would fail were the method wired wrong. Training itself (every
reachable parameter changes, only adapters under LoRA) is checked for every registered method in test_methods.py."""

import math

import pytest
import torch
from test_methods import EXPECTED, FORGET, NORMAL, TRAIN, _run

from unlearnlm import losses
from unlearnlm.config import DataConfig, TrainConfig
from unlearnlm.data.formatting import collate, tokenize_dialogue
from unlearnlm.data.records import Dialogue
from unlearnlm.errors import ConfigError
from unlearnlm.methods import create_method
from unlearnlm.methods.base import PrepareContext
from unlearnlm.methods.preference import refusal_targets
from unlearnlm.methods.representation import rerouting_schedule
from unlearnlm.models import Reference
from unlearnlm.train import unlearn

ONE_STEP = TrainConfig(max_steps=1, batch_size=2, learning_rate=1e-9, eval_every=0)  # the model stays the original
STEADY = TrainConfig(max_steps=6, batch_size=2, learning_rate=3e-3, eval_every=0)  # a lr the tiny model descends at


@pytest.mark.parametrize(("name", "defaults"), [
    ("grad_diff", {"gamma": 1.0, "alpha": 1.0, "retain_loss": "nll"}),
    ("simnpo", {"beta": 2.5, "gamma": 0.0, "w_forget": 0.1375, "alpha": 1.0, "retain_loss": "nll"}),
    ("me_gd", {"w_forget": 0.1, "alpha": 1.0, "retain_loss": "nll"}),
    ("undial", {"beta": 10.0, "alpha": 0.0, "retain_loss": "nll"}),
    ("refusal_dpo", {"beta": 0.1, "gamma": 1.0, "alpha": 1.0, "retain_loss": "nll"}),
    ("idk_ap", {"beta": 0.1, "w_forget": 1.0, "alpha": 1.0, "w_kl": 0.0}),
    ("rmu", {"layer": 8, "steering_coeff": 6.5, "alpha": 1200.0}),
    ("circuit_breakers", {"layers": [10, 20], "alpha": 10.0}),
    ("repbend", {"layers": list(range(20, 31)), "retain_layers": "all", "alpha": 0.5, "beta": 0.5, "gamma": 0.1,
                 "epsilon": 0.3}),
])
def test_defaults_are_the_published_settings(name, defaults):
    options = create_method(name).options
    assert {key: getattr(options, key) for key in defaults} == defaults


@pytest.mark.parametrize(("name", "options", "key"), [
    ("grad_diff", {"alpha": -1.0}, "method.options.alpha"),
    ("grad_diff", {"retain_loss": "mse"}, "retain_loss"),
    ("simnpo", {"beta": 0.0}, "method.options.beta"),
    ("me_gd", {"w_forget": -0.1}, "method.options.w_forget"),
    ("undial", {"beta": 0.0}, "method.options.beta"),
    ("undial", {"top_k": -1}, "method.options.top_k"),
    ("refusal_dpo", {"beta": -0.1}, "method.options.beta"),
    ("idk_ap", {"w_kl": -1.0}, "method.options.w_kl"),
    ("rmu", {"steering_coeff": 0.0}, "method.options.steering_coeff"),
    ("circuit_breakers", {"layers": []}, "method.options.layers"),
    ("circuit_breakers", {"alpha": 0.0}, "method.options.alpha"),
    ("repbend", {"layers": []}, "method.options.layers"),
    ("repbend", {"beta": -0.5}, "method.options.beta"),
])
def test_bad_options_are_errors_naming_the_key(name, options, key):
    with pytest.raises(ConfigError, match=key):
        create_method(name, options)


@pytest.mark.parametrize(("name", "options", "key"), [
    ("rmu", {}, "method.options.layer"),  # the published layer 8 on a 2-layer model
    ("circuit_breakers", {"layers": [1, -4]}, "method.options.layers"),
    ("repbend", {}, "method.options.layers"),  # the published layers 20 to 30
])
def test_a_layer_the_model_lacks_is_an_error_naming_the_key(name, options, key, tiny_model, tokenizer):
    with pytest.raises(ConfigError, match=rf"{key}: layer \[-?\d+(, \d+)*\] out of range .* 3 entries"):
        _run(name, tiny_model, tokenizer, lora=False, options=options)


@pytest.mark.parametrize("name", ["refusal_dpo", "idk_ap"])
def test_targeted_methods_need_expected_outputs(name, tiny_model, tokenizer):
    with pytest.raises(ConfigError, match=f"{name} needs expected outputs"):
        unlearn(tiny_model, tokenizer, create_method(name), forget=FORGET, normal=NORMAL, expected=[],
                train_cfg=TRAIN, data_cfg=DataConfig(), reference=Reference(tiny_model, copy_weights=True))


def test_grad_diff_without_its_retain_term_is_gradient_ascent(tokenizer):
    from conftest import make_model

    def history(name, options=None):
        model = make_model(len(tokenizer))
        return _run(name, model, tokenizer, lora=False, options=options)[1].history

    plain, diff = history("gradient_ascent"), history("grad_diff", {"alpha": 0.0})
    assert [h["ga"] for h in diff] == pytest.approx([h["ga"] for h in plain], rel=1e-5)
    assert all(h["retain"] == 0.0 for h in diff)


class _NoOriginal(Reference):
    """A reference that fails when asked anything: proves a method never runs the original."""

    def __call__(self, *args, **kwargs):
        raise AssertionError("the original model was run")


@pytest.mark.parametrize("name", ["simnpo", "grad_diff", "me_gd", "idk_ap"])
def test_reference_free_methods_never_run_the_original(name, tiny_model, tokenizer):
    # train.kl_top_k = 0: the loop itself would otherwise cache the original's outputs on the normal rows.
    cfg = TrainConfig(max_steps=3, batch_size=2, learning_rate=1e-2, eval_every=0, kl_top_k=0)
    _, result, _ = _run(name, tiny_model, tokenizer, lora=False, reference=_NoOriginal(tiny_model, copy_weights=False),
                        train_cfg=cfg)
    assert len(result.history) == 3


def _forget_rows(tokenizer, rows):
    return collate([tokenize_dialogue(tokenizer, d, max_prompt_tokens=32, max_response_tokens=32) for d in rows],
                   tokenizer.pad_token_id)


def test_maximum_entropy_flattens_the_forget_answers(tiny_model, tokenizer):
    rows = _forget_rows(tokenizer, FORGET[:2])

    def distance_to_uniform():
        with torch.no_grad():
            return losses.uniform_kl(tiny_model(input_ids=rows["input_ids"]).logits, rows["labels"]).item()

    start = distance_to_uniform()
    _run("me_gd", tiny_model, tokenizer, lora=False, options={"w_forget": 1.0, "alpha": 0.0}, train_cfg=STEADY)
    assert distance_to_uniform() < 0.25 * start


def test_undial_cached_teacher_is_the_exact_one_and_lowers_the_forget_answers(tiny_model, tokenizer):
    # With top_k = the whole vocabulary the cached teacher is the exact one: the same loss at step 1 (the model is the
    # original). There the distillation KL is that of softmax(z - β e_y) from softmax(z): positive, growing with β.
    def first(options):
        result = unlearn(tiny_model, tokenizer, create_method("undial", options), forget=FORGET, normal=NORMAL,
                         expected=EXPECTED, train_cfg=ONE_STEP, data_cfg=DataConfig(),
                         reference=Reference(tiny_model, copy_weights=True))
        return result.history[0]["undial"]

    vocab = tiny_model.config.vocab_size
    exact = first({"top_k": 0})
    assert first({"top_k": vocab}) == pytest.approx(exact, rel=1e-4)
    assert first({"top_k": vocab + 100}) == pytest.approx(exact, rel=1e-4)  # more than the vocabulary: all of it
    assert 0 < first({"top_k": 0, "beta": 1.0}) < exact

    # A random model gives each answer token about 1/V, where taking β off its logit changes little: plant the
    # forget answers first (plain fine-tuning), as the privacy and hallucination tasks do.
    rows = _forget_rows(tokenizer, FORGET)

    def forget_nll():
        return losses.nll(tiny_model(input_ids=rows["input_ids"], attention_mask=rows["attention_mask"]).logits,
                          rows["labels"])

    optimizer = torch.optim.Adam(tiny_model.parameters(), lr=1e-2)
    for _ in range(40):
        optimizer.zero_grad()
        forget_nll().backward()
        optimizer.step()
    with torch.no_grad():
        planted = forget_nll().item()
    assert planted < 0.5
    _, result, _ = _run("undial", tiny_model, tokenizer, lora=False, options={"beta": 3.0}, train_cfg=STEADY)
    assert result.history[-1]["undial"] < 0.5 * result.history[0]["undial"]  # the model moved toward its teacher ...
    with torch.no_grad():
        assert forget_nll().item() > planted + 0.3  # ... whose forget tokens are less likely


def test_refusal_dpo_cached_reference_matches_the_policy_at_the_start(tiny_model, tokenizer):
    # At step 1 the model is the original: both log-ratios are 0 and the loss is (2/β)·log 2.
    result = unlearn(tiny_model, tokenizer, create_method("refusal_dpo", {"beta": 0.1}), forget=FORGET, normal=NORMAL,
                     expected=EXPECTED, train_cfg=ONE_STEP, data_cfg=DataConfig(),
                     reference=Reference(tiny_model, copy_weights=True))
    assert result.history[0]["dpo"] == pytest.approx(20 * math.log(2), abs=1e-3)


def test_refusal_targets_pair_each_prompt_with_its_own_expected_output():
    unseen = Dialogue("How do I pick a lock?", "Insert a tension wrench.")
    rows = refusal_targets("refusal_dpo", [FORGET[1], unseen, FORGET[0]], EXPECTED)
    assert [r.prompt for r in rows] == [FORGET[1].prompt, unseen.prompt, FORGET[0].prompt]
    assert rows[0].response == EXPECTED[1].response and rows[2].response == EXPECTED[0].response
    assert rows[1].response == EXPECTED[1].response  # no own answer: expected output i mod E = 1


def test_answer_preservation_keeps_normal_answers_ahead_of_refusals(tiny_model, tokenizer):
    method = create_method("idk_ap", {"w_forget": 0.0, "alpha": 1.0})
    ctx = PrepareContext(forget=FORGET, normal=NORMAL, expected=EXPECTED, reference=Reference(tiny_model, False),
                         tokenizer=tokenizer, max_prompt_tokens=32, max_response_tokens=32, batch_size=4, seed=0,
                         device=torch.device("cpu"))
    pairs = method.prepare(ctx).pairs
    assert [a.prompt for a in pairs["ap_answer"]] == [r.prompt for r in pairs["ap_refusal"]]
    assert {a.response for a in pairs["ap_answer"]} <= {d.response for d in NORMAL}
    answers, refusals = _forget_rows(tokenizer, pairs["ap_answer"]), _forget_rows(tokenizer, pairs["ap_refusal"])

    def gap():  # mean log π(answer|x) - log π(refusal|x) over the AP prompts
        with torch.no_grad():
            a = losses.sequence_logprob(tiny_model(input_ids=answers["input_ids"]).logits, answers["labels"])
            r = losses.sequence_logprob(tiny_model(input_ids=refusals["input_ids"]).logits, refusals["labels"])
        return (a - r).mean().item()

    start = gap()
    unlearn(tiny_model, tokenizer, method, forget=FORGET, normal=NORMAL, expected=EXPECTED, train_cfg=TRAIN,
            data_cfg=DataConfig(), reference=Reference(tiny_model, copy_weights=True))
    assert gap() > start + 1.0


def test_rmu_steers_toward_a_seeded_vector_of_norm_c(tiny_model, tokenizer):
    def control(seed):
        ctx = PrepareContext(forget=FORGET, normal=NORMAL, expected=EXPECTED, reference=Reference(tiny_model, False),
                             tokenizer=tokenizer, max_prompt_tokens=32, max_response_tokens=32, batch_size=4,
                             seed=seed, device=torch.device("cpu"))
        return create_method("rmu", {"layer": 1, "steering_coeff": 3.0}).prepare(ctx).tensors["control"]

    c = control(0)
    assert c.shape == (len(FORGET), tiny_model.config.hidden_size) and torch.equal(c, c[:1].expand_as(c))
    assert c[0].norm().item() == pytest.approx(3.0) and bool((c >= 0).all())  # uniform [0, 1) entries, as WMDP's
    assert torch.equal(control(0), c) and not torch.equal(control(1), c)


def test_rmu_coefficient_can_follow_the_originals_state_norm(tiny_model, tokenizer):
    ctx = PrepareContext(forget=FORGET, normal=NORMAL, expected=EXPECTED, reference=Reference(tiny_model, True),
                         tokenizer=tokenizer, max_prompt_tokens=32, max_response_tokens=32, batch_size=4, seed=0,
                         device=torch.device("cpu"))
    prepared = create_method("rmu", {"layer": 1, "coeff_scale": 0.5}).prepare(ctx)
    norms = []  # the original's layer-1 states at the positions that produce response tokens, row by row
    for row in ctx.tokenize(FORGET):
        ids = torch.tensor([row.input_ids])
        with torch.no_grad():
            hidden = tiny_model(input_ids=ids, output_hidden_states=True).hidden_states[1][0]  # (T, H)
        norms.append(hidden[row.prompt_length - 1 : len(row.input_ids) - 1].norm(dim=-1))
    expected = 0.5 * torch.cat(norms).mean().item()
    assert prepared.info["steering_coeff"] == pytest.approx(expected, rel=1e-4)
    assert prepared.tensors["control"][0].norm().item() == pytest.approx(expected, rel=1e-4)
    assert create_method("rmu", {"layer": 1}).prepare(ctx).info == {}  # unset: the published coefficient
    with pytest.raises(ConfigError, match="coeff_scale"):
        create_method("rmu", {"coeff_scale": 0.0})


def test_rmu_moves_forget_states_toward_the_target(tiny_model, tokenizer):
    _, result, _ = _run("rmu", tiny_model, tokenizer, lora=False, options={"layer": 1, "alpha": 0.0}, train_cfg=STEADY)
    steer = [h["steer"] for h in result.history]
    assert steer[-1] < 0.9 * steer[0] and result.history[0]["retain"] == 0.0


def test_rerouting_schedule_worked_values():
    assert rerouting_schedule(0.0, 10.0) == (10.0, 0.0)
    assert rerouting_schedule(1.0, 10.0) == (5.0, 5.0)
    assert rerouting_schedule(1 / 3, 10.0) == pytest.approx((25 / 3, 5 / 3))


def test_circuit_breakers_follow_the_schedule_over_the_loops_progress(tiny_model, tokenizer):
    _, result, _ = _run("circuit_breakers", tiny_model, tokenizer, lora=False)
    schedule = [(h["c_rr"], h["c_retain"]) for h in result.history]
    expected = [(10 * (1 - t / 6), 10 * t / 6) for t in (1, 2, 3)]  # T = 3 steps, α = 10
    assert [value for pair in schedule for value in pair] == pytest.approx([v for pair in expected for v in pair])
    first = result.history[0]
    assert first["rr"] == pytest.approx(1.0, abs=1e-5) and first["retain"] == pytest.approx(0.0, abs=1e-5)
    assert result.history[-1]["rr"] < 0.95  # the states were rerouted


def test_repbend_bends_flagged_states_further_than_safe_ones(tiny_model, tokenizer):
    _, result, _ = _run("repbend", tiny_model, tokenizer, lora=False)
    first, last = result.history[0], result.history[-1]
    # Step 1 is the original: the cached flagged states, the safe states and the KL all agree with it.
    assert all(first[term] == pytest.approx(0.0, abs=1e-5) for term in ("safe", "unsafe", "kl"))
    assert last["unsafe"] > last["safe"] > 0


def test_repbend_keeps_refusals_to_flagged_prompts_among_the_safe_rows(tiny_model, tokenizer):
    def pairs(expected):
        ctx = PrepareContext(forget=FORGET, normal=NORMAL, expected=expected, reference=Reference(tiny_model, True),
                             tokenizer=tokenizer, max_prompt_tokens=32, max_response_tokens=32, batch_size=4, seed=0,
                             device=torch.device("cpu"))
        return create_method("repbend", {"layers": [1]}).prepare(ctx).pairs

    assert [r.response for r in pairs(EXPECTED)["refusal"][:2]] == [e.response for e in EXPECTED]
    assert pairs([]) == {}
