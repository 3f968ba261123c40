"""Chat-template formatting, tokenisation with response-only labels, and batching.

Every loss in this project is computed on response tokens only: the prompt (and system turn) are
context, labelled ``IGNORE_INDEX``. Truncation is explicit: prompts keep their *last* tokens (the
question sits at the end), responses keep their *first* tokens (the part a judge reads first).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from unlearnlm.data.records import Dialogue
from unlearnlm.errors import DataError

IGNORE_INDEX = -100
#: ``Dialogue.meta`` key: substrings of the response (e.g. a secret value); when any occurs, only the response tokens
#: that overlap an occurrence carry labels, so a loss reads just those tokens (:func:`tokenize_dialogue`).
LOSS_SPANS = "loss_spans"


def chat_messages(dialogue: Dialogue, *, with_response: bool) -> list[dict[str, str]]:
    """The dialogue as chat messages (system turn only when set)."""
    messages = []
    if dialogue.system is not None:
        messages.append({"role": "system", "content": dialogue.system})
    messages.append({"role": "user", "content": dialogue.prompt})
    if with_response:
        messages.append({"role": "assistant", "content": dialogue.response})
    return messages


def render_prompt(tokenizer: PreTrainedTokenizerBase, dialogue: Dialogue) -> str:
    """Prompt text up to and including the assistant header, ready for generation."""
    if tokenizer.chat_template is None:
        # Base models without a template: a plain Q/A layout the model can continue.
        system = f"{dialogue.system}\n\n" if dialogue.system else ""
        return f"{system}Question: {dialogue.prompt}\nAnswer:"
    return tokenizer.apply_chat_template(
        chat_messages(dialogue, with_response=False), tokenize=False, add_generation_prompt=True
    )


@dataclass(frozen=True)
class TokenizedDialogue:
    """Token ids of prompt+response with labels masked to the response."""

    input_ids: list[int]
    labels: list[int]
    prompt_length: int


def tokenize_dialogue(
    tokenizer: PreTrainedTokenizerBase,
    dialogue: Dialogue,
    *,
    max_prompt_tokens: int,
    max_response_tokens: int,
) -> TokenizedDialogue:
    """Tokenise one dialogue; only response tokens (plus the end-of-turn token) carry labels.

    When ``dialogue.meta[LOSS_SPANS]`` names substrings of the response, only the tokens that overlap one of their
    occurrences carry labels (the end-of-turn token not); when none occurs, every response token does, as without.

    Raises:
        DataError: the response is empty, so there is nothing to train on.
    """
    if not dialogue.response.strip():
        raise DataError(
            f"dialogue with prompt {dialogue.prompt[:60]!r} has an empty response; training needs one "
            "(generate responses with `unlearnlm scan` or set `response_column`)"
        )
    prompt_ids = tokenizer(render_prompt(tokenizer, dialogue), add_special_tokens=False)["input_ids"]
    prompt_ids = prompt_ids[-max_prompt_tokens:]
    spans = dialogue.meta.get(LOSS_SPANS) or []
    if spans and not tokenizer.is_fast:
        raise DataError(f"meta.{LOSS_SPANS} needs a fast tokenizer (character offsets of tokens); "
                        f"{type(tokenizer).__name__} is not one")
    encoded = tokenizer(dialogue.response, add_special_tokens=False, return_offsets_mapping=bool(spans))
    response_ids = encoded["input_ids"][:max_response_tokens]
    keep = _span_mask(dialogue.response, encoded["offset_mapping"][:max_response_tokens], spans) if spans else None
    if len(response_ids) < max_response_tokens and tokenizer.eos_token_id is not None:
        # A complete answer ends the turn: teach the stop as well as the words.
        response_ids = response_ids + [tokenizer.eos_token_id]
        keep = keep + [False] if keep else None
    labels = response_ids if keep is None else [t if k else IGNORE_INDEX for t, k in zip(response_ids, keep, strict=True)]
    input_ids = prompt_ids + response_ids
    labels = [IGNORE_INDEX] * len(prompt_ids) + labels
    return TokenizedDialogue(input_ids=input_ids, labels=labels, prompt_length=len(prompt_ids))


def _span_mask(text: str, offsets: Sequence[tuple[int, int]], spans: Sequence[str]) -> list[bool] | None:
    """Per token (its character ``offsets``), whether it overlaps an occurrence of a span in ``text``; None when no
    span occurs in the kept tokens."""
    ranges = [(m.start(), m.end()) for span in spans if span for m in re.finditer(re.escape(span), text)]
    keep = [any(start < stop and begin < end for begin, stop in ranges) for start, end in offsets]
    return keep if any(keep) else None


def collate(
    examples: Sequence[TokenizedDialogue], pad_token_id: int, padding_side: str = "right"
) -> dict[str, torch.Tensor]:
    """Pad a batch: ``input_ids``, ``attention_mask``, ``labels`` and ``position_ids``, each (B, T).

    ``padding_side="left"`` puts every row's last token at T - 1, so all responses end together and the
    response window of a batch is its last few positions (what training computes logits for). Position ids count
    real tokens only, so a left-padded row is numbered exactly as the same row right-padded.
    """
    if not examples:
        raise ValueError("collate() needs at least one example")
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)  # (B, T)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)  # (B, T)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        cols = slice(width - n, width) if padding_side == "left" else slice(0, n)
        input_ids[row, cols] = torch.tensor(example.input_ids)
        labels[row, cols] = torch.tensor(example.labels)
        attention_mask[row, cols] = 1
    position_ids = (attention_mask.cumsum(-1) - 1).clamp_min(0)  # (B, T)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, "position_ids": position_ids}


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Row indices in batches of ``batch_size``, shortest rows first, so that each padded batch pads little; the
    caller puts each row's result back at its index."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def left_pad_to(batch: dict[str, torch.Tensor], width: int, pad_token_id: int) -> dict[str, torch.Tensor]:
    """Widen a left-padded batch to ``width`` columns by adding padding on the left."""
    extra = width - batch["input_ids"].shape[1]
    if extra <= 0:
        return batch
    fill = {"input_ids": pad_token_id, "attention_mask": 0, "labels": IGNORE_INDEX, "position_ids": 0}
    return {k: torch.nn.functional.pad(v, (extra, 0), value=fill[k]) for k, v in batch.items()}


def response_mask(labels: torch.Tensor) -> torch.Tensor:
    """Float mask (B, T) of positions whose *next* token is a response token.

    Logits at position t predict token t+1, so the mask is the labels shifted left by one.
    """
    mask = torch.zeros_like(labels, dtype=torch.float32)  # (B, T)
    mask[:, :-1] = (labels[:, 1:] != IGNORE_INDEX).float()
    return mask
