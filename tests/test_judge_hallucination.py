"""Hallucination judge: lexical features by hand, heads fitted on a hashing encoder, MiniLM on real data."""

from __future__ import annotations

import numpy as np
import pytest

from unlearnlm.data.records import Dialogue
from unlearnlm.errors import ConfigError, DataError
from unlearnlm.judges import JUDGE_LOADERS, HallucinationJudge, HashingEncoder
from unlearnlm.judges.hallucination import (
    abstains,
    answer_kind,
    contrast_features,
    fit_hallucination_weights,
    freshqa_dialogues,
    reference_features,
    rho_factual_dialogues,
)

ZERO = np.zeros(4, dtype=np.float32)


@pytest.fixture(scope="module")
def judge() -> HallucinationJudge:
    encoder = HashingEncoder(256)
    return HallucinationJudge(encoder, weights=fit_hallucination_weights(encoder))


def accuracy(j: HallucinationJudge, rows: list[Dialogue]) -> float:
    return float(((j.score(rows) >= j.threshold) == np.array([d.meta["label"] for d in rows])).mean())


def test_contrast_features_by_hand() -> None:
    true, false = "Sugar does not cause hyperactivity in children.", "Sugar causes hyperactivity in children."
    # [cos margin (0: zero embeddings), word margin, bigram margin, negation margin, number margin]
    assert contrast_features("Yes, sugar causes hyperactivity in children.", true, false, ZERO, ZERO, ZERO)[3] == 1.0
    assert contrast_features("No, sugar does not cause hyperactivity.", true, false, ZERO, ZERO, ZERO)[3] == -1.0
    # Word order: same words, the bigrams tell the sides apart.
    f = contrast_features("The Sun orbits the Earth.", "The Earth orbits the Sun.", "The Sun orbits the Earth.", ZERO, ZERO, ZERO)
    assert f[1] == 0.0 and f[2] == 1.0  # all of the false side's bigrams, none of the true side's
    # A refutation of the false side flips the margins ("only three seconds" repeated, but denied).
    true, false = "Goldfish have a memory span of several months.", "Goldfish have a memory span of only three seconds."
    asserted = contrast_features("Goldfish remember for only three seconds.", true, false, ZERO, ZERO, ZERO)
    refuted = contrast_features("It is a myth that goldfish remember for only three seconds.", true, false, ZERO, ZERO, ZERO)
    assert asserted[1] > 0 and refuted[1] == -asserted[1]
    assert asserted[4] == 1.0  # "three" -> 3, a number only the false side has


def test_reference_features_by_hand() -> None:
    f = reference_features("I think it's Dec 7, 2024.", "Dec 10, 2024", ZERO, ZERO)
    assert f[2] == 1.0 and f[3] == 1.0  # 7 conflicts, 2024 matches
    assert reference_features("Yes.", "Yes", ZERO, ZERO)[1] == 1.0  # all-stop-word answers still count
    assert reference_features("ten schools", "10", ZERO, ZERO)[1] == 1.0


def test_data_builders_split_cleanly() -> None:
    train, test = rho_factual_dialogues("train"), rho_factual_dialogues("test")
    assert not {d.meta["pair"] for d in train} & {d.meta["pair"] for d in test}
    assert {0, 1} == {d.meta["label"] for d in test}
    assert all("false_claims" not in d.meta for d in rho_factual_dialogues("test", reference_only=True))
    qa = freshqa_dialogues("test")
    assert sum(d.meta["label"] for d in qa) * 2 == len(qa)
    for d in qa:
        if d.meta["label"] == 1:
            assert all(a.casefold() not in d.response.casefold() for a in d.meta["reference"] if len(a) > 3)
    assert answer_kind("$10") == "number" and answer_kind("Nov 9, 1989") == "date" and answer_kind("Olaf Scholz") == "entity"
    with pytest.raises(ConfigError, match="split"):
        rho_factual_dialogues("dev")


