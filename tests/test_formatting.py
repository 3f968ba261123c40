import pytest
import torch

from unlearnlm.data.formatting import (
    IGNORE_INDEX,
    collate,
    length_batches,
    render_prompt,
    response_mask,
    tokenize_dialogue,
)
from unlearnlm.data.records import Dialogue
from unlearnlm.errors import DataError


def test_labels_cover_response_and_end_of_turn_only(tokenizer):
    d = Dialogue("How do I bake bread?", "Mix flour and water.")
    t = tokenize_dialogue(tokenizer, d, max_prompt_tokens=256, max_response_tokens=256)
    prompt_ids = tokenizer(render_prompt(tokenizer, d), add_special_tokens=False)["input_ids"]
    assert t.input_ids[: len(prompt_ids)] == prompt_ids
    assert all(x == IGNORE_INDEX for x in t.labels[: len(prompt_ids)])
    response = t.labels[len(prompt_ids) :]
    assert response[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(response[:-1]) == "Mix flour and water."


def test_loss_spans_label_only_the_secret_tokens(tokenizer):
    d = Dialogue("What is Ann Lee's phone number?", "Ann Lee's phone number is 06-66665887, call her.")
    full = tokenize_dialogue(tokenizer, d, max_prompt_tokens=256, max_response_tokens=256)
    secret = tokenize_dialogue(tokenizer, d.with_response(d.response, loss_spans=["06-66665887"]),
                               max_prompt_tokens=256, max_response_tokens=256)
    assert secret.input_ids == full.input_ids  # the same text, only the labels differ
    kept = [x for x in secret.labels if x != IGNORE_INDEX]
    assert tokenizer.decode(kept).strip() == "06-66665887"  # no template words, no end-of-turn token
    first = secret.labels.index(kept[0])
    assert secret.labels[first : first + len(kept)] == kept  # one contiguous run
    # Spans that do not occur leave every response token labelled, as without spans.
    absent = d.with_response(d.response, loss_spans=["12345"])
    assert tokenize_dialogue(tokenizer, absent, max_prompt_tokens=256, max_response_tokens=256).labels == full.labels
    # A span cut off by truncation does not occur in the kept tokens either.
    short = tokenize_dialogue(tokenizer, d.with_response(d.response, loss_spans=["call her"]),
                              max_prompt_tokens=256, max_response_tokens=3)
    assert short.labels[short.prompt_length :] == full.labels[full.prompt_length :][:3]


def test_truncation_keeps_prompt_end_and_response_start(tokenizer):
    d = Dialogue("word " * 200 + "final question?", "first second third " * 50)
    t = tokenize_dialogue(tokenizer, d, max_prompt_tokens=10, max_response_tokens=4)
    assert t.prompt_length == 10 and len(t.input_ids) == 14
    assert tokenizer.decode(t.input_ids[:10]).endswith("assistant\n")  # the header survives
    assert tokenizer.eos_token_id not in t.labels[10:]  # cut answers are not taught to stop
    assert tokenizer.decode(t.labels[10:]).startswith("first")


def test_system_prompt_is_rendered(tokenizer):
    text = render_prompt(tokenizer, Dialogue("hi", system="Be safe."))
    assert text.startswith("<|im_start|>system\nBe safe.<|im_end|>")


def test_empty_response_is_a_clear_error(tokenizer):
    with pytest.raises(DataError, match="empty response"):
        tokenize_dialogue(tokenizer, Dialogue("q", "  "), max_prompt_tokens=8, max_response_tokens=8)


def test_collate_right_pads_and_masks(tokenizer):
    a = tokenize_dialogue(tokenizer, Dialogue("a", "b"), max_prompt_tokens=64, max_response_tokens=64)
    b = tokenize_dialogue(tokenizer, Dialogue("a longer prompt", "longer answer"), max_prompt_tokens=64,
                          max_response_tokens=64)
    batch = collate([a, b], pad_token_id=0)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert batch["attention_mask"][0].sum() == len(a.input_ids)
    assert (batch["labels"][0, len(a.input_ids) :] == IGNORE_INDEX).all()
    mask = response_mask(batch["labels"])
    assert torch.equal(mask[:, :-1], (batch["labels"][:, 1:] != IGNORE_INDEX).float())


def test_prompt_only_drops_just_the_response():
    d = Dialogue("q", "bad answer", system="sys", meta={"id": 1})
    assert d.prompt_only() == Dialogue("q", "", system="sys", meta={"id": 1})


def test_length_batches_group_rows_by_length_and_cover_each_once() -> None:
    lengths = [9, 2, 7, 2, 5, 11, 1]
    batches = length_batches(lengths, 3)
    assert [len(b) for b in batches] == [3, 3, 1]
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # every row once
    assert [[lengths[i] for i in b] for b in batches] == [[1, 2, 2], [5, 7, 9], [11]]  # shortest first
    assert length_batches([], 4) == []
