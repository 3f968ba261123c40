"""Bring-your-own judges on tiny random models saved to tmp_path (offline, a few seconds)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

from unlearnlm.data.records import Dialogue
from unlearnlm.errors import ConfigError
from unlearnlm.judges import HFClassifierJudge, JudgePanel, LLMJudge, RefusalDetector

from conftest import CORPUS, make_model, make_tokenizer

DIALOGUES = [
    Dialogue("How do I bake bread?", "Mix flour, water and yeast."),
    Dialogue("Hi", ""),
    Dialogue("Long", "word " * 10_000),
    Dialogue("Ciao", "Ciao, come stai? 你好"),
]


def _wordpiece(folder: Path) -> None:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=200, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"],
                                                               show_progress=False))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                            sep_token="[SEP]").save_pretrained(folder)


def _classifier(folder: Path, labels: list[str]) -> Path:
    _wordpiece(folder)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=200, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                     max_position_embeddings=64, initializer_range=0.5, num_labels=len(labels), id2label=dict(enumerate(labels)),
                     label2id={label: i for i, label in enumerate(labels)})
    BertForSequenceClassification(cfg).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def binary_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _classifier(tmp_path_factory.mktemp("bert2"), ["safe", "unsafe"])


def test_hf_classifier_scores_response_and_pair(binary_classifier: Path) -> None:
    judge = HFClassifierJudge(binary_classifier, max_length=64, batch_size=3)
    s = judge.score(DIALOGUES)
    assert s.shape == (4,) and s.dtype == np.float32 and ((0 <= s) & (s <= 1)).all()
    assert judge.label_map == {"unsafe": 1.0}
    pair = HFClassifierJudge(binary_classifier, input="pair", max_length=64, name="pair").score(DIALOGUES)
    assert not np.allclose(s, pair, atol=1e-4)  # the prompt changes the input
    both = HFClassifierJudge(binary_classifier, label_map={"safe": 1.0, "unsafe": 1.0}, max_length=64).score(DIALOGUES)
    np.testing.assert_allclose(both, 1.0, atol=1e-5)  # softmax probabilities sum to one
    verdict = JudgePanel([RefusalDetector(), judge])(DIALOGUES)
    assert set(verdict.scores) == {"refusal", "hf_classifier"}


def test_hf_classifier_errors(binary_classifier: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model's labels"):
        HFClassifierJudge(binary_classifier, label_map={"toxic": 1.0}).score(DIALOGUES[:1])
    with pytest.raises(ConfigError, match="label_map"):
        HFClassifierJudge(binary_classifier, label_map={"unsafe": 2.0})
    with pytest.raises(ConfigError, match="input"):
        HFClassifierJudge(binary_classifier, input="prompt")
    with pytest.raises(ConfigError, match="threshold"):
        HFClassifierJudge(binary_classifier, threshold=0.0)
    with pytest.raises(ConfigError, match="config.json"):
        HFClassifierJudge(tmp_path / "nothing-here")
    three = _classifier(tmp_path / "bert3", ["a", "b", "c"])
    with pytest.raises(ConfigError, match="3 labels"):
        HFClassifierJudge(three).score(DIALOGUES[:1])
    assert HFClassifierJudge(three, label_map={"c": 1.0}, max_length=64).score(DIALOGUES[:1]).shape == (1,)


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("llama")
    tok = make_tokenizer()
    tok.save_pretrained(folder)
    make_model(len(tok)).save_pretrained(folder)
    return folder


def test_llm_judge_probabilities_from_next_token(tiny_lm: Path) -> None:
    judge = LLMJudge(tiny_lm, rubric="Does the assistant help build a weapon?", max_length=128, batch_size=2)
    s = judge.score(DIALOGUES)
    assert s.shape == (4,) and s.dtype == np.float32 and ((0 <= s) & (s <= 1)).all()
    alone = np.concatenate([judge.score([d]) for d in DIALOGUES])
    np.testing.assert_allclose(alone, s, atol=1e-5)  # left padding in a batch does not change a row
    assert judge._yes and judge._no and not set(judge._yes) & set(judge._no)
    assert "<|im_start|>assistant" in judge._prompt(DIALOGUES[0])


def test_llm_judge_reads_yes_against_no(tiny_lm: Path) -> None:
    judge = LLMJudge(tiny_lm, rubric="Is this harmful? {prompt} -> {response}", max_length=64)
    judge._load()
    vocab = len(judge._tokenizer)

    def fake(**enc) -> SimpleNamespace:  # P(yes) / (P(yes) + P(no)) = sigmoid(2) when yes gets +2
        logits = torch.zeros(enc["input_ids"].shape[0], enc["input_ids"].shape[1], vocab)
        logits[:, -1, judge._yes[0]] = 2.0
        logits[:, -1, judge._yes[1:]] = -30.0
        logits[:, -1, judge._no[1:]] = -30.0
        return SimpleNamespace(logits=logits)

    judge._model = fake
    np.testing.assert_allclose(judge.score(DIALOGUES[:2]), 1 / (1 + np.exp(-2.0)), atol=1e-4)
    assert "Is this harmful? How do I bake bread?" in judge._prompt(DIALOGUES[0])


def test_llm_judge_errors(tiny_lm: Path) -> None:
    for rubric in ("", "   ", None):
        with pytest.raises(ConfigError, match="rubric"):
            LLMJudge(tiny_lm, rubric=rubric)
    with pytest.raises(ConfigError, match="max_length"):
        LLMJudge(tiny_lm, rubric="x?", max_length=2)
    with pytest.raises(ConfigError, match="empty"):
        LLMJudge("", rubric="x?")
