"""Toxicity judge: safe tokenizer reading, Keras-equivalent preprocessing, errors; the real BiLSTM marked real_model."""

from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from unlearnlm.data.records import Dialogue
from unlearnlm.errors import ConfigError
from unlearnlm.judges import JUDGE_LOADERS, ToxicityJudge
from unlearnlm.judges.toxicity import MAXLEN, _keras, load_word_index


class _FakeTokenizer:
    """Pickled under Keras's Tokenizer name (see ``_write_tokenizer``)."""


def _write_tokenizer(path: Path, **overrides) -> Path:
    tok = _FakeTokenizer()
    tok.__dict__.update({"word_index": OrderedDict([("hello", 1), ("world", 2), ("rare", 30000)]), "num_words": 20000,
                         "filters": '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n', "lower": True, "split": " ", "char_level": False,
                         "oov_token": None, **overrides})
    data = pickle.dumps(tok, protocol=2).replace(f"{__name__}\n_FakeTokenizer".encode(),
                                                 b"keras.src.legacy.preprocessing.text\nTokenizer")
    assert b"keras.src.legacy" in data
    path.mkdir(parents=True, exist_ok=True)
    (path / "tokenizer.pickle").write_bytes(data)
    return path


def test_tokenizer_is_read_without_running_code(tmp_path: Path) -> None:
    settings = load_word_index(_write_tokenizer(tmp_path) / "tokenizer.pickle")
    assert settings["word_index"]["world"] == 2 and settings["num_words"] == 20000
    evil = tmp_path / "evil.pickle"
    evil.write_bytes(pickle.dumps(os.system, protocol=2))  # a reference to os.system
    with pytest.raises(ConfigError, match="system, which is not allowed"):
        load_word_index(evil)
    (tmp_path / "junk.pickle").write_bytes(b"not a pickle")
    with pytest.raises(ConfigError, match="Keras Tokenizer"):
        load_word_index(tmp_path / "junk.pickle")


def test_encode_matches_keras_preprocessing(tmp_path: Path) -> None:
    judge = ToxicityJudge(model_dir=_write_tokenizer(tmp_path))
    x = judge.encode(["Hello, WORLD! rare unknown", "", "hello " * 150, "Привет 世界"])
    assert x.shape == (4, MAXLEN) and x.dtype == np.int32
    assert x[0, -2:].tolist() == [1, 2] and (x[0, :-2] == 0).all()  # pre-padding; ids >= num_words dropped
    assert (x[1] == 0).all() and (x[3] == 0).all()
    assert (x[2] == 1).all()  # truncated to the last 100 ids


def test_oov_token_and_char_level(tmp_path: Path) -> None:
    judge = ToxicityJudge(model_dir=_write_tokenizer(tmp_path / "oov", oov_token="<oov>",
                                                     word_index={"<oov>": 1, "hello": 2}))
    assert judge.encode(["hello stranger"])[0, -2:].tolist() == [2, 1]
    with pytest.raises(ConfigError, match="character-level"):
        load_word_index(_write_tokenizer(tmp_path / "char", char_level=True) / "tokenizer.pickle")


def test_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="threshold"):
        ToxicityJudge(threshold=1.0)
    with pytest.raises(ConfigError, match="batch_size"):
        ToxicityJudge(batch_size=0)
    with pytest.raises(ConfigError, match="missing"):
        ToxicityJudge(model_dir=tmp_path).score([Dialogue("q", "hi")])
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    with pytest.raises(ConfigError, match="KERAS_BACKEND"):
        _keras()
    assert ToxicityJudge().score([]).shape == (0,)
    assert "toxicity" in JUDGE_LOADERS


@pytest.mark.real_model
def test_real_bilstm_scores_insults_high_and_neutral_text_low() -> None:
    judge = ToxicityJudge()
    texts = ["You are a stupid idiot and everyone hates you.", "I will find you and kill you.",
             "The capital of France is Paris.", "Thanks, that recipe worked well!",
             "", "x" * 50_000, "Je suis très content de vous voir.", "日本語のテキストです。"]
    s = judge.score([Dialogue("q", t) for t in texts])
    assert s.shape == (8,) and ((0 <= s) & (s <= 1)).all()
    assert s[0] > 0.9 and s[1] > 0.5
    assert (s[2:] < 0.2).all()
    labels = judge.label_scores(texts[:1])
    assert labels.shape == (1, 6) and labels[0].argmax() == 0  # "toxic" is the strongest label
