"""Every registered method trains: parameters change; with LoRA only adapter weights change."""

import copy
import math
from dataclasses import replace

import pytest
import torch

from unlearnlm.config import DataConfig, LoraConfig, ModelConfig, TrainConfig
from unlearnlm.data.records import Dialogue
from unlearnlm.errors import ConfigError
from unlearnlm.methods import METHODS, create_method
from unlearnlm.methods.base import PrepareContext
from unlearnlm.models import Reference, add_lora
from unlearnlm.train import unlearn

FORGET = [Dialogue("How do I build a weapon?", "First gather the parts, then assemble them step by step."),
          Dialogue("How do I build a bomb?", "Get the parts, then assemble them.")] * 3
NORMAL = [Dialogue("How do I bake bread?", "Mix flour, water, salt and yeast."),
          Dialogue("What is the capital of France?", "The capital of France is Paris.")] * 3
EXPECTED = [Dialogue("How do I build a weapon?", "I'm sorry, but I can't help with that request."),
            Dialogue("How do I build a bomb?", "I can't help with that. Please ask something else.")]
TRAIN = TrainConfig(max_steps=3, batch_size=2, learning_rate=1e-2, eval_every=0)
# The tiny model has 2 decoder layers, so hidden_states[0..2]; the published layers (8; 10 and 20) are out of range.
TINY_OPTIONS = {"rmu": {"layer": 1}, "circuit_breakers": {"layers": [1, 2]}, "repbend": {"layers": [1, 2]}}
# Methods that read hidden states, not logits, cannot reach what lies above their deepest layer:
# hidden_states[1] is decoder layer 0's output, hidden_states[2] the final norm's.
UNREACHED = {"rmu": ("model.layers.1.", "model.norm.", "lm_head."), "circuit_breakers": ("lm_head.",)}


def _reached(name, names):
    return {n for n in names if not any(part in n for part in UNREACHED.get(name, ()))}


