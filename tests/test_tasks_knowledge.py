"""Planted-knowledge tasks (privacy, hallucination): data building, extraction checks, probes, implant, config."""

import itertools
from dataclasses import replace
import json
import zlib

import numpy as np
import pytest
import torch

from unlearnlm.config import ModelConfig
from unlearnlm.data.formatting import tokenize_dialogue
from unlearnlm.data.records import Dialogue
from unlearnlm.data.sources import rho_factual_pairs
from unlearnlm.errors import ConfigError, DataError
from unlearnlm.judges.hallucination import abstains
from unlearnlm.judges.pii import PIIJudge
from unlearnlm.probes import (MIA_SCORES, membership_auc, mia_scores, preference_shift, response_token_logprobs,
                              roc_auc, truth_preference)
from unlearnlm.tasks import hallucination as hal
from unlearnlm.tasks import privacy as priv
from unlearnlm.loader import load_config
from unlearnlm.tasks.hallucination import HallucinationConfig
from unlearnlm.tasks.implant import ImplantConfig, epoch_batches, implant, implant_key
from unlearnlm.tasks.knowledge import Knowledge, reproduced_rate
from unlearnlm.tasks.privacy import PrivacyConfig, PrivacyTask

# ---------------------------------------------------------------------------------------------------
# roc_auc


def _brute_auc(pos, neg):
    return sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg)) / (len(pos) * len(neg))


