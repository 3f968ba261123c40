"""The response-window forward passes give the losses what full-width, right-padded passes gave them."""

import pytest
import torch
from conftest import make_model

from unlearnlm import losses
from unlearnlm.clustering import prompt_states
from unlearnlm.config import LoraConfig, RunConfig
from unlearnlm.data.formatting import IGNORE_INDEX, collate, left_pad_to, tokenize_dialogue
from unlearnlm.data.records import Dialogue
from unlearnlm.errors import ConfigError
from unlearnlm.methods import base
from unlearnlm.methods.base import (
    PrepareContext,
    forward,
    forward_many,
    original_states,
    reference_forward,
    reference_map,
    reference_windows,
    response_window,
)
from unlearnlm.evaluate import normal_data_metrics
from unlearnlm.models import Reference, add_lora
from unlearnlm.scanning import CheckKL, Monitor

ROWS = [Dialogue("How do I bake bread?", "Mix flour, water, salt and yeast, knead and bake."),
        Dialogue("Hi", "Hello!"),
        Dialogue("What is the capital of France and why is it famous?", "Paris.")]


def _tokens(tokenizer, rows=ROWS):
    return [tokenize_dialogue(tokenizer, d, max_prompt_tokens=64, max_response_tokens=32) for d in rows]


def test_left_padding_puts_every_row_end_in_the_last_column(tokenizer):
    toks = _tokens(tokenizer)
    left = collate(toks, tokenizer.pad_token_id, padding_side="left")
    assert (left["attention_mask"][:, -1] == 1).all()
    assert (left["labels"][:, -1] != IGNORE_INDEX).all()
    for row, t in enumerate(toks):  # positions count real tokens only, as in the right-padded row
        n = len(t.input_ids)
        assert left["position_ids"][row, -n:].tolist() == list(range(n))
    # The window covers the longest response and the position before it, and nothing more.
    longest = max(len(t.input_ids) - t.prompt_length for t in toks)
    assert response_window(left["labels"]) == longest + 1
    wide = left_pad_to(left, left["input_ids"].shape[1] + 3, tokenizer.pad_token_id)
    assert torch.equal(wide["labels"][:, 3:], left["labels"]) and (wide["attention_mask"][:, :3] == 0).all()
    with pytest.raises(ValueError, match="padding_side"):
        collate(toks, 0, padding_side="middle")


def test_window_losses_equal_full_right_padded_losses(tiny_model, tokenizer):
    toks = _tokens(tokenizer)
    right = collate(toks, tokenizer.pad_token_id)
    left = collate(toks, tokenizer.pad_token_id, padding_side="left")
    with torch.no_grad():
        full = tiny_model(input_ids=right["input_ids"], attention_mask=right["attention_mask"]).logits  # (B, T, V)
        window = forward(tiny_model, left)
    assert window.logits.shape[1] == response_window(left["labels"]) < full.shape[1]
    torch.testing.assert_close(losses.nll(window.logits, window.labels), losses.nll(full, right["labels"]))
    torch.testing.assert_close(losses.sequence_logprob(window.logits, window.labels),
                               losses.sequence_logprob(full, right["labels"]))


def _read(labels):
    """Positions a loss may read: response tokens and the positions that predict them."""
    response = labels != IGNORE_INDEX
    return response | response.roll(-1, dims=1)