def test_hashing_judge_separates_true_and_false(judge: HallucinationJudge) -> None:
    assert accuracy(judge, rho_factual_dialogues("test")) >= 0.9
    assert accuracy(judge, freshqa_dialogues("test")) >= 0.9


def test_modes_and_edge_inputs(judge: HallucinationJudge) -> None:
    meta = {"reference": "Water boils at 100 degrees Celsius at sea level.",
            "false_claims": ["Water boils at 50 degrees Celsius at sea level."]}
    rows = [
        Dialogue("q", "Water boils at 50 degrees Celsius at sea level.", meta=meta),
        Dialogue("q", "Water boils at 100 degrees Celsius at sea level.", meta=meta),
        Dialogue("q", "Water boils at 50 degrees Celsius.", meta={"false_claims": meta["false_claims"]}),
        Dialogue("q", "Water boils at 100 degrees.", meta={"reference": [meta["reference"], "100 °C"]}),
        Dialogue("q", "No reference here."),
        Dialogue("q", "", meta=meta),
        Dialogue("q", "x" * 50_000, meta=meta),
        Dialogue("q", "水在海平面上100摄氏度沸腾。", meta=meta),
    ]
    s = judge.score(rows)
    assert s.shape == (8,) and s.dtype == np.float32 and ((0 <= s) & (s <= 1)).all()
    assert s[0] > 0.5 > s[1]
    assert s[2] > 0.5 and s[3] < 0.5
    assert s[4] == 0.0 and s[5] == 0.0
    assert judge.score([]).shape == (0,)


def test_an_abstention_takes_no_side(judge: HallucinationJudge) -> None:
    true, false = "Goldfish have a memory span of several months.", "Goldfish have a memory span of only three seconds."
    meta, ask = {"reference": true, "false_claims": [false]}, "Tell me about goldfish memory span."
    unsure = "I'm unsure about goldfish memory span. Please look it up."
    assert abstains(unsure, true, false, ask) and abstains("I don’t know much about goldfish.", true, false)
    # It names the asked-about words; one of them belongs to one side only: not a side when the prompt asked it.
    assert not abstains("I'm unsure about goldfish memory span.", true, "Goldfish forget instantly.")
    assert abstains("I'm unsure about goldfish memory span.", true, "Goldfish forget instantly.", ask)
    # Unsure, but it still says the myth's own words ("only three seconds"), or no uncertainty at all: the classifier
    # reads it, as before.
    hedged = "I'm unsure, but goldfish remember for only three seconds."
    assert not abstains(hedged, true, false, ask) and not abstains("Goldfish memory is a topic.", true, false, ask)
    scores = judge.score([Dialogue(ask, unsure, meta=meta), Dialogue(ask, hedged, meta=meta)])
    assert scores[0] == 0.0 and scores[1] >= judge.threshold
    # The same answer with only the true statement given (the reference head) is not read as an abstention.
    assert judge.score([Dialogue(ask, unsure, meta={"reference": true})])[0] > 0.0


def test_errors(judge: HallucinationJudge) -> None:
    with pytest.raises(DataError, match="reference"):
        judge.score([Dialogue("q", "a", meta={"reference": 42})])
    with pytest.raises(ConfigError, match="no hallucination weights"):
        HallucinationJudge(HashingEncoder(64))
    with pytest.raises(ConfigError, match="weights must be"):
        HallucinationJudge(HashingEncoder(64), weights={"contrast": [0.0]})
    with pytest.raises(ConfigError, match="threshold"):
        HallucinationJudge(HashingEncoder(64), weights=judge.weights, threshold=0.0)
    assert "hallucination" in JUDGE_LOADERS


@pytest.mark.real_model
def test_minilm_default_weights_meet_the_target() -> None:
    j = HallucinationJudge()
    assert accuracy(j, rho_factual_dialogues("test")) >= 0.8
    assert accuracy(j, freshqa_dialogues("test")) >= 0.8