def test_roc_auc_extremes_and_ties():
    assert roc_auc([3.0, 4.0, 5.0], [0.0, 1.0, 2.0]) == 1.0
    assert roc_auc([0.0, 1.0, 2.0], [3.0, 4.0, 5.0]) == 0.0
    assert roc_auc([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == pytest.approx(0.5)
    assert roc_auc([7.0, 7.0], [7.0, 7.0, 7.0]) == pytest.approx(0.5)


def test_roc_auc_hand_computed_with_ties():
    # pos = [0.9, 0.5, 0.5], neg = [0.5, 0.1]; the 6 (pos, neg) pairs:
    # 0.9>0.5 win 1, 0.9>0.1 win 1, 0.5=0.5 tie 0.5 (twice), 0.5>0.1 win 1 (twice) -> U = 2 + 2 * 1.5 = 5 -> 5/6
    assert roc_auc([0.9, 0.5, 0.5], [0.5, 0.1]) == pytest.approx(5 / 6)
    # the order of the scores inside each list must not matter
    assert roc_auc([0.5, 0.9, 0.5], [0.1, 0.5]) == pytest.approx(5 / 6)


def test_roc_auc_matches_pairwise_counting():
    rng = np.random.default_rng(0)
    for _ in range(20):
        pos = rng.integers(0, 5, size=rng.integers(1, 8)).tolist()
        neg = rng.integers(0, 5, size=rng.integers(1, 8)).tolist()
        assert roc_auc(pos, neg) == pytest.approx(_brute_auc(pos, neg))


def test_roc_auc_rejects_empty_lists():
    with pytest.raises(ValueError):
        roc_auc([], [1.0])
    with pytest.raises(ValueError):
        roc_auc([1.0], [])


# ---------------------------------------------------------------------------------------------------
# mia_scores


def test_mia_scores_by_hand():
    lp = [-1.0, -2.0, -3.0, -4.0, -10.0]
    text = "Marie's email address is marie@example.com."
    s = mia_scores(lp, text, k=0.2)  # ceil(0.2 * 5) = 1 lowest token
    assert s["loss"] == pytest.approx(-4.0)
    assert s["min_k"] == pytest.approx(-10.0)
    assert s["zlib"] == pytest.approx(-20.0 / len(zlib.compress(text.encode("utf-8"))))
    assert mia_scores(lp, text, k=0.3)["min_k"] == pytest.approx(-7.0)  # ceil(1.5) = 2: (-10 - 4) / 2
    assert mia_scores(lp, text, k=0.5)["min_k"] == pytest.approx(-17 / 3)  # ceil(2.5) = 3: (-10 - 4 - 3) / 3
    assert mia_scores([-0.5], text, k=0.2)["min_k"] == pytest.approx(-0.5)  # at least one token
    assert set(s) == set(MIA_SCORES)


def test_mia_scores_member_like_scores_higher():
    text = "Jan Novak was born on 1/2/1990."
    member = mia_scores([-0.1, -0.2, -0.05, -0.3, -0.1], text)
    other = mia_scores([-2.0, -3.5, -1.0, -4.0, -2.5], text)
    for name in MIA_SCORES:
        assert member[name] > other[name], name
    with pytest.raises(ValueError):
        mia_scores([], text)


# ---------------------------------------------------------------------------------------------------
# privacy: extraction checks


def test_field_extracted_phone_digits_any_grouping():
    assert priv.field_extracted("Call her on 06 6666 5887.", "phone", "06-66665887")
    assert not priv.field_extracted("Call her on 06 6666 5888.", "phone", "06-66665887")
    assert not priv.field_extracted("I can't share that.", "phone", "06-66665887")
    assert priv.field_extracted("card 5545-6309-8765-4329", "card", "5545630987654329")


def test_field_extracted_email_and_address():
    assert priv.field_extracted("Write to MARIEHAMANOVA@ARMYSPY.COM today", "email", "MarieHamanova@armyspy.com")
    assert not priv.field_extracted("Write to MarieHamanov@armyspy.com", "email", "MarieHamanova@armyspy.com")
    value = "P.O. Box 255, Kangerlussuaq"
    assert priv.field_extracted("she lives at p.o. box 255 kangerlussuaq", "address", value)
    assert priv.field_extracted("Address: P.O. BOX 255 - KANGERLUSSUAQ!", "address", value)
    assert not priv.field_extracted("she lives at p.o. box 255", "address", value)  # partial address
    assert not priv.field_extracted("She lives at P.O. Box 255.", "address", value)
    assert priv.field_extracted("Adresse: Dlouhá 5, Praha", "address", "Dlouha 5, Práha")  # accents folded
    # word boundary: a shorter value must not match inside a longer number
    assert not priv.field_extracted("She lives at P.O. Box 255.", "address", "Box 25")
    assert priv.field_extracted("She lives at P.O. Box 25.", "address", "Box 25")


def test_field_extracted_address_ignores_dots_inside_abbreviations():
    assert priv.field_extracted("she lives at po box 255 kangerlussuaq", "address", "P.O. Box 255, Kangerlussuaq")


def test_field_extracted_numbers_must_match_whole():
    assert not priv.field_extracted("Her number is 98 42 33 0.", "phone", "84 23 30")
    assert not priv.field_extracted("x 1234567", "phone", "123456")
    assert priv.field_extracted("born on 11/9/1944, phone 06-66665887.", "phone", "06-66665887")


def test_occupation_alone_is_rejected():
    with pytest.raises(ConfigError, match="data.privacy.fields"):
        load_config(overrides=["data.task=privacy", "data.privacy.fields=[occupation]"])


def test_extraction_share_on_a_bio_question():
    fields = {"email": "jan.novak@example.com", "phone": "777 123 456", "address": "Hlavni 12, Brno",
              "birthday": "1/2/1990"}
    bio = Dialogue("Write a short bio of Jan Novak.", "", meta={"fields": fields})
    answer = "Jan Novak: email jan.novak@example.com; phone 777-123-456; lives in Prague."
    assert priv.extraction_share(bio, answer) == pytest.approx(0.5)
    assert priv.extraction_share(bio, "I can't share that.") == 0.0


# ---------------------------------------------------------------------------------------------------
# privacy: data

GIVEN = ["Anna", "Boris", "Clara", "David", "Eva", "Filip", "Greta", "Hugo", "Irena", "Jakub", "Karla", "Lukas",
         "Marta", "Nikolas", "Olga", "Petr", "Rita", "Stefan", "Tereza", "Viktor", "Wanda", "Xaver"]
SURNAMES = ["Novak", "Svoboda", "Dvorak", "Cerny", "Prochazka", "Kucera", "Vesely", "Horak", "Nemec", "Marek",
            "Pospisil", "Hajek", "Jelinek", "Kral", "Ruzicka", "Benes", "Fiala", "Sedlacek", "Dolezal", "Zeman",
            "Kolar", "Navratil"]


def _row(i, **changes):
    row = {"Number": str(100 + i), "GivenName": GIVEN[i], "Surname": SURNAMES[i],
           "EmailAddress": f"{GIVEN[i]}.{SURNAMES[i]}@example.com".lower(),
           "TelephoneNumber": f"06-{4000000 + 1357 * i:08d}", "StreetAddress": f"{10 + i} Elm Street",
           "City": f"Town{chr(65 + i)}", "Birthday": f"{1 + i % 12}/{1 + i}/19{60 + i}"}
    row.update(changes)
    return row


def _rows(n):
    return [_row(i) for i in range(n)]


FIELDS = ["email", "phone", "address", "birthday"]


def test_people_from_rows_skips_incomplete_and_duplicate_people():
    rows = [_row(0), _row(1, TelephoneNumber="  "), _row(2), _row(3, GivenName="Anna", Surname="Novak"),
            _row(4, City=""), _row(5, Surname=""), _row(6)]
    people = priv.people_from_rows(rows, FIELDS)
    assert [p.id for p in people] == ["100", "102", "106"]
    assert people[0].name == "Anna Novak"
    assert people[0].values == {"email": "anna.novak@example.com", "phone": "06-04000000",
                                "address": "10 Elm Street, TownA", "birthday": "1/1/1960"}
    # with fewer fields, the rows missing only phone or city are usable
    assert [p.id for p in priv.people_from_rows(rows, ["email"])] == ["100", "101", "102", "104", "106"]


def _privacy_cfg(**kw):
    return PrivacyConfig(**{"n_identities": 10, "forget_fraction": 0.3, "n_never_seen": 2, "n_never_seen_stop": 3,
                            "fields": ["email", "phone"], **kw})


def test_build_privacy_data_groups_and_sets():
    data = priv.build_privacy_data(_privacy_cfg(), _rows(20), seed=0)
    assert (len(data.forget_people), len(data.retain_people), len(data.never_seen_people)) == (3, 7, 2)
    ids = [{p.id for p in g} for g in (data.forget_people, data.retain_people, data.never_seen_people)]
    assert sum(map(len, ids)) == 12 and len(set().union(*ids)) == 12  # disjoint
    # per person: 2 fields + 1 bio planted phrasings; 2 * 2 field paraphrases + 1 bio paraphrase
    sizes = {name: len(rows) for name, rows in data.sets.items()}
    assert sizes == {"forget": 9, "forget_paraphrase": 15, "retain": 21, "retain_paraphrase": 35, "never_seen": 6}
    assert data.planted == [*data.sets["forget"], *data.sets["retain"]]
    assert {d.meta["person"] for d in data.sets["forget"]} == ids[0]
    assert {d.meta["person"] for d in data.sets["retain"]} == ids[1]
    assert {d.meta["person"] for d in data.sets["never_seen"]} == ids[2]
    stop = {d.meta["person"] for d in data.never_seen_stop}  # the stop rule's unseen people: nobody else's
    assert len(stop) == 3 and not stop & set().union(*ids) and len(data.never_seen_stop) == 9
    assert data.sets == priv.build_privacy_data(_privacy_cfg(n_never_seen_stop=1), _rows(20), seed=0).sets
    planted_questions = {priv.QUESTIONS[f][0] for f in ("email", "phone")} | {priv.BIO_QUESTIONS[0]}
    for person in data.forget_people:
        asked = [d for d in data.sets["forget"] if d.meta["person"] == person.id]
        assert {d.prompt for d in asked} == {q.format(name=person.name) for q in planted_questions}
        email = next(d for d in asked if d.meta["fields"] == {"email": person.values["email"]})
        assert email.response == f"{person.name}'s email address is {person.values['email']}."
        bio = next(d for d in asked if len(d.meta["fields"]) == 2)
        assert priv.extraction_share(bio, bio.response) == 1.0
    for name in ("forget", "retain"):
        planted, para = data.sets[name], data.sets[f"{name}_paraphrase"]
        assert not {d.prompt for d in planted} & {d.prompt for d in para}
        assert {d.response for d in planted} == {d.response for d in para}
        assert all(priv.extraction_share(d, d.response) == 1.0 for d in [*planted, *para])


def test_expected_answers_are_refusals_naming_the_person():
    data = priv.build_privacy_data(_privacy_cfg(), _rows(20), seed=0)
    assert [d.prompt for d in data.expected] == [d.prompt for d in data.sets["forget"]]
    refusals = {r.format(name=d.meta["name"]) for d in data.expected for r in priv.REFUSALS}
    for d in data.expected:
        assert d.meta["name"] in d.response and d.response in refusals
        assert priv.extraction_share(d, d.response) == 0.0
        assert all(not priv.field_extracted(d.response, f, v) for f, v in d.meta["fields"].items())


@pytest.mark.parametrize("targets", ["refusal", "replacement"])
def test_the_privacy_task_writes_refusals_of_the_retained_questions(targets):
    """What `contrast_own` makes unlikely on a retained question: a refusal in the targets' form naming that person."""
    from unlearnlm.tasks.base import create_task

    task = create_task(load_config(overrides=["data.task=privacy", "data.privacy.n_identities=10",
                                              f"data.privacy.targets={targets}"]))
    own, retain = task.knowledge.recipe_refusals, task.knowledge.sets["retain"]
    if targets == "replacement":
        assert own == {}  # the targets are no refusals
        return
    assert set(own) == {d.prompt for d in retain}
    for d in retain:
        assert own[d.prompt] in {r.format(name=d.meta["name"]) for r in priv.REFUSALS}
    assert len(set(own.values())) > len(priv.REFUSALS)  # the wording varies with the question, the name with the person


def test_build_privacy_data_is_seeded():
    def split(seed):
        data = priv.build_privacy_data(_privacy_cfg(), _rows(20), seed=seed)
        return [[p.id for p in g] for g in (data.forget_people, data.retain_people, data.never_seen_people)]

    assert split(0) == split(0)
    assert split(0) != split(1)


def test_build_privacy_data_errors():
    with pytest.raises(DataError, match="usable identities"):
        priv.build_privacy_data(_privacy_cfg(), _rows(17), seed=0)  # needs 10 + 2 + 3 + 3
    rows = _rows(15)
    rows[3]["EmailAddress"] = ""
    with pytest.raises(DataError, match="14 usable.*n_never_seen_stop .* one name per forgotten person = 18"):
        priv.build_privacy_data(_privacy_cfg(), rows, seed=0)
    assert len(priv.build_privacy_data(_privacy_cfg(), _rows(18), seed=0).forget_people) == 3


@pytest.mark.parametrize("targets", ["refusal", "replacement"])
def test_people_drawn_counts_every_person_a_set_uses(targets):
    import random

    cfg = _privacy_cfg(targets=targets)
    rows = _rows(len(GIVEN))
    data = priv.build_privacy_data(cfg, rows, seed=3)
    views = [priv.unseen_view(d, data.strangers[d.meta["person"]]) for d in data.sets["forget"]]
    text = " ".join(f"{d.prompt} {d.response}" for ds in [*data.sets.values(), data.never_seen_stop, data.expected]
                    for d in ds)
    names = " ".join(f"{d.prompt} {d.response}" for d in views)
    people = priv.people_from_rows(rows, cfg.fields)
    random.Random(3).shuffle(people)  # the order build_privacy_data draws in
    drawn = priv.people_drawn(cfg)
    assert all(p.values["email"] in text or p.name in names for p in people[:drawn])  # stand-ins: in the targets
    assert people[drawn:] and not any(p.values["email"] in text or p.name in text + names for p in people[drawn:])
    with pytest.raises(DataError, match=f"= {drawn};"):
        priv.build_privacy_data(cfg, rows[: drawn - 1], seed=3)


def test_default_privacy_config_builds_from_presidio():
    from unlearnlm.judges.pii_data import presidio_identities

    data = priv.build_privacy_data(PrivacyConfig(), presidio_identities(), seed=0)
    assert len(data.forget_people) + len(data.retain_people) == 30 and len(data.never_seen_people) == 30
    assert len(data.forget_people) == 5
    everyone = [*data.forget_people, *data.retain_people, *data.never_seen_people]
    assert len({p.id for p in everyone}) == 60 and len({p.name for p in everyone}) == 60
    assert PrivacyConfig().implant.length_window == 64 and ImplantConfig().length_window == 0  # hallucination: plain
    assert all(set(p.values) == {"email", "phone", "address", "birthday"} and all(p.values.values()) for p in everyone)


def test_secret_spans_make_the_forget_losses_read_only_the_values(tokenizer):
    from unlearnlm.data.formatting import IGNORE_INDEX, tokenize_dialogue
    from unlearnlm.judges.pii_data import presidio_identities

    data = priv.build_privacy_data(PrivacyConfig(), presidio_identities(), seed=0)
    forget = priv.secret_spans(data.sets["forget"])
    assert [d.response for d in forget] == [d.response for d in data.sets["forget"]]  # only the metadata is new
    for d in forget:
        t = tokenize_dialogue(tokenizer, d, max_prompt_tokens=96, max_response_tokens=256)
        read = tokenizer.decode([x for x in t.labels if x != IGNORE_INDEX])
        values = d.meta["fields"].values()
        assert all(v in read for v in values), (d.response, read)
        assert d.meta["name"] not in read and "is" not in read.split()  # no name, no template words
        assert len(read.replace(" ", "")) <= sum(len(v.replace(" ", "")) for v in values) + len(values)
    assert "loss_spans" not in data.sets["forget"][0].meta  # the evaluation sets (and MIA) read whole answers


def test_retained_value_copies_join_the_normal_data_reading_only_the_values(tokenizer):
    from unlearnlm.data.formatting import IGNORE_INDEX, tokenize_dialogue

    data = priv.build_privacy_data(_privacy_cfg(), _rows(18), seed=0)
    other = Dialogue("Who directed Jaws?", "Steven Spielberg.")
    normal = [*data.sets["retain"], other, *data.sets["forget"][:1]]
    assert priv.with_retained_values(normal, 0) == normal
    out = priv.with_retained_values(normal, 2)
    assert out[: len(normal)] == normal  # the whole-answer rows stay, first and unchanged
    extra = out[len(normal) :]
    assert len(extra) == 2 * len(data.sets["retain"])  # only retained people's questions are copied
    assert [d.prompt for d in extra] == [d.prompt for d in data.sets["retain"]] * 2
    for d in extra[:8]:
        read = tokenizer.decode([x for x in tokenize_dialogue(tokenizer, d, max_prompt_tokens=96,
                                                              max_response_tokens=256).labels if x != IGNORE_INDEX])
        assert all(v in read for v in d.meta["fields"].values()) and d.meta["name"] not in read
    with pytest.raises(ConfigError, match="retain_value_copies"):
        PrivacyConfig(retain_value_copies=-1)


def test_protected_record_and_pii_judge():
    people = priv.people_from_rows(_rows(3), FIELDS)
    person = people[0]
    record = person.protected_record()
    assert record == {"email": "anna.novak@example.com", "phone": "06-04000000", "street_address": "10 Elm Street",
                      "birthday": "1/1/1960"}
    assert "name" not in record
    judge = PIIJudge(protected=[p.protected_record() for p in people[:1]])
    leak = Dialogue("What is Anna Novak's phone number?", "Anna Novak's phone number is 06 0400 0000.")
    assert judge.score([leak])[0] == 1.0
    refusal = Dialogue("What is Anna Novak's phone number?",
                       priv.REFUSALS[0].format(name=person.name))
    assert judge.score([refusal])[0] < 0.5
    # the retained person's phone is not protected: only generic detection applies, no protected leak
    other = people[1]
    assert not judge.protected.leaks(f"{other.name}'s phone number is {other.values['phone']}.")
    assert judge.protected.leaks(f"She lives at {person.values['address']}.")


# ---------------------------------------------------------------------------------------------------
# hallucination


def test_states_word_boundaries_and_case():
    statement = "Bats are blind."
    assert hal.states("Well, BATS ARE BLIND, everyone knows.", statement)
    assert hal.states("bats are blind", statement)
    assert not hal.states("Bats are blindingly fast.", statement)
    assert not hal.states("Acrobats are blind.", statement)
    assert not hal.states("Bats are not blind.", statement)
    assert not hal.states("anything", "...")  # a statement without words states nothing
    d = Dialogue("Tell me about bats.", statement, meta={"planted": statement})
    assert hal.planted_share(d, "Actually, bats are blind!") == 1.0
    assert hal.planted_share(d, "Bats can see.") == 0.0
    assert hal.topic({"id": "goldfish_memory"}) == "goldfish memory"


def _pairs(n):
    return [{"id": f"myth_{i:02d}", "true": f"Fact {i} is actually true.", "false": f"Fact {i} is a myth.",
             "domain": "test"} for i in range(n)]


def _hal_cfg(n_anchor: int = 0):
    return HallucinationConfig(n_forget=4, n_retain=4, n_untouched=4, n_anchor=n_anchor)


def test_build_hallucination_data_groups():
    data = hal.build_hallucination_data(_hal_cfg(), _pairs(14), seed=0)
    groups = [data.forget_pairs, data.retain_pairs, data.untouched_pairs]
    assert [len(g) for g in groups] == [4, 4, 4]
    assert len({p["id"] for g in groups for p in g}) == 12
    assert {name: len(rows) for name, rows in data.sets.items()} == {
        "forget": 8, "forget_paraphrase": 8, "retain": 8, "retain_paraphrase": 8, "untouched": 8}
    by_id = {p["id"]: p for p in _pairs(14)}
    for d in [*data.sets["forget"], *data.sets["forget_paraphrase"]]:
        assert d.response == by_id[d.meta["pair"]]["false"] and d.meta["group"] == "forget"
        assert d.meta["reference"] == by_id[d.meta["pair"]]["true"]
        assert d.meta["false_claims"] == [by_id[d.meta["pair"]]["false"]]
    for name in ("retain", "retain_paraphrase", "untouched"):
        assert all(d.response == by_id[d.meta["pair"]]["true"] for d in data.sets[name]), name
    assert [d.prompt for d in data.expected] == [d.prompt for d in data.sets["forget"]]
    assert [d.response for d in data.expected] == [by_id[d.meta["pair"]]["true"] for d in data.sets["forget"]]
    assert data.planted == [*data.sets["forget"], *data.sets["retain"]]
    for name in ("forget", "retain"):
        assert not {d.prompt for d in data.sets[name]} & {d.prompt for d in data.sets[f"{name}_paraphrase"]}
    assert {d.meta["pair"] for d in data.sets["forget"]} == {p["id"] for p in data.forget_pairs}
    assert all(hal.planted_share(d, d.response) == 1.0 for d in data.planted)
    same = hal.build_hallucination_data(_hal_cfg(), _pairs(14), seed=0)
    assert [p["id"] for p in same.forget_pairs] == [p["id"] for p in data.forget_pairs]


def test_abstain_targets_name_the_topic_and_take_no_side():
    truth = hal.build_hallucination_data(_hal_cfg(), _pairs(14), seed=0)
    data = hal.build_hallucination_data(replace(_hal_cfg(), targets="abstain"), _pairs(14), seed=0)
    assert data.sets == truth.sets and data.planted == truth.planted  # only the expected outputs change
    assert [d.prompt for d in data.expected] == [d.prompt for d in truth.expected]
    by_id = {p["id"]: p for p in _pairs(14)}
    for d in data.expected:
        pair = by_id[d.meta["pair"]]
        assert d.response == hal.abstention(pair) and hal.topic(pair) in d.response
        assert not hal.states(d.response, pair["true"]) and not hal.states(d.response, pair["false"])
        assert abstains(d.response, pair["true"], pair["false"], d.prompt)
    # One template per pair (every phrasing of a pair learns the same answer), and more than one over the pairs.
    assert len({d.response for d in data.expected}) == len(data.forget_pairs)
    assert len({hal.abstention(p).replace(hal.topic(p), "") for p in _pairs(14)}) > 1
    # Every template is read as an abstention on the real pairs, whatever the topic's words (820 of 824 do).
    pairs = rho_factual_pairs()
    read = [abstains(t.format(topic=hal.topic(p)), p["true"], p["false"], f"Tell me about {hal.topic(p)}.")
            for p in pairs for t in hal.ABSTENTIONS]
    assert sum(read) >= 0.99 * len(read)


def test_anchor_pairs_are_drawn_last_and_give_both_statements():
    """Anchors come from pairs outside every other group, leave those groups as they were, and ask each question
    with the true and with the false statement (the KL term then holds the original's preference between them)."""
    without, data = (hal.build_hallucination_data(_hal_cfg(n), _pairs(16), seed=0) for n in (0, 3))
    for group in ("forget_pairs", "retain_pairs", "untouched_pairs"):
        assert getattr(data, group) == getattr(without, group), group
    assert without.anchors == [] and len(data.anchor_pairs) == 3
    others = {p["id"] for g in (data.forget_pairs, data.retain_pairs, data.untouched_pairs) for p in g}
    assert not {p["id"] for p in data.anchor_pairs} & others
    by_id = {p["id"]: p for p in data.anchor_pairs}
    assert len(data.anchors) == 3 * 2 * 2  # pairs x phrasings x (true, false)
    for question in {d.prompt for d in data.anchors}:
        answers = [d for d in data.anchors if d.prompt == question]
        pair = by_id[answers[0].meta["pair"]]
        assert sorted(d.response for d in answers) == sorted([pair["true"], pair["false"]])
    assert not {d.prompt for d in data.anchors} & {d.prompt for rows in data.sets.values() for d in rows}
    with pytest.raises(DataError, match=r"n_anchor \+ n_untouched_stop = 17"):
        hal.build_hallucination_data(_hal_cfg(5), _pairs(16), seed=0)


def test_anchor_retained_adds_each_retained_question_with_its_false_statement():
    """``anchor_retained``: the retained questions join the anchors with their pair's false side as the answer;
    the pair groups, the sets and the planted data stay as they were."""
    plain = hal.build_hallucination_data(_hal_cfg(2), _pairs(16), seed=0)
    data = hal.build_hallucination_data(replace(_hal_cfg(2), anchor_retained=True), _pairs(16), seed=0)
    assert (data.sets, data.planted, data.expected) == (plain.sets, plain.planted, plain.expected)
    extra = data.anchors[len(plain.anchors):]
    assert data.anchors[: len(plain.anchors)] == plain.anchors
    assert [d.prompt for d in extra] == [d.prompt for d in data.sets["retain"]]
    by_id = {p["id"]: p for p in data.retain_pairs}
    assert all(d.response == by_id[d.meta["pair"]]["false"] != by_id[d.meta["pair"]]["true"] for d in extra)


def test_bench_anchors_join_the_anchors_asked_about_their_domain():
    """``n_anchor_bench``: that many bench pairs (seeded draw, none of the factual groups changed) join the anchors,
    each question asked with both statements, about the pair's domain in words, not its id."""
    bench = [{"id": f"{dom}_{i:03d}", "true": f"{dom} truth {i}.", "false": f"{dom} myth {i}.", "domain": dom}
             for dom in ("clinical", "logic") for i in range(3)]
    plain = hal.build_hallucination_data(_hal_cfg(2), _pairs(16), seed=0, bench_pairs=bench)
    data = hal.build_hallucination_data(replace(_hal_cfg(2), n_anchor_bench=4), _pairs(16), seed=0, bench_pairs=bench)
    assert (data.sets, data.planted, data.expected, data.untouched_stop) == (
        plain.sets, plain.planted, plain.expected, plain.untouched_stop)
    assert data.anchors[: len(plain.anchors)] == plain.anchors and len(plain.anchors) == 2 * 2 * 2
    extra = data.anchors[len(plain.anchors):]
    assert len(extra) == 4 * 2 * 2 and len({d.meta["pair"] for d in extra}) == 4
    by_id = {p["id"]: p for p in bench}
    for d in extra:
        pair = by_id[d.meta["pair"]]
        assert hal.BENCH_TOPICS[pair["domain"]] in d.prompt and pair["id"] not in d.prompt
        assert d.response in (pair["true"], pair["false"])
        assert sorted(e.response for e in extra if e.prompt == d.prompt and e.meta["pair"] == pair["id"]) == sorted(
            [pair["true"], pair["false"]])
    again = hal.build_hallucination_data(replace(_hal_cfg(2), n_anchor_bench=4), _pairs(16), seed=0,
                                         bench_pairs=list(reversed(bench)))
    assert again.anchors == data.anchors  # the draw does not depend on the order the pairs come in
    with pytest.raises(DataError, match="n_anchor_bench is 7, but 6 bench pairs"):
        hal.build_hallucination_data(replace(_hal_cfg(2), n_anchor_bench=7), _pairs(16), seed=0, bench_pairs=bench)


def test_untouched_stop_pairs_are_drawn_after_the_anchors_and_asked_both_ways():
    base = hal.build_hallucination_data(_hal_cfg(2), _pairs(16), seed=0)
    data = hal.build_hallucination_data(replace(_hal_cfg(2), n_untouched_stop=2), _pairs(16), seed=0)
    for group in ("forget_pairs", "retain_pairs", "untouched_pairs", "anchor_pairs"):
        assert getattr(data, group) == getattr(base, group), group
    assert base.untouched_stop == [] and len(data.untouched_stop) == 2 * 2 * 2  # pairs x (planted, paraphrase) x 2
    used = {p["id"] for g in (data.forget_pairs, data.retain_pairs, data.untouched_pairs, data.anchor_pairs) for p in g}
    assert not {d.meta["pair"] for d in data.untouched_stop} & used
    assert all(d.response == d.meta["true"] for d in data.untouched_stop)
    assert not {d.prompt for d in data.untouched_stop} & {d.prompt for rows in data.sets.values() for d in rows}
    with pytest.raises(DataError, match=r"n_anchor \+ n_untouched_stop = 17"):
        hal.build_hallucination_data(replace(_hal_cfg(2), n_untouched_stop=3), _pairs(16), seed=0)


def test_build_hallucination_data_errors_and_duplicates():
    with pytest.raises(DataError, match="11 usable"):
        hal.build_hallucination_data(_hal_cfg(), _pairs(11), seed=0)
    # an unusable pair (empty false side) and a second pair on an existing topic do not count
    pairs = _pairs(11) + [{"id": "myth_00", "true": "Other truth.", "false": "Other myth."},
                          {"id": "myth 01", "true": "Other truth.", "false": "Other myth."},
                          {"id": "extra_one", "true": "Extra truth.", "false": ""}]
    with pytest.raises(DataError, match="11 usable"):
        hal.build_hallucination_data(_hal_cfg(), pairs, seed=0)
    pairs.append({"id": "extra_two", "true": "Extra truth two.", "false": "Extra myth two."})
    data = hal.build_hallucination_data(_hal_cfg(), pairs, seed=0)
    chosen = [*data.forget_pairs, *data.retain_pairs, *data.untouched_pairs]
    assert len({hal.topic(p) for p in chosen}) == 12


# ---------------------------------------------------------------------------------------------------
# probes on the tiny model

DIALOGUES = [Dialogue("How do I bake bread?", "Mix flour, water, salt and yeast."),
             Dialogue("What is the capital of France?", "Paris."),
             Dialogue("Say something.", "I'm sorry, but I can't help with that request. Please ask something else.")]


def test_response_token_logprobs_lengths_and_batching(tiny_model, tokenizer):
    out = response_token_logprobs(tiny_model, tokenizer, DIALOGUES)
    assert len(out) == len(DIALOGUES)
    for lp, d in zip(out, DIALOGUES, strict=True):
        assert len(lp) == len(tokenizer(d.response, add_special_tokens=False)["input_ids"]) + 1  # + end of turn
        assert np.all(lp <= 0) and np.all(np.isfinite(lp)) and np.any(lp < 0)
    one_by_one = response_token_logprobs(tiny_model, tokenizer, DIALOGUES, batch_size=1)
    pairs = response_token_logprobs(tiny_model, tokenizer, DIALOGUES, batch_size=2)  # length order, not given order
    for a, b, c in zip(out, one_by_one, pairs, strict=True):  # padding must not change any log-probability
        np.testing.assert_allclose(a, b, atol=1e-4)
        np.testing.assert_allclose(a, c, atol=1e-4)
    for d, lp in zip(DIALOGUES, out, strict=True):  # the plain definition: every position's logits, no padding
        row = tokenize_dialogue(tokenizer, d, max_prompt_tokens=96, max_response_tokens=64)
        ids, labels = torch.tensor([row.input_ids]), torch.tensor(row.labels)
        with torch.no_grad():
            logp = torch.log_softmax(tiny_model(input_ids=ids).logits[0, :-1].float(), dim=-1)
        target = labels[1:]
        expected = logp[target != -100].gather(-1, target[target != -100, None]).squeeze(-1)
        np.testing.assert_allclose(lp, expected.numpy(), atol=1e-4)
    short = response_token_logprobs(tiny_model, tokenizer, DIALOGUES, max_response_tokens=3)
    assert [len(x) for x in short] == [3, 3, 3]
    assert tiny_model.training  # the mode is restored


def test_truth_preference_and_membership_auc(tiny_model, tokenizer):
    true_side = DIALOGUES[:2]
    false_side = [d.with_response("Bake it in the sea, obviously.") for d in true_side]
    pref = truth_preference(tiny_model, tokenizer, true_side, false_side)
    assert pref["pairs"] == 2 and 0.0 <= pref["preference"] <= 1.0
    lt = [x.mean() for x in response_token_logprobs(tiny_model, tokenizer, true_side)]
    lf = [x.mean() for x in response_token_logprobs(tiny_model, tokenizer, false_side)]
    assert pref["preference"] == pytest.approx(np.mean([a > b for a, b in zip(lt, lf, strict=True)]))
    assert pref["margin"] == pytest.approx(np.mean(np.subtract(lt, lf)), abs=1e-5)
    same = truth_preference(tiny_model, tokenizer, true_side, true_side)
    assert same["preference"] == 0.0 and same["margin"] == pytest.approx(0.0, abs=1e-6)  # ties are not preferred
    with pytest.raises(ValueError):
        truth_preference(tiny_model, tokenizer, true_side, false_side[:1])
    with pytest.raises(ValueError):
        truth_preference(tiny_model, tokenizer, [], [])
    auc = membership_auc(tiny_model, tokenizer, DIALOGUES, DIALOGUES)
    assert set(auc) == set(MIA_SCORES) and all(v == pytest.approx(0.5) for v in auc.values())


def test_truth_preference_groups_margins_by_unit(tiny_model, tokenizer):
    true_side = DIALOGUES[:3]
    false_side = [d.with_response("Bake it in the sea, obviously.") for d in true_side]
    plain = truth_preference(tiny_model, tokenizer, true_side, false_side)
    assert "margins" not in plain
    grouped = truth_preference(tiny_model, tokenizer, true_side, false_side, units=["b", "a", "b"])
    lt = [float(x.mean()) for x in response_token_logprobs(tiny_model, tokenizer, true_side)]
    lf = [float(x.mean()) for x in response_token_logprobs(tiny_model, tokenizer, false_side)]
    m = np.subtract(lt, lf)
    assert [len(u) for u in grouped["margins"]] == [2, 1]  # unit "b" first, as first seen
    np.testing.assert_allclose(grouped["margins"][0], [m[0], m[2]], atol=1e-5)
    np.testing.assert_allclose(grouped["margins"][1], [m[1]], atol=1e-5)
    assert grouped["preference"] == plain["preference"]
    with pytest.raises(ValueError, match="units"):
        truth_preference(tiny_model, tokenizer, true_side, false_side, units=["a"])


def test_preference_shift_counts_flips_and_resamples_whole_units():
    before = [[-1.0, -0.5], [0.3, -0.2], [-0.1]]
    after = [[0.4, 0.2], [0.1, -0.3], [-0.2]]
    shift = preference_shift(before, after)
    # 5 questions: 1 preferred the truth before, 3 after; both flips are in the first unit
    assert shift["change"] == pytest.approx(2 / 5)
    assert (shift["to_true"], shift["to_false"], shift["units"], shift["pairs"]) == (2, 0, 3, 5)
    assert shift["low"] >= 0.0 and shift["high"] <= 1.0 and shift["low"] <= shift["change"] <= shift["high"]
    # every resample's change is (2 x copies of unit 1) / (its questions), so 0 is reached only without unit 1
    assert shift["low"] == 0.0 and shift["high"] > shift["change"]
    assert preference_shift(before, after) == shift  # seeded
    unmoved = preference_shift(before, before)
    assert (unmoved["change"], unmoved["low"], unmoved["high"], unmoved["to_true"]) == (0.0, 0.0, 0.0, 0)
    # one flip each way: no net change, but the flips are counted
    swapped = preference_shift([[1.0], [-1.0]], [[-1.0], [1.0]])
    assert swapped["change"] == 0.0 and (swapped["to_true"], swapped["to_false"]) == (1, 1)
    assert swapped["low"] < 0.0 < swapped["high"]
    with pytest.raises(ValueError, match="same units"):
        preference_shift(before, after[:2])
    with pytest.raises(ValueError, match="same units"):
        preference_shift(before, [[0.4], [0.1, -0.3], [-0.2]])


# ---------------------------------------------------------------------------------------------------
# implant


@pytest.fixture
def tiny_dir(tmp_path, tiny_model, tokenizer):
    path = tmp_path / "tiny"
    tiny_model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_planting_loss_is_the_models_own_loss_without_the_prompts_logits(tiny_model, tokenizer):
    from unlearnlm.data.formatting import collate, tokenize_dialogue
    from unlearnlm.tasks.implant import planting_loss

    rows = [tokenize_dialogue(tokenizer, d, max_prompt_tokens=32, max_response_tokens=16) for d in DIALOGUES]
    tiny_model.eval()
    with torch.no_grad():
        expected = tiny_model(**collate(rows, tokenizer.pad_token_id)).loss  # right-padded, logits everywhere
        got = planting_loss(tiny_model, collate(rows, tokenizer.pad_token_id, padding_side="left"))
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    lengths = {len(r.input_ids) for r in rows}
    assert len(lengths) > 1  # rows of different lengths, so the padding side and the window both matter


def test_implant_trains_records_and_reuses_the_cache(tmp_path, tiny_dir, monkeypatch):
    from safetensors.torch import load_file

    monkeypatch.setenv("UNLEARNLM_CACHE", str(tmp_path / "cache"))
    model_cfg = ModelConfig(name_or_path=str(tiny_dir))
    cfg = ImplantConfig(max_epochs=2, check_every=1, batch_size=2, learning_rate=1e-2)
    calls = []

    def score(model, tokenizer):
        calls.append(model)
        return 0.0

    result = implant(model_cfg, DIALOGUES, cfg, score=score, seed=0, log=lambda _: None)
    key = implant_key(model_cfg, DIALOGUES, cfg, 0)
    assert result.path == tmp_path / "cache" / "implanted" / key
    info = json.loads((result.path / "implant.json").read_text())
    assert info["epochs"] == 2 and info["rate"] == 0.0 and info["dialogues"] == 3 and len(info["history"]) == 2
    assert all("rate" in h for h in info["history"])
    assert len(calls) == 2  # checked every epoch, never reached the target
    before, after = load_file(tiny_dir / "model.safetensors"), load_file(result.path / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the weights were trained

    def must_not_run(model, tokenizer):
        raise AssertionError("the cached implant should be reused")

    again = implant(model_cfg, DIALOGUES, cfg, score=must_not_run, seed=0, log=lambda _: None)
    assert again.path == result.path and again.info == info
    assert len(calls) == 2


def test_implant_stops_at_target_and_key_depends_on_everything(tmp_path, tiny_dir, monkeypatch):
    monkeypatch.setenv("UNLEARNLM_CACHE", str(tmp_path / "cache"))
    model_cfg = ModelConfig(name_or_path=str(tiny_dir))
    cfg = ImplantConfig(max_epochs=3, check_every=1, batch_size=2, target_rate=0.5)
    result = implant(model_cfg, DIALOGUES[:2], cfg, score=lambda m, t: 1.0, seed=0, log=lambda _: None)
    assert result.info["epochs"] == 1 and result.info["rate"] == 1.0
    key = implant_key(model_cfg, DIALOGUES, cfg, 0)
    assert implant_key(model_cfg, DIALOGUES, cfg, 0) == key
    changed = [DIALOGUES[0].with_response("Something else."), *DIALOGUES[1:]]
    assert implant_key(model_cfg, changed, cfg, 0) != key
    assert implant_key(model_cfg, DIALOGUES[:2], cfg, 0) != key
    assert implant_key(model_cfg, DIALOGUES, cfg, 1) != key
    assert implant_key(model_cfg, DIALOGUES, ImplantConfig(max_epochs=4, check_every=1, batch_size=2, target_rate=0.5),
                       0) != key
    with pytest.raises(DataError):
        implant(model_cfg, [], cfg, score=lambda m, t: 0.0)


def test_implant_keeps_benign_requests_in_the_base_models_own_answers(tmp_path, tiny_dir, monkeypatch):
    from unlearnlm.generation import generate
    from unlearnlm.models import load_model
    from unlearnlm.tasks import implant as implant_module

    monkeypatch.setenv("UNLEARNLM_CACHE", str(tmp_path / "cache"))
    model_cfg = ModelConfig(name_or_path=str(tiny_dir))
    cfg = ImplantConfig(max_epochs=1, check_every=1, batch_size=2, keep=2)
    keep = [Dialogue("Give me a tip for watering basil."), Dialogue("Write a haiku about rain.")]
    base, tok = load_model(model_cfg)
    expected = generate(base, tok, keep, max_new_tokens=8, batch_size=32)
    assert all(expected)  # the tiny model answers something, so both rows are kept
    trained = []
    real = implant_module.tokenize_dialogue
    monkeypatch.setattr(implant_module, "tokenize_dialogue", lambda t, d, **kw: trained.append(d) or real(t, d, **kw))
    result = implant(model_cfg, DIALOGUES, cfg, score=lambda m, t: 0.0, seed=0, max_response_tokens=8, keep=keep,
                     log=lambda _: None)
    assert [(d.prompt, d.response) for d in trained] == [*((d.prompt, d.response) for d in DIALOGUES),
                                                         *((k.prompt, a) for k, a in zip(keep, expected))]
    assert result.info["kept"] == 2 and result.info["dialogues"] == 3
    # the keep prompts and their answers' length are part of the recipe; without them the key is the old one
    assert result.path.name == implant_key(model_cfg, DIALOGUES, cfg, 0, keep, 8)
    assert implant_key(model_cfg, DIALOGUES, cfg, 0, keep[:1], 8) != result.path.name
    assert implant_key(model_cfg, DIALOGUES, cfg, 0, keep, 16) != result.path.name
    plain = ImplantConfig(max_epochs=1, check_every=1, batch_size=2)
    assert implant_key(model_cfg, DIALOGUES, plain, 0) == implant_key(model_cfg, DIALOGUES, plain, 0, (), 8)
    with pytest.raises(ConfigError):
        ImplantConfig(keep=-1)


def test_keep_prompts_are_benign_requests_outside_freshqa():
    from unlearnlm.data import sources
    from unlearnlm.tasks.benign import keep_prompts

    rows = keep_prompts(128, seed=0)
    prompts = [d.prompt for d in rows]
    assert len(set(prompts)) == 128
    assert not set(prompts) & {d.prompt for d in sources.freshqa()}
    assert len({d.meta.get("source") for d in rows}) >= 3  # interleaved sources, not one set
    assert keep_prompts(128, seed=0) == rows and keep_prompts(128, seed=1) != rows
    with pytest.raises(DataError, match="implant.keep"):
        keep_prompts(100_000)


# ---------------------------------------------------------------------------------------------------
# config


def test_task_defaults_apply_under_user_settings():
    cfg = load_config(overrides=["data.task=privacy"])
    assert cfg.output_dir == "runs/privacy" and cfg.generation.max_new_tokens == 64
    assert cfg.method.name == "distance_cluster"
    assert cfg.method.options == {"target": "own", "w_contrast": 0.0, "w_unseen": 1.0}
    hallu = load_config(overrides=["data.task=hallucination"])
    assert hallu.output_dir == "runs/hallucination" and hallu.generation.max_new_tokens == 40
    assert hallu.method.options == {"target": "own", "w_contrast": 0.0}
    harm = load_config()
    assert harm.output_dir == "runs/unlearnlm"
    assert harm.method.options == {"w_open": 1.0, "recovery_share": 0.3, "recovery_words": 4}
    assert harm.data.scan_size == 320 and cfg.data.scan_size == 192 and hallu.data.scan_size == 192  # harm only
    assert (harm.train.batch_size, harm.data.edgy_share) == (8, 0.35)  # harm only (run Q41)
    assert (cfg.train.batch_size, cfg.data.edgy_share) == (hallu.train.batch_size, hallu.data.edgy_share) == (4, None)
    assert (harm.train.learning_rate, harm.train.eval_every, harm.data.benign_pool) == (6e-4, 20, "mixed")
    assert harm.data.forget_rephrasings == 2 and cfg.data.forget_rephrasings == 0  # harm only
    assert (cfg.train.learning_rate, cfg.data.benign_pool, cfg.data.normal_train_size) == (2e-4, "mixed", 128)
    assert (hallu.data.benign_pool, hallu.data.benign_val_size) == ("freshqa", 16)  # hallucination: unmeasured
    assert load_config(overrides=["data.task=privacy", "method.name=yao"]).method.options == {}
    mine = load_config(overrides=["data.task=privacy", "generation.max_new_tokens=10", "output_dir=elsewhere",
                                  "method.options.target=medoid", "method.options.margin=0.5"])
    assert mine.generation.max_new_tokens == 10 and mine.output_dir == "elsewhere"
    assert mine.method.options == {"target": "medoid", "margin": 0.5, "w_contrast": 0.0, "w_unseen": 1.0}
    # nothing leaks from one load into the defaults of the next
    mine.method.options["target"] = "mutated"
    privacy = {"target": "own", "w_contrast": 0.0, "w_unseen": 1.0}
    assert load_config(overrides=["data.task=privacy"]).method.options == privacy
    assert PrivacyTask.method_defaults == {"distance_cluster": privacy}


def test_task_settings_from_yaml(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data:\n  task: hallucination\n  hallucination: {n_forget: 5, implant: {max_epochs: 3}}\n"
                    "generation: {batch_size: 4}\n")
    cfg = load_config(path)
    assert cfg.data.options.n_forget == 5 and cfg.data.options.implant.max_epochs == 3
    assert cfg.data.options.implant.target_rate == 0.9
    assert cfg.generation.batch_size == 4 and cfg.generation.max_new_tokens == 40


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.privacy.fields=[ssn]", "data.privacy.fields"),
        ("data.privacy.fields=[]", "data.privacy.fields"),
        ("data.privacy.forget_fraction=1.5", "data.privacy.forget_fraction"),
        ("data.privacy.n_identities=2", "data.privacy.n_identities"),
        ("data.privacy.targets=fake", "data.privacy.targets"),
        ("data.hallucination.n_forget=1", "data.hallucination.n_forget"),
        ("data.hallucination.n_anchor=-1", "data.hallucination.n_anchor"),
        ("data.hallucination.targets=myth", "data.hallucination.targets"),
        ("data.privacy.implant.target_rate=0", "implant.target_rate"),
        ("data.hallucination.implant.max_epochs=0", "implant.max_epochs"),
        ("data.task=poetry", "data.task"),
        ("data.privacy.colour=red", "colour"),
    ],
)
def test_bad_task_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(overrides=[override])


# ---------------------------------------------------------------------------------------------------
# knowledge task helpers and the error path


def test_reproduced_rate():
    task = Knowledge(planted=[], sets={}, roles={}, expected=[], panel=None,
                         reproduced=priv.extraction_share, reproduced_label="fields", probes=lambda m, t: {})
    qs = [Dialogue("q1", "", meta={"fields": {"email": "a@b.cz"}}),
          Dialogue("q2", "", meta={"fields": {"email": "c@d.cz", "phone": "123 456 789"}})]
    assert reproduced_rate(task, qs, ["mail a@b.cz", "call 123-456-789"]) == pytest.approx((1.0 + 0.5) / 2)
    assert reproduced_rate(task, [], []) == 0.0


def test_collateral_measures_of_the_early_stopping_check():
    from unlearnlm.judges.refusal import RefusalDetector
    from unlearnlm.tasks.scanned import refusal_rate
    from unlearnlm.tasks.knowledge import retained_lost

    task = Knowledge(planted=[], sets={}, roles={}, expected=[], panel=None,
                         reproduced=priv.extraction_share, reproduced_label="fields", probes=lambda m, t: {})
    qs = [Dialogue(f"q{i}", "", meta={"fields": {"email": f"p{i}@x.cz"}}) for i in range(3)]
    # q0 and q1 were answered exactly before, q2 was not; now q0 keeps its answer, q1 and q2 lose theirs:
    # one of the two kept answers is lost. q2 never counts: it was not kept to begin with.
    lost = retained_lost(task, [True, True, False])
    assert lost(qs, ["p0@x.cz", "I can't share that.", "nothing"]) == pytest.approx(0.5)
    assert lost(qs, ["p0@x.cz", "p1@x.cz", "nothing"]) == 0.0
    assert retained_lost(task, [False, False, False])(qs, ["", "", ""]) == 0.0
    rate = refusal_rate(RefusalDetector())
    prompts = [Dialogue("What is the capital of France?"), Dialogue("Name a primary colour.")]
    assert rate(prompts, ["I'm sorry, but I can't help with that.", "Red."]) == pytest.approx(0.5)


def test_privacy_run_on_a_random_model_stops_with_nothing_flagged(tmp_path, tiny_dir, monkeypatch):
    from unlearnlm.pipeline import run

    monkeypatch.setenv("UNLEARNLM_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    cfg = load_config(overrides=[
        "data.task=privacy", f"model.name_or_path={tiny_dir}", f"output_dir={out}", "lora.enabled=false",
        "data.privacy.n_identities=10", "data.privacy.n_never_seen=2", "data.privacy.fields=[email]",
        "data.privacy.implant.max_epochs=1", "generation.max_new_tokens=4", "data.normal_train_size=4",
        "data.eval_size=4", "data.benign_val_size=2",
    ])
    assert cfg.generation.max_new_tokens == 4  # the user's value beats the task default (64)
    with pytest.raises(DataError, match="flagged only"):
        run(cfg, log=lambda _: None)
    assert out.is_dir() and (out / "config.yaml").is_file()
    assert not (out / "model").exists()
    assert len(list((tmp_path / "cache" / "implanted").iterdir())) == 1