@pytest.mark.parametrize("min_saving", [2.0, 0.0])  # one stacked pass; two passes split by length
def test_one_pass_for_several_streams_equals_one_pass_each(tiny_model, tokenizer, monkeypatch, min_saving):
    monkeypatch.setattr(base, "SPLIT_SAVING", min_saving)
    a = collate(_tokens(tokenizer)[:2], tokenizer.pad_token_id, padding_side="left")
    b = collate(_tokens(tokenizer)[2:], tokenizer.pad_token_id, padding_side="left")
    with torch.no_grad():
        merged = forward_many(tiny_model, {"a": a, "b": b}, hidden_layer=-1)
        for name, batch in {"a": a, "b": b}.items():
            alone = forward(tiny_model, batch, hidden_layer=-1)
            k = alone.labels.shape[1]
            read = _read(alone.labels)
            torch.testing.assert_close(merged[name].last(k).logits[read], alone.logits[read], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(merged[name].last(k).hidden[read], alone.hidden[read], atol=1e-5, rtol=1e-4)
            assert torch.equal(merged[name].last(k).labels, alone.labels)


@pytest.mark.parametrize("lora", [False, True])
def test_the_head_split_per_stream_gives_the_stacked_heads_logits_and_gradients(tokenizer, lora):
    """``forward_many`` applies the LM head to each stream's own window: the stacked pass computes one position of
    logits, and every stream's logits, and the gradients they send back, are those of the stacked head's slices."""
    torch.manual_seed(0)
    model = make_model(len(tokenizer))
    if lora:
        model = add_lora(model, LoraConfig(target_modules=("q_proj", "v_proj")))
    a = collate(_tokens(tokenizer)[:2], tokenizer.pad_token_id, padding_side="left")
    b = collate(_tokens(tokenizer)[2:], tokenizer.pad_token_id, padding_side="left")
    params = [p for p in model.parameters() if p.requires_grad]

    def run(split):
        shapes = []
        hook = model.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.logits.shape)))
        original = base.splits_head
        base.splits_head = original if split else (lambda m: False)
        try:
            out = forward_many(model, {"a": a, "b": b})
        finally:
            base.splits_head = original
            hook.remove()
        loss = losses.nll(out["a"].logits, out["a"].labels) + 0.5 * losses.nll(out["b"].logits, out["b"].labels)
        grads = torch.autograd.grad(loss, params)
        return out, shapes, grads

    split, split_shapes, split_grads = run(True)
    stacked, stacked_shapes, stacked_grads = run(False)
    assert split_shapes[0][1] == 1 < stacked_shapes[0][1]  # the pass itself: one position of logits
    for name, batch in {"a": a, "b": b}.items():
        assert split[name].logits.shape[1] == response_window(batch["labels"])  # the stream's own window
        read = _read(stacked[name].labels)
        torch.testing.assert_close(split[name].logits[read], stacked[name].logits[read], atol=1e-5, rtol=1e-4)
        assert torch.equal(split[name].labels, stacked[name].labels)
    for g, h in zip(split_grads, stacked_grads, strict=True):
        torch.testing.assert_close(g, h, atol=1e-5, rtol=1e-4)


def test_length_split_runs_two_passes_only_where_they_save_enough_positions():
    assert base.length_split([10, 100, 10, 100, 10], min_saving=0.15) == [[0, 2, 4], [1, 3]]  # 230 of 500
    assert base.length_split([90, 100, 95, 100], min_saving=0.15) == [[0, 1, 2, 3]]  # at best 5% saved
    assert base.length_split([90, 100, 95, 100], min_saving=0.0) == [[0], [1, 2, 3]]
    assert base.length_split([7], min_saving=0.0) == [[0]]


