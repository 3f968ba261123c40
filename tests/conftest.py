"""Shared fixtures: a tiny random Llama and a byte-level BPE tokenizer, built offline in milliseconds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from unlearnlm.judges import panel

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


def write_benign_files(root: Path) -> tuple[Path, Path]:
    """The benign prompts (12 sums) and the normal texts (one dialogue 4 times) of the tiny custom-task runs."""
    benign = write_jsonl(root / "benign.jsonl", [{"prompt": f"What is {i} plus {i}?"} for i in range(12)])
    normal = write_jsonl(root / "normal.jsonl",
                         [{"prompt": "Capital of France?", "response": "Paris is the capital."}] * 4)
    return benign, normal


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


class KeywordJudge:
    """Flags dialogues whose prompt mentions a weapon: deterministic, whatever the tiny model says."""

    name = "harm"
    threshold = 0.5

    def score(self, dialogues):
        return np.array([1.0 if "weapon" in d.prompt else 0.0 for d in dialogues])


def write_workspace(root: Path) -> tuple[Path, Path]:
    """A tiny model folder, prompt files and a harm-task config using them under ``root``: ``(config, model dir)``."""
    model_dir = save_tiny(root / "tiny")

    def write(name, rows):
        return str(write_jsonl(root / name, rows))

    harmful = write("harmful.jsonl", [{"prompt": f"How do I build weapon number {i}?"} for i in range(10)]
                    + [{"prompt": f"How do I bake cake number {i}?"} for i in range(4)])
    benign = write("benign.jsonl", [{"prompt": f"What is {i} plus {i}?"} for i in range(12)])
    normal = write("normal.jsonl", [{"prompt": "Capital of France?", "response": "Paris is the capital."}] * 4)
    expected = write("expected.jsonl", [{"prompt": "How do I build weapon number 0?", "response": "I can't help."}])
    config = root / "run.yaml"
    config.write_text(f"""
model: {{name_or_path: {model_dir}}}
lora: {{enabled: false}}
data:
  harmful_prompts: {{path: {harmful}}}
  unseen_prompts: {{path: {harmful}, limit: 3}}
  benign_prompts: {{path: {benign}}}
  normal_texts: {{path: {normal}}}
  expected_outputs: {{path: {expected}}}
  scan_size: 14
  normal_train_size: 6
  eval_size: 4
  benign_val_size: 2
generation: {{max_new_tokens: 4, batch_size: 8}}
train: {{max_steps: 4, eval_every: 2, patience: 1, batch_size: 2, compile: false}}
""")  # compile: false: the harm default compiles, which these logic tests need not pay for (tests/test_train.py)
    return config, model_dir


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.setitem(panel.JUDGE_LOADERS, "harm", KeywordJudge)
    monkeypatch.setenv("UNLEARNLM_CACHE", str(tmp_path / "cache"))
    config, model_dir = write_workspace(tmp_path)
    return tmp_path, config, model_dir


class OriginalAnswerJudge:
    """Flags a weapon prompt's answer while it is still the original's (the first answer seen for that prompt,
    at the scan), so a model whose answers moved is no longer flagged and training keeps a later step."""

    name = "harm"
    threshold = 0.5
    first: dict[str, str] = {}

    def score(self, dialogues):
        for d in dialogues:
            self.first.setdefault(d.prompt, d.response)
        return np.array([float("weapon" in d.prompt and self.first[d.prompt] == d.response) for d in dialogues])


def finished_run(root: Path, monkeypatch) -> Path:
    """A finished tiny harm run under ``root`` whose saved model is not the original (:class:`OriginalAnswerJudge`,
    which ``monkeypatch`` leaves installed as the harm judge for whatever re-judges the run)."""
    from unlearnlm.cli import main

    monkeypatch.setattr(OriginalAnswerJudge, "first", {})
    monkeypatch.setitem(panel.JUDGE_LOADERS, "harm", OriginalAnswerJudge)
    monkeypatch.setenv("UNLEARNLM_CACHE", str(root / "cache"))
    config, _ = write_workspace(root)
    out = root / "run"
    assert main(["run", str(config), "--output", str(out), "--set", "train.learning_rate=0.01",
                 "--set", "train.patience=3"]) == 0
    return out


#: Sizes that make a planted-knowledge run tiny (one planting epoch, a handful of questions).
KNOWLEDGE_SIZES = {
    "privacy": ["data.privacy.n_identities=10", "data.privacy.n_never_seen=3", "data.privacy.fields=[email]",
                "data.privacy.forget_fraction=0.3", "data.privacy.implant.max_epochs=1"],
    "hallucination": ["data.hallucination.n_forget=4", "data.hallucination.n_retain=4",
                      "data.hallucination.n_untouched=4", "data.hallucination.implant.max_epochs=1"],
}


def tiny_knowledge_config(task: str, root: Path, monkeypatch, *overrides: str):
    """The config of a tiny ``task`` run (privacy or hallucination) under ``root``, caching into ``root/cache``,
    with stub judges that flag every answer (so the tiny model always has something to unlearn)."""
    from unlearnlm.judges.hallucination import HallucinationJudge
    from unlearnlm.judges.pii import PIIJudge
    from unlearnlm.loader import load_config

    monkeypatch.setenv("UNLEARNLM_CACHE", str(root / "cache"))
    monkeypatch.setattr(HallucinationJudge, "__init__",
                        lambda self, threshold=0.5: setattr(self, "threshold", threshold))
    for judge in (PIIJudge, HallucinationJudge):
        monkeypatch.setattr(judge, "score", lambda self, ds: np.ones(len(ds), dtype=np.float32))
    model_dir = root / "tiny"
    if not model_dir.is_dir():
        save_tiny(model_dir)
    return load_config(overrides=[f"data.task={task}", f"model.name_or_path={model_dir}",
                                  f"output_dir={root / 'run'}", "generation.max_new_tokens=4",
                                  "data.normal_train_size=4", "data.eval_size=4", "data.benign_val_size=2",
                                  "train.max_steps=2", "train.eval_every=2", *KNOWLEDGE_SIZES[task], *overrides])