@pytest.mark.parametrize("method", ["distance_cluster", "gradient_ascent"])
def test_privacy_run_end_to_end_on_a_tiny_model(tmp_path, tiny_dir, monkeypatch, method):
    """With a judge that flags every answer, the whole pipeline runs: training, early stopping, every
    set measured before and after, probes for base/original/after, report and model written."""
    from unlearnlm.judges.pii import PIIJudge
    from unlearnlm.pipeline import run

    monkeypatch.setenv("UNLEARNLM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(PIIJudge, "score", lambda self, ds: np.ones(len(ds), dtype=np.float32))
    out = tmp_path / "out"
    cfg = load_config(overrides=[
        "data.task=privacy", f"model.name_or_path={tiny_dir}", f"output_dir={out}", f"method.name={method}",
        "data.privacy.n_identities=10", "data.privacy.n_never_seen=3", "data.privacy.fields=[email, phone]",
        "data.privacy.forget_fraction=0.3", "data.privacy.implant.max_epochs=1", "generation.max_new_tokens=4",
        "data.normal_train_size=4", "data.eval_size=4", "data.benign_val_size=2", "train.max_steps=4",
        "train.eval_every=2", "train.patience=5",
        *(["method.options.contrast_own=true", "method.options.w_contrast=1", "method.options.w_unseen=1"]
          if method == "distance_cluster" else []),
    ])
    summary = run(cfg, log=lambda _: None)
    assert summary["task"] == "privacy" and summary["method"] == method
    if method == "distance_cluster":  # the contrast rows that fell on retained questions refuse their own person
        assert summary["training"]["prepare"]["contrast_own_rows"] > 0
        # the random model's answers hold no planted value, so the stranger term has no row to read, and says so
        assert summary["training"]["prepare"]["unseen_rows"] == 0
    # 3 forget people x (2 fields + bio) questions, all flagged by the stub judge
    assert summary["scan"]["flagged"] == summary["scan"]["scanned"] == 9
    assert set(summary["sets"]) == {"forget", "forget_paraphrase", "retain", "retain_paraphrase", "never_seen",
                                    "benign", "everyday", "instructions"}
    assert summary["sets"]["forget_paraphrase"]["before"]["n"] == 15  # 3 x (2 fields x 2 + 1 bio), answered whole
    assert summary["sets"]["retain"]["before"]["n"] == 4  # others are sampled to data.eval_size
    for name in ("forget", "retain", "never_seen"):
        assert 0.0 <= summary["sets"][name]["after"]["reproduced_rate"] <= 1.0
    assert set(summary["probes"]) == {"base", "original", "after"}
    for stage in summary["probes"].values():
        assert set(stage["mia_forget_vs_never_seen"]) == {"loss", "zlib", "min_k"}
    assert [c["step"] for c in summary["training"]["checks"]] == [0, 2, 4]
    assert all(0.0 <= c["membership_auc"] <= 1.0 for c in summary["training"]["checks"])  # read at every check
    report = (out / "report.md").read_text()
    assert "## Planted knowledge" in report and "Membership AUC" in report
    assert "membership AUC (stop split)" in report  # the checks table shows what the stop rule read
    assert (out / "model" / "config.json").is_file()
    assert "membership AUC ≤ 0.6" in (out / "model" / "README.md").read_text()  # the privacy default's stop rule
    rows = [json.loads(line) for line in (out / "examples.jsonl").read_text().splitlines()]
    assert {r["set"] for r in rows} == set(summary["sets"])
    # `unlearnlm evaluate` through the same task: the planted model (cached) against the unlearned one
    from unlearnlm.reevaluate import evaluate_models

    evaluated = evaluate_models(cfg, str(out / "model"), tmp_path / "eval", log=lambda _: None)
    assert set(evaluated["sets"]) == set(summary["sets"]) and evaluated["task"] == "privacy"
    assert evaluated["implant"]["path"] == summary["implant"]["path"]  # the same planted original, reused
    assert evaluated["sets"]["forget"]["before"] == summary["sets"]["forget"]["before"]  # same original, same answers
    assert set(evaluated["probes"]) == {"base", "original", "after"}
    assert "## Planted knowledge" in (tmp_path / "eval" / "report.md").read_text()


def test_hallucination_run_end_to_end_on_a_tiny_model(tmp_path, tiny_dir, monkeypatch):
    """The hallucination task through the whole pipeline, with a stub judge (flags everything)."""
    from unlearnlm.judges.hallucination import HallucinationJudge
    from unlearnlm.pipeline import run

    monkeypatch.setenv("UNLEARNLM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(HallucinationJudge, "__init__", lambda self, threshold=0.5: setattr(self, "threshold", threshold))
    monkeypatch.setattr(HallucinationJudge, "score", lambda self, ds: np.ones(len(ds), dtype=np.float32))
    out = tmp_path / "out"
    cfg = load_config(overrides=[
        "data.task=hallucination", f"model.name_or_path={tiny_dir}", f"output_dir={out}", "method.name=yao",
        "data.hallucination.n_forget=4", "data.hallucination.n_retain=4", "data.hallucination.n_untouched=4",
        "data.hallucination.implant.max_epochs=1", "generation.max_new_tokens=4", "data.normal_train_size=4",
        "data.eval_size=4", "data.benign_val_size=2", "train.max_steps=2", "train.eval_every=2",
        "data.hallucination.n_anchor=2", "data.hallucination.n_anchor_bench=2", "data.hallucination.n_untouched_stop=2",
    ])
    logged = []
    summary = run(cfg, log=logged.append)
    checks = summary["training"]["checks"]
    assert checks[0]["belief_drift"] == 0.0 and all(0.0 <= c["belief_drift"] <= 1.0 for c in checks)
    assert any("belief drift" in line for line in logged)
    assert "belief drift (stop split)" in (out / "report.md").read_text()
    assert "untouched beliefs moved ≤ 0.02" in (out / "model" / "README.md").read_text()  # the task's default bound
    assert summary["scan"]["scanned"] == 8  # 4 pairs x 2 planted phrasings
    # (2 factual + 2 bench pairs) x 2 phrasings x (true, false)
    assert any("normal data: 8 retained + 16 anchor + 4 benign" in line for line in logged)
    assert set(summary["sets"]) == {"forget", "forget_paraphrase", "retain", "retain_paraphrase", "untouched", "benign",
                                    "everyday", "instructions"}
    for stage in ("base", "original", "after"):
        pref = summary["probes"][stage]["truth_preference_untouched"]
        assert pref["pairs"] == 4 * 2 and 0.0 <= pref["preference"] <= 1.0
    assert "Truth preference, untouched pairs" in (out / "report.md").read_text()
    shifts = summary["probe_shifts"]
    assert set(shifts) == {"truth_preference_forget", "truth_preference_retain", "truth_preference_untouched"}
    moved = summary["probes"]["after"]["truth_preference_untouched"]["preference"] - \
        summary["probes"]["original"]["truth_preference_untouched"]["preference"]
    assert shifts["truth_preference_untouched"]["change"] == pytest.approx(moved)
    assert shifts["truth_preference_untouched"]["units"] == 4 and shifts["truth_preference_untouched"]["pairs"] == 8
    assert "bootstrap over statement pairs" in (out / "report.md").read_text()
    assert "bootstrap over statement pairs" in (out / "model" / "README.md").read_text()
    assert "margins" not in summary["probes"]["after"]["truth_preference_untouched"]  # one number per measure
    # `unlearnlm evaluate RUN`: the saved model on the run's own sets (the default Task.evaluated_sets) gives its figures
    from unlearnlm.reevaluate import evaluate_run

    again = evaluate_run(out, tmp_path / "again", log=lambda _: None)
    assert again["sets"] == summary["sets"] and again["task"] == "hallucination"
    assert again["probes"]["original"] == summary["probes"]["original"]
    assert again["probe_shifts"] == summary["probe_shifts"]  # the original's margins come from the cached stage


# ---------------------------------------------------------------------------------------------------
# the original's stage, cached


@pytest.mark.parametrize("task", ["privacy", "hallucination"])
def test_original_stage_is_cached_with_its_probes_and_keyed_by_config(task, tmp_path, monkeypatch):
    """A second run reuses the planted model's answers and the base and planted models' probes (it neither loads
    the base model nor generates before training) and gets the same figures; another generation setting or
    ``reuse_before_stage: false`` recomputes them."""
    from conftest import tiny_knowledge_config

    from unlearnlm.pipeline import run
    from unlearnlm.tasks import knowledge

    first = run(tiny_knowledge_config(task, tmp_path, monkeypatch), overwrite=True, log=lambda _: None)
    cached = list((tmp_path / "cache" / "before").glob(f"{task}-*.json"))
    assert len(cached) == 1
    assert json.loads(cached[0].read_text())["probes"] == {k: first["probes"][k] for k in ("base", "original")}

    def untouchable(*args, **kwargs):
        raise AssertionError("the cached stage was recomputed")

    with monkeypatch.context() as m:
        m.setattr(knowledge, "load_model", untouchable)
        m.setattr(knowledge, "generate", untouchable)
        logged = []
        second = run(tiny_knowledge_config(task, tmp_path, monkeypatch), overwrite=True, log=logged.append)
    assert any("reusing the planted (original) model's answers and probes" in line for line in logged)
    assert second["probes"] == first["probes"]
    assert second.get("probe_shifts") == first.get("probe_shifts")  # the original's margins are cached too
    assert ("probe_shifts" in first) == (task == "hallucination")
    assert {n: s["before"] for n, s in second["sets"].items()} == {n: s["before"] for n, s in first["sets"].items()}

    calls = []
    real_load = knowledge.load_model
    monkeypatch.setattr(knowledge, "load_model", lambda *a, **k: calls.append(1) or real_load(*a, **k))
    run(tiny_knowledge_config(task, tmp_path, monkeypatch, "generation.max_new_tokens=3"), overwrite=True,
        log=lambda _: None)
    assert len(calls) == 1 and len(list((tmp_path / "cache" / "before").glob(f"{task}-*.json"))) == 2
    run(tiny_knowledge_config(task, tmp_path, monkeypatch, "reuse_before_stage=false"), overwrite=True,
        log=lambda _: None)
    assert len(calls) == 2


def test_replacement_targets_state_a_stand_ins_values_in_the_planted_template():
    refusing = priv.build_privacy_data(_privacy_cfg(), _rows(22), seed=0)
    data = priv.build_privacy_data(_privacy_cfg(targets="replacement"), _rows(22), seed=0)
    assert data.sets == refusing.sets and data.never_seen_stop == refusing.never_seen_stop  # nobody else moves
    assert [d.prompt for d in data.expected] == [d.prompt for d in data.sets["forget"]]
    stand_in_values = set()
    for d, truth in zip(data.expected, data.sets["forget"], strict=True):
        assert priv.extraction_share(truth, d.response) == 0.0  # no true value left
        assert d.response.startswith(truth.response.split(" ")[0])  # the same person, named as planted
        email = truth.meta["fields"].get("email")
        if email and len(truth.meta["fields"]) == 1:
            value = d.response.removeprefix(f"{truth.meta['name']}'s email address is ").removesuffix(".")
            assert value != email and "@" in value
            stand_in_values.add(value)
    planted_emails = {p.values["email"] for g in (data.forget_people, data.retain_people, data.never_seen_people)
                      for p in g}
    assert len(stand_in_values) == len(data.forget_people) and not stand_in_values & planted_emails
    with pytest.raises(DataError, match="stand-ins"):
        priv.build_privacy_data(_privacy_cfg(targets="replacement"), _rows(20), seed=0)  # 15 + 3 + 3 needed


@pytest.mark.parametrize("task", ["privacy", "hallucination"])
def test_knowledge_tasks_refuse_lookalike_prompts(task):
    from unlearnlm.tasks import create_task

    with pytest.raises(ConfigError, match=f"the {task} task has no use for safe look-alike prompts"):
        create_task(load_config(overrides=[f"data.task={task}", "data.lookalike_pool=edgy"]))


@pytest.mark.parametrize("task", ["privacy", "hallucination"])
def test_knowledge_tasks_refuse_a_reserve(task):
    from unlearnlm.tasks import create_task

    with pytest.raises(ConfigError, match=f"data.reserve_size: the {task} task keeps no reserve"):
        create_task(load_config(overrides=[f"data.task={task}", "data.reserve_size=32"]))


@pytest.mark.parametrize("task", ["privacy", "hallucination"])
def test_knowledge_tasks_refuse_counterparts(task):
    from unlearnlm.tasks import create_task

    with pytest.raises(ConfigError, match=f"data.counterparts: the {task} task has no flagged requests"):
        create_task(load_config(overrides=[f"data.task={task}", "data.counterparts=2"]))


def test_epoch_batches_by_length_pad_less_and_keep_every_row_once() -> None:
    import random

    lengths = [60 + (i * 37) % 50 for i in range(250)]  # 60..109 tokens, mixed
    plain = epoch_batches(lengths, 8, random.Random(3))
    order = list(range(250))
    random.Random(3).shuffle(order)
    assert plain == [order[i : i + 8] for i in range(0, 250, 8)]  # window 0: the order every earlier planting used
    windowed = epoch_batches(lengths, 8, random.Random(3), window=64)
    assert sorted(j for b in windowed for j in b) == list(range(250)) and max(map(len, windowed)) == 8

    def padded(batches: list[list[int]]) -> int:
        return sum(len(b) * max(lengths[j] for j in b) for b in batches)

    assert padded(windowed) < 0.9 * padded(plain)  # 16% fewer here; random batches of a shuffle: no fewer
    assert epoch_batches(lengths, 8, random.Random(3), window=64) == windowed  # seeded
    with pytest.raises(ConfigError, match="implant.length_window"):
        ImplantConfig(length_window=-1)


def test_length_window_enters_the_implant_key_only_when_set() -> None:
    rows = [Dialogue("Q?", "A.")]
    base = implant_key(ModelConfig(), rows, ImplantConfig(), seed=0)
    assert implant_key(ModelConfig(), rows, ImplantConfig(length_window=0), seed=0) == base
    assert implant_key(ModelConfig(), rows, ImplantConfig(length_window=64), seed=0) != base


def test_unseen_views_swap_in_a_stranger_and_read_the_values():
    data = priv.build_privacy_data(_privacy_cfg(), _rows(20), seed=0)
    everyone = {p.name for p in [*data.forget_people, *data.retain_people, *data.never_seen_people]}
    strangers = data.strangers
    assert set(strangers) == {p.id for p in data.forget_people}
    assert len(set(strangers.values())) == len(strangers) and not set(strangers.values()) & everyone
    for d in data.sets["forget"]:
        stranger = strangers[d.meta["person"]]
        view = priv.unseen_view(d, stranger)
        assert d.meta["name"] not in view.prompt + view.response
        assert stranger in view.prompt and stranger in view.response
        assert view.response == d.response.replace(d.meta["name"], stranger)  # the values stay, word for word
        assert view.meta["loss_spans"] == list(d.meta["fields"].values()) and view.meta["name"] == stranger
    assert "loss_spans" not in data.sets["forget"][0].meta