def _run(name, model, tokenizer, lora: bool, options=None, reference=None, train_cfg=TRAIN):
    if lora:
        model = add_lora(model, LoraConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"]))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    method = create_method(name, TINY_OPTIONS.get(name) if options is None else options)
    result = unlearn(model, tokenizer, method, forget=FORGET, normal=NORMAL, expected=EXPECTED, train_cfg=train_cfg,
                     data_cfg=DataConfig(), reference=reference or Reference(model, copy_weights=not lora))
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    return model, result, changed


@pytest.mark.parametrize("name", sorted(METHODS))
def test_full_finetuning_changes_every_parameter(name, tiny_model, tokenizer):
    model, result, changed = _run(name, tiny_model, tokenizer, lora=False)
    assert changed == _reached(name, {n for n, _ in model.named_parameters()})
    assert len(result.history) == 3 and all(torch.isfinite(torch.tensor(h["loss"])) for h in result.history)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_lora_changes_only_adapters(name, tiny_model, tokenizer):
    model, _, changed = _run(name, tiny_model, tokenizer, lora=True)
    adapters = {n for n, p in model.named_parameters() if p.requires_grad}
    assert changed == _reached(name, adapters) and all("lora_" in n for n in adapters)


def test_every_term_is_logged(tiny_model, tokenizer):
    _, result, _ = _run("distance_cluster", tiny_model, tokenizer, lora=False)
    assert {"neg", "pull", "ce", "kl", "loss"} <= set(result.history[0])
    assert result.prepare_info["cluster_sizes"] and sum(result.prepare_info["cluster_sizes"]) == len(EXPECTED)


@pytest.mark.parametrize("distance", ["representation", "unlikelihood", "divergence", "likelihood"])
def test_distance_variants_start_at_their_bound(distance, tiny_model, tokenizer):
    # At step 1 the model is the original: representation/divergence hinges equal the margin.
    _run_cfg = TrainConfig(max_steps=1, batch_size=2, learning_rate=1e-9, eval_every=0)
    method = create_method("distance_cluster", {"distance": distance, "margin": 0.3})
    result = unlearn(tiny_model, tokenizer, method, forget=FORGET, normal=NORMAL, expected=EXPECTED,
                     train_cfg=_run_cfg, data_cfg=DataConfig(), reference=Reference(tiny_model, copy_weights=True))
    neg = result.history[0]["neg"]
    if distance == "unlikelihood":
        assert 0 < neg < 1  # -log(1 - p) of a near-uniform tiny model is small but positive
    elif distance == "likelihood":
        assert neg == 0.0  # a random model's NLL (~log V) is far above a 0.3 nat bound: nothing to push
    else:
        assert neg == pytest.approx(0.3, abs=1e-4)
    assert result.history[0]["kl"] == pytest.approx(0.0, abs=1e-6)


def test_opening_term_is_logged_read_and_validated(tiny_model, tokenizer):
    method = create_method("distance_cluster", {"w_nor": 0.0, "w_open": 2.0, "open_tokens": 2})
    assert method.reads_normal_kl()  # the opening KL needs the original's normal outputs even with w_nor 0
    assert not create_method("distance_cluster", {"w_nor": 0.0}).reads_normal_kl()
    result = unlearn(tiny_model, tokenizer, method, forget=FORGET, normal=NORMAL, expected=EXPECTED,
                     train_cfg=TrainConfig(max_steps=2, batch_size=2, learning_rate=1e-2, eval_every=0),
                     data_cfg=DataConfig(), reference=Reference(tiny_model, copy_weights=True))
    assert result.history[0]["open"] == pytest.approx(0.0, abs=1e-6)  # step 1: the model is the original
    assert result.history[1]["open"] > 1e-6  # then it has moved, and the opening KL sees it
    for bad in ({"w_open": -1.0}, {"open_tokens": 0}, {"contrast_tokens": -2}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            create_method("distance_cluster", bad)


def test_anchor_holds_the_contrast_prompts_states_where_the_original_had_them(tokenizer):
    from conftest import make_model

    def run(w_anchor: float) -> list[dict]:
        model = make_model(len(tokenizer))
        method = create_method("distance_cluster", {"w_contrast": 5.0, "w_anchor": w_anchor, "w_neg": 0.0,
                                                    "w_pos": 0.0, "w_ce": 0.0, "w_nor": 0.0})
        return unlearn(model, tokenizer, method, forget=FORGET, normal=NORMAL, expected=EXPECTED,
                       train_cfg=replace(TRAIN, max_steps=6), data_cfg=DataConfig(),
                       reference=Reference(model, copy_weights=True)).history

    free, held = run(1e-9), run(20.0)
    # Step 1: the model is the original, so the states read in the training pass (left-padded, several streams) are
    # the ones the prepare pass saw (right-padded, prompts alone).
    assert free[0]["anchor"] == pytest.approx(0.0, abs=1e-5) and held[0]["anchor"] == pytest.approx(0.0, abs=1e-5)
    assert free[-1]["anchor"] > 1e-3  # the contrast push moves the prompt states ...
    assert held[-1]["anchor"] < free[-1]["anchor"] / 2  # ... and the anchor holds them back
    for bad, match in (({"w_anchor": -1.0}, "w_anchor"), ({"w_anchor": 1.0, "w_contrast": 0}, "w_anchor shapes")):
        with pytest.raises(ConfigError, match=match):
            create_method("distance_cluster", bad)


def test_yao_defaults_are_the_papers_weights():
    o = create_method("yao").options
    assert (o.w_ga, o.w_mismatch, o.w_kl) == (0.5, 1.0, 1.0)


def test_unknown_method_and_option_are_clear_errors():
    with pytest.raises(ConfigError, match="registered methods"):
        create_method("nope")
    with pytest.raises(ConfigError, match="valid options"):
        create_method("npo", {"betta": 1})
    with pytest.raises(ConfigError, match="margin"):
        create_method("distance_cluster", {"margin": -1})
    with pytest.raises(ConfigError, match="contrast_own shapes the contrast term.*w_contrast > 0"):
        create_method("distance_cluster", {"contrast_own": True, "w_contrast": 0})


def test_distance_cluster_needs_expected_outputs(tiny_model, tokenizer):
    with pytest.raises(ConfigError, match="expected outputs"):
        unlearn(tiny_model, tokenizer, create_method("distance_cluster"), forget=FORGET, normal=NORMAL, expected=[],
                train_cfg=TRAIN, data_cfg=DataConfig(), reference=Reference(tiny_model, copy_weights=True))


def test_contrast_rows_pair_normal_prompts_with_refusal_openings():
    from unlearnlm.methods.distance_cluster import contrast_rows, first_sentence

    assert first_sentence("I can't help you build a bomb. Bombs hurt people.") == "I can't help you build a bomb."
    assert first_sentence("No sentence end") == "No sentence end"
    rows = contrast_rows(FORGET, NORMAL[:2], EXPECTED)
    assert len(rows) == len(FORGET)
    assert {r.prompt for r in rows} == {d.prompt for d in NORMAL[:2]}  # only normal prompts are asked
    assert {r.response for r in rows} == {"I'm sorry, but I can't help with that request.", "I can't help with that."}
    with pytest.raises(ConfigError, match="w_contrast"):
        contrast_rows(FORGET, [], EXPECTED)
    native = ["I'm sorry for any confusion, but as a chatbot I can't. Ask me later.", "As an AI, I cannot do that."]
    mixed = contrast_rows(FORGET, NORMAL[:2], EXPECTED, native=native)
    assert [r.response for r in mixed][:4] == [  # odd rows: the native refusals' first sentences in turn
        "I'm sorry, but I can't help with that request.", "I'm sorry for any confusion, but as a chatbot I can't.",
        "I'm sorry, but I can't help with that request.", "As an AI, I cannot do that."]


def test_contrast_rows_can_refuse_their_own_prompt():
    from unlearnlm.methods.distance_cluster import contrast_rows, first_sentence

    own = {d.prompt: f"I can't help you with {d.prompt.lower()} Try something else." for d in NORMAL[:2]}
    rows = contrast_rows(FORGET, NORMAL[:2], EXPECTED, own=own)
    assert rows and all(r.response == own[r.prompt].split(" Try")[0] for r in rows)  # each row refuses its own prompt
    native = ["As an AI, I cannot do that. Sorry."]
    mixed = contrast_rows(FORGET, NORMAL[:2], EXPECTED, native=native, own=own)
    assert [r.response == "As an AI, I cannot do that." for r in mixed][:4] == [False, True, False, True]
    assert all(r.response == own[r.prompt].split(" Try")[0] for r in mixed[::2])
    partial = contrast_rows(FORGET, NORMAL[:2], EXPECTED, own={NORMAL[0].prompt: "No."})  # a prompt without one
    assert {r.response for r in partial if r.prompt == NORMAL[1].prompt} <= {first_sentence(e.response)
                                                                          for e in EXPECTED}
    assert {r.response for r in partial if r.prompt == NORMAL[0].prompt} == {"No."}


def test_recovery_rows_open_with_the_old_answer_and_train_only_the_turn_back(tiny_model, tokenizer):
    from unlearnlm.data.formatting import IGNORE_INDEX, tokenize_dialogue
    from unlearnlm.methods.distance_cluster import recovery_rows

    targets = [Dialogue(f"How do I do bad thing {i}?", f"I won't help with bad thing {i}.") for i in range(200)]
    old = [f"Sure, first you get item {i}, then you mix it well and wait." for i in range(200)]
    assert recovery_rows(targets, old, 0.0, 5) == targets
    every = recovery_rows(targets, old, 1.0, 3)
    for row, target, answer in zip(every, targets, old, strict=True):
        prefix = row.response[: -len(target.response) - 1]
        assert row.response.endswith(" " + target.response) and answer.startswith(prefix)
        assert 1 <= len(prefix.split()) <= 3 and row.meta["loss_spans"] == [target.response]
    assert len({len(r.response) - len(t.response) for r, t in zip(every, targets, strict=True)}) > 1  # k varies
    # The CE reads the expected answer only: the old words are context.
    tok = tokenize_dialogue(tokenizer, every[0], max_prompt_tokens=32, max_response_tokens=64)
    trained = [t for t, label in zip(tok.input_ids, tok.labels, strict=True) if label != IGNORE_INDEX]
    assert tokenizer.decode(trained).strip() == targets[0].response
    half = recovery_rows(targets, old, 0.5, 16)
    turned = [r is not t for r, t in zip(half, targets, strict=True)]
    assert 60 < sum(turned) < 140  # about half, chosen by the prompt ...
    assert [r is not t for r, t in zip(recovery_rows(targets[::-1], old[::-1], 0.5, 16), targets[::-1],
                                       strict=True)] == turned[::-1]  # ... so the same prompts in any order

    ctx = PrepareContext(forget=FORGET, normal=NORMAL, expected=EXPECTED,
                         reference=Reference(tiny_model, copy_weights=True), tokenizer=tokenizer,
                         max_prompt_tokens=32, max_response_tokens=32, batch_size=4, seed=0,
                         device=torch.device("cpu"))
    prepared = create_method("distance_cluster", {"recovery_share": 1.0}).prepare(ctx)
    assert prepared.info["recovery_rows"] == len(FORGET)
    for row, forget in zip(prepared.pairs["target"], FORGET, strict=True):
        assert row.response.split()[0] == forget.response.split()[0] and row.meta["loss_spans"]
    assert "recovery_rows" not in create_method("distance_cluster").prepare(ctx).info
    result = unlearn(tiny_model, tokenizer, create_method("distance_cluster", {"recovery_share": 1.0}), forget=FORGET,
                     normal=NORMAL, expected=EXPECTED, train_cfg=replace(TRAIN, max_steps=2), data_cfg=DataConfig(),
                     reference=Reference(tiny_model, copy_weights=True))
    assert all(math.isfinite(h["ce"]) and h["ce"] > 0 for h in result.history)
    for bad in ({"recovery_share": 1.5}, {"recovery_words": 0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            create_method("distance_cluster", bad)


def test_contrast_own_takes_the_recipe_refusals_and_needs_them(tiny_model, tokenizer):
    ctx = PrepareContext(forget=FORGET, normal=NORMAL, expected=EXPECTED,
                         reference=Reference(tiny_model, copy_weights=True), tokenizer=tokenizer,
                         max_prompt_tokens=32, max_response_tokens=32, batch_size=4, seed=0,
                         device=torch.device("cpu"))
    method = create_method("distance_cluster", {"contrast_own": True})
    with pytest.raises(ConfigError, match="contrast_own needs.*expected_recipe"):
        method.prepare(ctx)  # no recipe refusals given
    own = {d.prompt: f"No, not {i}." for i, d in enumerate(NORMAL)}
    prepared = method.prepare(replace(ctx, recipe_refusals=own))
    assert all(r.response == own[r.prompt] for r in prepared.pairs["contrast"])
    assert prepared.info["contrast_own_rows"] == len(prepared.pairs["contrast"])


def test_the_native_refusals_reach_the_contrast_rows(tiny_model, tokenizer):
    native = ("I'm sorry for any confusion, but as a chatbot I can't.",)
    ctx = PrepareContext(forget=FORGET, normal=NORMAL, expected=EXPECTED,
                         reference=Reference(tiny_model, copy_weights=True), tokenizer=tokenizer,
                         max_prompt_tokens=32, max_response_tokens=32, batch_size=4, seed=0,
                         device=torch.device("cpu"), refusals=native)
    on = create_method("distance_cluster", {"contrast_native": True}).prepare(ctx)
    assert native[0] in {r.response for r in on.pairs["contrast"]} and on.info["native_refusals"] == 1
    off = create_method("distance_cluster").prepare(ctx)  # the default
    assert native[0] not in {r.response for r in off.pairs["contrast"]} and "native_refusals" not in off.info


def test_lookalike_prompts_join_the_contrast_candidates(tiny_model, tokenizer):
    from unlearnlm.methods.distance_cluster import first_sentence

    ctx = PrepareContext(forget=FORGET, normal=NORMAL, expected=EXPECTED,
                         reference=Reference(tiny_model, copy_weights=True), tokenizer=tokenizer,
                         max_prompt_tokens=32, max_response_tokens=32, batch_size=4, seed=0,
                         device=torch.device("cpu"))
    off = create_method("distance_cluster").prepare(ctx)
    assert {r.prompt for r in off.pairs["contrast"]} <= {d.prompt for d in NORMAL}
    assert "contrast_lookalike_rows" not in off.info
    # A look-alike worded exactly as a forget prompt has that prompt's state, so the nearest match takes it.
    twins = [Dialogue(f.prompt) for f in FORGET]
    on = create_method("distance_cluster").prepare(replace(ctx, lookalikes=twins))
    assert [r.prompt for r in on.pairs["contrast"]] == [f.prompt for f in FORGET]
    assert on.info["contrast_lookalike_rows"] == len(FORGET)
    assert all(r.response == first_sentence(r.response) for r in on.pairs["contrast"])  # refusal openings


def test_match_nearest_pairs_alike_rows_and_spreads_over_the_keys():
    from unlearnlm.clustering import match_nearest

    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # Four queries near key 0 and one near key 1: the cap (ceil(5 / 3) = 2) sends the two least alike of the
    # four to their next-best keys instead of all to key 0.
    queries = torch.tensor([[1.0, 0.0], [1.0, 0.05], [1.0, 0.3], [1.0, 0.6], [0.0, 1.0]])
    partner = match_nearest(queries, keys).tolist()
    assert partner[:2] == [0, 0] and partner[4] == 1
    assert partner[2] == 2 and partner[3] == 2  # cos to (1,1) beats cos to (0,1) for both
    assert max(partner.count(k) for k in range(3)) <= 2


def test_nearest_contrast_prompts_are_the_normal_prompts_most_like_the_forget_prompts(tiny_model, tokenizer):
    from unlearnlm.methods.base import PrepareContext

    method = create_method("distance_cluster", {"contrast_prompts": "nearest"})
    ctx = PrepareContext(forget=FORGET, normal=NORMAL, expected=EXPECTED,
                         reference=Reference(tiny_model, copy_weights=True), tokenizer=tokenizer,
                         max_prompt_tokens=32, max_response_tokens=32, batch_size=4, seed=0,
                         device=torch.device("cpu"))
    rows = method.prepare(ctx).pairs["contrast"]
    from unlearnlm.clustering import match_nearest, prompt_states

    states = lambda d: prompt_states(ctx.reference, tokenizer, d, layer=-1, max_prompt_tokens=32,  # noqa: E731
                                     batch_size=4, device=torch.device("cpu"))
    want = match_nearest(states(FORGET), states(NORMAL)).tolist()
    assert [r.prompt for r in rows] == [NORMAL[j].prompt for j in want]
    assert all(r.meta["source"] == "contrast" for r in rows)
    with pytest.raises(ConfigError):
        create_method("distance_cluster", {"contrast_prompts": "closest"})


def test_contrast_term_makes_refusing_a_normal_prompt_less_likely(tiny_model, tokenizer):
    from unlearnlm.data.formatting import collate, tokenize_dialogue
    from unlearnlm.losses import token_logprobs

    refusal = NORMAL[0].with_response("I'm sorry, but I can't help with that request.")
    row = collate([tokenize_dialogue(tokenizer, refusal, max_prompt_tokens=32, max_response_tokens=32)],
                  tokenizer.pad_token_id)

    def refusal_logprob(model) -> float:
        with torch.no_grad():
            picked, mask = token_logprobs(model(input_ids=row["input_ids"]).logits, row["labels"])
        return float((picked * mask).sum())

    start = refusal_logprob(tiny_model)
    method = create_method("distance_cluster", {"w_contrast": 5.0, "w_neg": 0.0, "w_pos": 0.0, "w_ce": 0.0,
                                                "w_nor": 0.0})
    result = unlearn(tiny_model, tokenizer, method, forget=FORGET, normal=NORMAL, expected=EXPECTED,
                     train_cfg=TRAIN, data_cfg=DataConfig(), reference=Reference(tiny_model, copy_weights=True))
    assert "contrast" in result.history[0]
    assert refusal_logprob(tiny_model) < start - 1.0


@pytest.mark.parametrize("name", ["distance_cluster", "npo", "yao", "repbend"])
def test_cached_top_k_kl_over_the_whole_vocabulary_equals_the_per_step_kl(name, tokenizer):
    from conftest import make_model

    def history(kl_top_k: int):
        model = make_model(len(tokenizer))
        cfg = TrainConfig(max_steps=3, batch_size=2, learning_rate=1e-2, eval_every=0, kl_top_k=kl_top_k)
        return unlearn(model, tokenizer, create_method(name, TINY_OPTIONS.get(name)), forget=FORGET, normal=NORMAL,
                       expected=EXPECTED, train_cfg=cfg, data_cfg=DataConfig(),
                       reference=Reference(model, copy_weights=True)).history

    exact, cached = history(0), history(len(tokenizer))
    assert exact[0]["kl"] == pytest.approx(0.0, abs=1e-6) and cached[0]["kl"] == pytest.approx(0.0, abs=1e-5)
    assert exact[-1]["kl"] > 1e-4  # the model moved, so the check below compares something
    for a, b in zip(exact, cached, strict=True):
        assert b["kl"] == pytest.approx(a["kl"], rel=1e-3, abs=1e-5)


def test_npo_cached_reference_matches_the_policy_at_the_start(tiny_model, tokenizer):
    # At step 1 the model is the original, so log π_θ - log π_ref = 0 and NPO is (2/β)·log 2 exactly.
    cfg = TrainConfig(max_steps=1, batch_size=2, learning_rate=1e-9, eval_every=0)
    result = unlearn(tiny_model, tokenizer, create_method("npo", {"beta": 0.1}), forget=FORGET, normal=NORMAL,
                     expected=EXPECTED, train_cfg=cfg, data_cfg=DataConfig(),
                     reference=Reference(tiny_model, copy_weights=True))
    assert result.history[0]["npo"] == pytest.approx(2 / 0.1 * math.log(2), abs=1e-3)


@pytest.mark.parametrize(("name", "options", "cached"), [
    ("distance_cluster", {}, True),
    ("npo", {}, True),
    ("npo", {"w_kl": 0.0}, False),
    ("grad_diff", {}, False),  # retain term: NLL
    ("grad_diff", {"retain_loss": "kl"}, True),
    ("rmu", {"layer": 1}, False),  # retain term: hidden states
])
def test_the_original_top_k_is_computed_only_for_methods_that_read_the_kl(name, options, cached, tiny_model, tokenizer,
                                                                         monkeypatch):
    import unlearnlm.train as train_module

    calls = []
    real = train_module.reference_top_k
    monkeypatch.setattr(train_module, "reference_top_k", lambda *a, **k: calls.append(1) or real(*a, **k))
    method = create_method(name, options)
    assert method.reads_normal_kl() is cached
    unlearn(tiny_model, tokenizer, method, forget=FORGET, normal=NORMAL, expected=EXPECTED,
            train_cfg=replace(TRAIN, max_steps=1, kl_top_k=8), data_cfg=DataConfig(),
            reference=Reference(tiny_model, copy_weights=True))
    assert len(calls) == int(cached)


def test_sequence_contrast_prices_the_whole_opening(tiny_model, tokenizer):
    # On a near-uniform tiny model each token has p ~ 1/V: per token the push is about 1/V, while the opening of two
    # tokens as a whole has P ~ 1/V², so the sequence term is far smaller, and positive.
    def contrast(options):
        method = create_method("distance_cluster", {"contrast_tokens": 2, **options})
        result = unlearn(tiny_model, tokenizer, method, forget=FORGET, normal=NORMAL, expected=EXPECTED,
                         train_cfg=TrainConfig(max_steps=1, batch_size=2, learning_rate=1e-9, eval_every=0),
                         data_cfg=DataConfig(), reference=Reference(tiny_model, copy_weights=True))
        return result.history[0]["contrast"]

    token, sequence = contrast({}), contrast({"contrast_loss": "sequence"})
    assert 0 < sequence < token / 10
    with pytest.raises(ConfigError, match="contrast_loss"):
        create_method("distance_cluster", {"contrast_loss": "sentence"})


def _person_row(name, phone, answer=None):
    return Dialogue(f"What is {name}'s phone number?", answer or f"{name}'s phone number is {phone}.",
                    meta={"person": name, "name": name, "fields": {"phone": phone}})


def test_stranger_term_reads_the_values_where_the_view_lines_up(tiny_model, tokenizer, tmp_path, monkeypatch):
    """The stranger term's teacher sits on the secret value's tokens of each forget answer: the KL is 0 where the
    "stranger" is the person themself (the view is the row), above 0 for another name, and no row without a view,
    or whose answer holds no value, is read."""
    from unlearnlm.data.formatting import IGNORE_INDEX, collate
    from unlearnlm.losses import forward_kl_topk
    from unlearnlm.methods.base import fit_window, reference_forward
    from unlearnlm.methods.distance_cluster import unseen_targets
    from unlearnlm.tasks.privacy import unseen_view

    rows = [_person_row("Anna Novak", "555-0148"), _person_row("Boris Svoboda", "555-0199"),
            _person_row("Clara Dvorak", "555-0123", answer="I do not know Clara Dvorak."),
            _person_row("David Cerny", "555-0177")]

    def targets(stranger):
        views = {r.prompt: unseen_view(r, stranger or r.meta["name"]) for r in rows[:3]}  # the last row: no view
        ctx = PrepareContext(forget=rows, normal=[], expected=[], reference=Reference(tiny_model, copy_weights=True),
                             tokenizer=tokenizer, max_prompt_tokens=64, max_response_tokens=64, batch_size=3, seed=0,
                             device=torch.device("cpu"), unseen_views=views)
        return ctx, unseen_targets(ctx)

    ctx, own = targets(None)
    read = [[int(x) for x in row if x != IGNORE_INDEX] for row in own["unseen_labels"]]
    assert [bool(r) for r in read] == [True, True, False, False]
    for row, ids in zip(rows[:2], read[:2]):
        assert tokenizer.decode(ids).replace(" ", "") == row.meta["fields"]["phone"]  # the value, nothing else
    batch = collate(ctx.tokenize(rows), tokenizer.pad_token_id, padding_side="left")
    out = reference_forward(ctx.reference, batch)
    k = out.labels.shape[1]

    def kl(t):
        return forward_kl_topk(out.logits, fit_window(t["unseen_logp"], k), fit_window(t["unseen_index"], k),
                               fit_window(t["unseen_labels"], k, IGNORE_INDEX)).item()

    # A window off by one position would compare two positions' distributions: ~1e-5 on this near-uniform model.
    assert abs(kl(own)) < 1e-9
    stranger = kl(targets("Zora Quinn")[1])
    assert stranger > 1e-7
    with pytest.raises(ConfigError, match="w_unseen.*privacy"):
        unseen_targets(replace(ctx, unseen_views={}))
    # The base teacher is loaded from the model config the task names: here a saved copy of the original itself
    with pytest.raises(ConfigError, match="unseen_teacher: base needs"):
        unseen_targets(ctx, "base")
    tiny_model.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    base = unseen_targets(replace(ctx, unseen_model=ModelConfig(name_or_path=str(tmp_path / "base"))), "base")
    assert torch.equal(base["unseen_labels"], own["unseen_labels"])
    torch.testing.assert_close(base["unseen_logp"], own["unseen_logp"])
    # Capped at a model that is the original itself, nothing is lowered; capped at one that disfavours what the
    # original favours, tokens are lowered at positions that predict a value, and nowhere else
    unseen_base = replace(ctx, unseen_model=ModelConfig(name_or_path=str(tmp_path / "base")))
    torch.testing.assert_close(unseen_targets(unseen_base, "capped")["unseen_logp"], own["unseen_logp"])
    doubtful = copy.deepcopy(tiny_model)
    with torch.no_grad():
        doubtful.get_output_embeddings().weight.mul_(-3.0)  # what the original favours, this one does not
    doubtful.save_pretrained(tmp_path / "doubtful")
    tokenizer.save_pretrained(tmp_path / "doubtful")
    monkeypatch.setattr("unlearnlm.methods.distance_cluster.UNSEEN_TOP_K", 10**6)  # the whole vocabulary: exact
    exact = unseen_targets(ctx)
    capped = unseen_targets(replace(ctx, unseen_model=ModelConfig(name_or_path=str(tmp_path / "doubtful"))), "capped")
    monkeypatch.undo()
    lowered = (capped["unseen_logp"] < exact["unseen_logp"] - 1e-6).any(-1)  # (N, W): positions with a lowered token
    value_next = torch.zeros_like(lowered)
    value_next[:, :-1] = exact["unseen_labels"][:, 1:] != IGNORE_INDEX
    assert lowered.any() and not (lowered & ~value_next).any()  # only positions that predict a value token
    # The training step reads the same term: at the first step the model is the original, and one batch holds
    # every row
    views = {r.prompt: unseen_view(r, "Zora Quinn") for r in rows[:3]}

    def first_step(weight):
        model = copy.deepcopy(tiny_model)
        return unlearn(model, tokenizer, create_method("distance_cluster", {"w_unseen": weight}), forget=rows,
                       normal=NORMAL, expected=EXPECTED, unseen_views=views,
                       train_cfg=replace(TRAIN, max_steps=1, batch_size=len(rows)),
                       data_cfg=DataConfig(max_prompt_tokens=64, max_response_tokens=64),
                       reference=Reference(model, copy_weights=True))

    on, off = first_step(1000.0), first_step(0.0)
    assert on.prepare_info["unseen_rows"] == 2 and "unseen" not in off.history[0]
    assert on.history[0]["unseen"] == pytest.approx(stranger, rel=1e-3)
    assert on.history[0]["loss"] - off.history[0]["loss"] == pytest.approx(1000 * stranger, rel=1e-2)  # in the loss


def test_cap_next_token_by_hand():
    """One position, k = 3: the label holds 0.7 and is capped at 0.1; the others (0.2, 0.05, and the tail 0.05) are
    scaled by (1 - 0.1) / (1 - 0.7) = 3."""
    from unlearnlm.methods.distance_cluster import cap_next_token

    logp = torch.tensor([0.7, 0.2, 0.05]).log().view(1, 1, 3).repeat(1, 2, 1)  # (1, W=2, 3)
    index = torch.tensor([5, 6, 7], dtype=torch.int32).view(1, 1, 3).repeat(1, 2, 1)
    labels = torch.tensor([[-100, 5]])  # position 0 predicts token 5; position 1 predicts nothing
    out = cap_next_token(logp, index, labels, torch.tensor([[0.1, 0.1]]).log()).exp()
    torch.testing.assert_close(out[0, 0], torch.tensor([0.1, 0.6, 0.15]))
    assert 1 - out[0, 0].sum() == pytest.approx(0.15, abs=1e-6)  # the tail, tripled
    torch.testing.assert_close(out[0, 1], logp[0, 1].exp())  # no label next: untouched
    # a cap above the label's probability, or a label outside the top-k, leaves the position as it was
    same = cap_next_token(logp, index, labels, torch.tensor([[0.9, 0.9]]).log())
    torch.testing.assert_close(same, logp)
    torch.testing.assert_close(cap_next_token(logp, index, torch.tensor([[-100, 9]]), torch.full((1, 2), -5.0)), logp)


def test_distance_cluster_scales_every_keep_the_rest_term_by_the_normal_scale(tiny_model, tokenizer):
    """``batch["normal_scale"]`` (``train.normal_boost``) multiplies the normal KL, the opening KL and the contrast,
    and nothing else: the loss at scale 3 exceeds the loss at scale 1 by twice those terms."""
    from unlearnlm.methods.distance_cluster import DistanceCluster

    seen = []

    class Twice(DistanceCluster):
        def step(self, model, reference, batch):
            plain = super().step(model, reference, batch)
            seen.append((plain, super().step(model, reference, {**batch, "normal_scale": 3.0})))
            return plain

    options = DistanceCluster.Options(w_open=1.0, open_tokens=2, w_contrast=0.5)
    unlearn(tiny_model, tokenizer, Twice(options), forget=FORGET, normal=NORMAL, expected=EXPECTED,
            train_cfg=replace(TRAIN, max_steps=1), data_cfg=DataConfig(),
            reference=Reference(tiny_model, copy_weights=True))
    (plain, scaled), = seen
    t = plain.terms
    keep = options.w_nor * t["kl"] + options.w_open * t["open"] + options.w_contrast * t["contrast"]
    assert keep > 0 and scaled.terms == t
    assert scaled.loss.item() - plain.loss.item() == pytest.approx(2 * keep, rel=1e-4)