@pytest.mark.parametrize("lora", [False, True])
def test_streams_split_by_length_give_one_passs_logits_hidden_states_and_gradients(tokenizer, lora, monkeypatch):
    """Short rows and long rows in two passes, each stream put back together from both (a stream here holds one
    row of each length): the same logits, hidden states and gradients as one stacked pass."""
    torch.manual_seed(0)
    model = make_model(len(tokenizer))
    if lora:
        model = add_lora(model, LoraConfig(target_modules=("q_proj", "v_proj")))
    long = Dialogue("Explain, step by step and in some detail, how a bicycle's gears make climbing a hill easier.",
                    "Lower gears turn the wheel less per pedal stroke, so each stroke needs less force.")
    a = collate(_tokens(tokenizer, [ROWS[1], long]), tokenizer.pad_token_id, padding_side="left")
    b = collate(_tokens(tokenizer, [long, ROWS[2], ROWS[1]]), tokenizer.pad_token_id, padding_side="left")
    params = [p for p in model.parameters() if p.requires_grad]
    passes = []
    model.register_forward_hook(lambda m, i, o: passes.append(tuple(i[0].shape) if i else None))

    def run(min_saving):
        monkeypatch.setattr(base, "SPLIT_SAVING", min_saving)
        passes.clear()
        out = forward_many(model, {"a": a, "b": b}, hidden_layer=-1)
        loss = (losses.nll(out["a"].logits, out["a"].labels) + 0.5 * losses.nll(out["b"].logits, out["b"].labels)
                + (out["a"].hidden.square() * (out["a"].labels != IGNORE_INDEX)[..., None]).mean())
        return out, len(passes), torch.autograd.grad(loss, params)

    split, n_split, split_grads = run(0.0)
    one, n_one, one_grads = run(2.0)
    assert (n_split, n_one) == (2, 1)
    for name in ("a", "b"):
        assert torch.equal(split[name].labels, one[name].labels)
        read = _read(one[name].labels)
        torch.testing.assert_close(split[name].logits[read], one[name].logits[read], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(split[name].hidden[read], one[name].hidden[read], atol=1e-5, rtol=1e-4)
    for g, h in zip(split_grads, one_grads, strict=True):
        torch.testing.assert_close(g, h, atol=1e-5, rtol=1e-4)


def test_a_streams_logits_are_computed_only_when_a_loss_reads_them(tiny_model, tokenizer):
    """The head runs per stream on first read: a stream whose losses read only hidden states (the representation
    distance's forget rows) costs no (B, K, V) logits, and a window cut before the read gives the cut logits."""
    a = collate(_tokens(tokenizer)[:2], tokenizer.pad_token_id, padding_side="left")
    b = collate(_tokens(tokenizer)[2:], tokenizer.pad_token_id, padding_side="left")
    rows = []
    head = tiny_model.get_output_embeddings()
    with torch.no_grad():
        out = forward_many(tiny_model, {"a": a, "b": b}, hidden_layer=-1)
        hook = head.register_forward_hook(lambda m, i, o: rows.append(tuple(o.shape)))
        try:
            assert out["a"].hidden is not None and rows == []  # hidden states: no head
            k = out["b"].labels.shape[1] - 1
            cut = out["b"].last(k).logits
            assert rows == [(b["input_ids"].shape[0], k, head.out_features)]  # b's rows, the cut window only
            torch.testing.assert_close(cut, out["b"].logits[:, -k:])
            assert len(rows) == 2 and out["b"].logits is out["b"].logits  # computed once per Outputs
        finally:
            hook.remove()


def test_a_model_whose_logits_are_more_than_the_heads_output_keeps_the_stacked_head(tokenizer):
    """A model that transforms the head's output (soft-capping, a logit scale) cannot have its head applied outside
    its forward: ``forward_many`` finds the pass's logits disagree with the head's and falls back, for good."""
    model = make_model(len(tokenizer))
    model.register_forward_hook(lambda m, i, o: (o.logits.mul_(0.5), None)[1])  # a post-head transform
    a = collate(_tokens(tokenizer), tokenizer.pad_token_id, padding_side="left")
    with torch.no_grad():
        alone = forward(model, a)  # the model's own, halved logits
        out = forward_many(model, {"a": a})
    torch.testing.assert_close(out["a"].logits, alone.logits)
    assert not base.splits_head(model)


def test_cached_reference_windows_match_a_reference_pass(tiny_model, tokenizer):
    reference = Reference(tiny_model, copy_weights=True)
    ctx = PrepareContext(forget=ROWS, normal=[], expected=[], reference=reference, tokenizer=tokenizer,
                         max_prompt_tokens=64, max_response_tokens=32, batch_size=2, seed=0,
                         device=torch.device("cpu"))
    cache = reference_windows(ctx, ROWS, hidden_layer=-1)  # (N, W, H)
    batch = collate(_tokens(tokenizer)[1:], tokenizer.pad_token_id, padding_side="left")  # rows 1 and 2
    ref = reference_forward(reference, batch, hidden_layer=-1)
    k = ref.labels.shape[1]
    state = (ref.labels != IGNORE_INDEX).roll(-1, dims=1)  # states that produce a response token
    state[:, -1] = False
    torch.testing.assert_close(cache[1:, -k:][state], ref.hidden[state], atol=1e-5, rtol=1e-4)


def test_passes_batched_by_length_come_back_in_the_rows_order(tiny_model, tokenizer):
    """``reference_map`` batches rows by length; each row's result equals a pass of that row alone, in place."""
    rows = [ROWS[0], ROWS[1], ROWS[2], ROWS[1], ROWS[0]]  # lengths not in order
    reference = Reference(tiny_model, copy_weights=True)

    def ctx(batch_size):
        return PrepareContext(forget=rows, normal=[], expected=[], reference=reference, tokenizer=tokenizer,
                              max_prompt_tokens=64, max_response_tokens=32, batch_size=batch_size, seed=0,
                              device=torch.device("cpu"))

    tokens = _tokens(tokenizer, rows)
    assert sorted(len(t.input_ids) for t in tokens) != [len(t.input_ids) for t in tokens]
    last = lambda out: out.logits[0, -1]  # noqa: E731  (V,): the logits at the row's end of turn
    batched, alone = reference_map(ctx(3), tokens, last), reference_map(ctx(1), tokens, last)
    for b, a in zip(batched, alone, strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(batched[0], batched[1])  # different rows, different results
    torch.testing.assert_close(batched[0], batched[4])  # the same row in two batches
    states = prompt_states(reference, tokenizer, rows, layer=1, max_prompt_tokens=64, batch_size=3,
                           device=torch.device("cpu"))
    one_by_one = torch.cat([prompt_states(reference, tokenizer, [d], layer=1, max_prompt_tokens=64, batch_size=1,
                                          device=torch.device("cpu")) for d in rows])
    torch.testing.assert_close(states, one_by_one, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("top_k", [0, 320])  # 0: exact pass per call; k = V: the cached top-k holds every token
def test_check_kl_equals_the_full_width_exact_kl(tokenizer, top_k):
    """The early-stopping check's cached, windowed KL is the utility metric's exact KL (at k = V)."""
    model = add_lora(make_model(len(tokenizer)), LoraConfig(target_modules=("q_proj", "v_proj")))
    reference = Reference(model, copy_weights=False)
    cfg = RunConfig()
    cfg.train.kl_top_k = top_k
    rows = [*ROWS, Dialogue("Name a colour.", "Blue, like the sky on a clear day.")]
    check = CheckKL(reference, tokenizer, rows, cfg, batch_size=3)  # batches of 3 and 1 rows
    assert check(model) == pytest.approx(0.0, abs=1e-6)  # adapters start as a no-op
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    exact = normal_data_metrics(model, reference, tokenizer, rows, max_prompt_tokens=cfg.data.max_prompt_tokens,
                                max_response_tokens=cfg.data.max_response_tokens)["kl_to_original"]
    assert exact > 1e-3
    merges = []
    merge = model.merge_adapter
    model.merge_adapter = lambda *a, **kw: (merges.append(1), merge(*a, **kw))[1]
    assert check(model) == pytest.approx(exact, rel=1e-4)  # the policy's pass ran merged, the original's not
    assert len(merges) == (1 if top_k else 2)  # once for both batches, or once per batch where the original runs
    assert not any(m.merged for m in model.modules() if hasattr(m, "merged"))  # and its adapters came out again


@pytest.mark.parametrize("lora", [False, True])
def test_normal_data_metrics_equal_full_width_right_padded_passes(tokenizer, lora):
    """The report's perplexities and KL, from windowed left-padded passes, are what full-width right-padded passes
    over every position give; the model comes back unmerged, in its mode."""
    model = make_model(len(tokenizer))
    if lora:
        model = add_lora(model, LoraConfig(target_modules=("q_proj", "v_proj")))
        reference = Reference(model, copy_weights=False)
    else:
        reference = Reference(model, copy_weights=True)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not lora or "lora_B" in name:
                p.add_(torch.randn_like(p) * 0.3)
    rows = [*ROWS, Dialogue("Name a colour.", "Blue, like the sky on a clear day.")]
    batch = collate(_tokens(tokenizer, rows), tokenizer.pad_token_id)  # right-padded, one batch
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (B, T, V)
        ref_logits, _ = reference(batch["input_ids"], batch["attention_mask"])
    picked, mask = losses.token_logprobs(logits, batch["labels"])
    ref_picked, _ = losses.token_logprobs(ref_logits, batch["labels"])
    n = mask.sum()
    model.train()
    got = normal_data_metrics(model, reference, tokenizer, rows, max_prompt_tokens=64, max_response_tokens=32,
                              batch_size=3)  # batches of 3 and 1 rows
    assert got["tokens"] == int(n)
    assert got["perplexity"] == pytest.approx(float(torch.exp(-picked.sum() / n)), rel=1e-4)
    assert got["perplexity_original"] == pytest.approx(float(torch.exp(-ref_picked.sum() / n)), rel=1e-4)
    assert got["kl_to_original"] == pytest.approx(float(losses.forward_kl(logits, ref_logits, batch["labels"])),
                                                  rel=1e-3)
    assert got["kl_to_original"] > 1e-3 and got["perplexity"] != pytest.approx(got["perplexity_original"])
    assert model.training and not any(getattr(m, "merged", False) for m in model.modules())


def test_check_perplexity_change_is_the_reported_perplexity_ratio(tokenizer):
    """The check's human-text perplexity change is what the report's normal-data metrics give for the same texts:
    0 while the adapters are a no-op, the ratio of the two perplexities once they moved, the model left unmerged."""
    model = add_lora(make_model(len(tokenizer)), LoraConfig(target_modules=("q_proj", "v_proj")))
    reference = Reference(model, copy_weights=False)
    cfg = RunConfig()
    monitor = Monitor(tokenizer, [], None, reference, [], [], None, cfg, print, texts=ROWS)
    assert monitor.perplexity_change(model) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    report = normal_data_metrics(model, reference, tokenizer, ROWS, max_prompt_tokens=cfg.data.max_prompt_tokens,
                                 max_response_tokens=cfg.data.max_response_tokens)
    ratio = report["perplexity"] / report["perplexity_original"] - 1.0
    assert abs(ratio) > 0.01
    assert monitor.perplexity_change(model) == pytest.approx(ratio, rel=1e-4)
    assert not any(m.merged for m in model.modules() if hasattr(m, "merged"))


def test_original_states_equal_separate_full_width_passes(tiny_model, tokenizer):
    """One left-padded pass gives what a prompt-only pass (last prompt state), a right-padded full pass (pooled
    response state) and :func:`reference_windows` gave separately."""
    reference = Reference(tiny_model, copy_weights=True)
    ctx = PrepareContext(forget=ROWS, normal=[], expected=[], reference=reference, tokenizer=tokenizer,
                         max_prompt_tokens=64, max_response_tokens=32, batch_size=2, seed=0,
                         device=torch.device("cpu"))
    states = original_states(ctx, ROWS, layer=1)
    alone = prompt_states(reference, tokenizer, ROWS, layer=1, max_prompt_tokens=64, batch_size=3,
                          device=torch.device("cpu"))
    torch.testing.assert_close(states.prompt, alone, atol=1e-5, rtol=1e-4)
    right = collate(_tokens(tokenizer), tokenizer.pad_token_id)
    _, hidden = reference(right["input_ids"], right["attention_mask"], hidden_layer=1)
    torch.testing.assert_close(states.response, losses.pooled_states(hidden, right["labels"]), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(states.windows, reference_windows(ctx, ROWS, hidden_layer=1))
    assert not torch.allclose(states.prompt, states.response)  # two different positions' states


def test_several_layers_stack_after_the_position_axis(tiny_model, tokenizer):
    batch = collate(_tokens(tokenizer), tokenizer.pad_token_id, padding_side="left")
    reference = Reference(tiny_model, copy_weights=True)
    with torch.no_grad():
        both = forward(tiny_model, batch, hidden_layer=(1, -1))  # (B, K, 2, H)
        ref = reference_forward(reference, batch, hidden_layer=[1, -1])
        for i, layer in enumerate((1, -1)):
            torch.testing.assert_close(both.hidden[:, :, i], forward(tiny_model, batch, hidden_layer=layer).hidden)
    assert both.hidden.shape == (3, response_window(batch["labels"]), 2, tiny_model.config.hidden_size)
    torch.testing.assert_close(ref.hidden, both.hidden)
    ctx = PrepareContext(forget=ROWS, normal=[], expected=[], reference=reference, tokenizer=tokenizer,
                         max_prompt_tokens=64, max_response_tokens=32, batch_size=2, seed=0,
                         device=torch.device("cpu"))
    assert reference_windows(ctx, ROWS, hidden_layer=(1, -1)).shape[2:] == (2, tiny_model.config.hidden_size)


def test_lora_layers_adapt_only_those_layers_and_the_backward_stops_there(tokenizer):
    """``lora.layers: [1]``: adapters only in decoder layer 1; a loss's gradient reaches them, and no activation
    below layer 1 takes part in the backward pass (layer 0's output does not require grad)."""
    model = add_lora(make_model(len(tokenizer)), LoraConfig(layers=[1]))
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all(".layers.1." in n for n in names)
    assert not any(".layers.0." in n and "lora_" in n for n, _ in model.named_parameters())
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    seen = {}
    layer0 = model.base_model.model.model.layers[0]
    layer0.register_forward_hook(lambda m, i, out: seen.update(grad=(out[0] if isinstance(out, tuple) else out)
                                                               .requires_grad))
    ids = torch.tensor([[5, 6, 7, 8]])
    model(input_ids=ids, labels=ids).loss.backward()
    assert seen["grad"] is False
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)
    every = add_lora(make_model(len(tokenizer)), LoraConfig())  # the default: every layer
    assert any(".layers.0." in n for n, p in every.named_parameters() if p.requires_grad)


def test_lora_layers_out_of_range_names_the_model_s_layers(tokenizer):
    with pytest.raises(ConfigError, match=r"lora.layers: \[2, 5\] out of range; the model has 2 decoder layers"):
        add_lora(make_model(len(tokenizer)), LoraConfig(layers=[1, 2, 5]))
