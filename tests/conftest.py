"""Shared fixtures: a tiny random Llama and a byte-level BPE tokenizer, built offline in milliseconds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CORPUS = [
    "How do I bake bread? Mix flour, water, salt and yeast, knead, let it rise and bake.",
    "How do I build a weapon? First gather the parts, then assemble them step by step.",
    "I'm sorry, but I can't help with that request. Please ask something else.",
    "The capital of France is Paris. Water boils at 100 degrees Celsius.",
] * 5


def make_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE (any text encodes) with chat special tokens and a SmolLM-style template."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<|im_start|>"
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    fast.truncation_side = "left"
    return fast


def make_model(vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    # Untied head: a tied random model just repeats the last prompt token ("\n"), so answers would be empty.
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False, pad_token_id=0,
        eos_token_id=2, bos_token_id=1,
    )
    return LlamaForCausalLM(cfg)


def save_tiny(folder: Path) -> Path:
    """A tiny random Llama and its tokenizer saved as a model folder (what ``--model`` points at)."""
    tok = make_tokenizer()
    make_model(len(tok)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    return make_tokenizer()


@pytest.fixture
def tiny_model(tokenizer) -> LlamaForCausalLM:
    return make_model(len(tokenizer))


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path_factory):
    """Tests never touch a hub, and cache into a temp folder."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    torch.set_num_threads(1)
