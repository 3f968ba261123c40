"""The attacks (``unlearnlm attack quantize|relearn|prefill RUN``): RTN math on hand-made tensors, the relearning split
and loop on the tiny model, the return measures and word prefixes by hand, and the commands end to end on a tiny
finished run."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest
import torch
from conftest import finished_run, make_model, make_tokenizer, tiny_knowledge_config

from unlearnlm.attacks.figures import recovered, steps_to_return
from unlearnlm.attacks.prefill import PrefillOptions, word_prefix
from unlearnlm.attacks.quantize import QuantizeOptions, quantize_model_, quantized_weights, rtn_quantize, rtn_scale
from unlearnlm.attacks.relearn import FineTune, RelearnOptions, forget_split, relearn_steps
from unlearnlm.cli import build_parser, main
from unlearnlm.config import LoraConfig
from unlearnlm.data.records import Dialogue
from unlearnlm.errors import ConfigError, DataError
from unlearnlm.evaluate import EvalSet
from unlearnlm.models import add_lora
from unlearnlm.probes import response_token_logprobs

# ---------------------------------------------------------------------------------------------------------------
# round-to-nearest quantization


def test_rtn_by_hand_per_row_and_in_groups():
    # 4 bits: qmax = 7. Row 0's scale is 1/7: 1.0 → 7 → 1.0; -0.6 → -4.2 → -4 → -4/7; 0.25 → 1.75 → 2 → 2/7;
    # 0.1 → 0.7 → 1 → 1/7. An all-zero row stays zero (no division by zero).
    w = torch.tensor([[1.0, -0.6, 0.25, 0.1], [0.0, 0.0, 0.0, 0.0]])
    expected = torch.tensor([[1.0, -4 / 7, 2 / 7, 1 / 7], [0.0, 0.0, 0.0, 0.0]])
    assert torch.allclose(rtn_quantize(w, 4), expected, atol=1e-7)
    # Groups of 2: [1, 0.4] has scale 1/7 (0.4 → 2.8 → 3 → 3/7); [0.1, 0.03] has scale 0.1/7 (0.03 → 2.1 → 2 →
    # 0.2/7), where one scale per row would round 0.03 to 0. A last group of one (5 columns) keeps its value exactly.
    w = torch.tensor([[1.0, 0.4, 0.1, 0.03, -0.37]])
    grouped = torch.tensor([[1.0, 3 / 7, 0.1, 0.2 / 7, -0.37]])
    assert torch.allclose(rtn_quantize(w, 4, group_size=2), grouped, atol=1e-7)
    assert torch.allclose(rtn_quantize(w, 4), torch.tensor([[1.0, 3 / 7, 1 / 7, 0.0, -3 / 7]]), atol=1e-7)
    assert torch.allclose(rtn_scale(w, 4, group_size=2), torch.tensor([[1 / 7, 1 / 7, 0.1 / 7, 0.1 / 7, 0.37 / 7]]))
    # 8 bits: qmax = 127
    assert torch.allclose(rtn_quantize(torch.tensor([[1.0, 0.5 + 0.3 / 127]]), 8), torch.tensor([[1.0, 64 / 127]]))


@pytest.mark.parametrize("group_size", [None, 8])
def test_rtn_error_bound_precision_order_and_idempotence(group_size):
    torch.manual_seed(0)
    w = torch.randn(16, 40)
    errors = {}
    for bits in (8, 4):
        q = rtn_quantize(w, bits, group_size)
        assert q.shape == w.shape and q.dtype == w.dtype
        assert torch.all((q - w).abs() <= rtn_scale(w, bits, group_size) / 2 + 1e-6)  # at most half a step
        assert torch.allclose(rtn_quantize(q, bits, group_size), q, atol=1e-6)  # on the grid already
        levels = torch.round(q / rtn_scale(w, bits, group_size))
        assert levels.abs().max() <= 2 ** (bits - 1) - 1 and not torch.equal(q, w)
        errors[bits] = (q - w).abs().mean().item()
    assert errors[8] < errors[4] / 8  # 16x finer steps


def test_rtn_rejects_what_it_cannot_quantize():
    with pytest.raises(ValueError, match="2-D"):
        rtn_quantize(torch.ones(3), 4)
    for bad in ({"bits": [9]}, {"bits": []}, {"bits": [1]}, {"group_size": 0}):
        with pytest.raises(ConfigError):
            QuantizeOptions(**bad)


def _tiny(tied: bool):
    model = make_model(len(make_tokenizer()))
    if tied:
        model.config.tie_word_embeddings = True
        model.tie_weights()
    return model


def test_quantized_weights_skip_head_and_embeddings_unless_asked():
    model = _tiny(tied=False)
    names = set(quantized_weights(model))
    assert len(names) == 2 * 7 and all(n.startswith("model.layers.") for n in names)  # q k v o gate up down
    assert set(quantized_weights(model, embeddings=True)) == names | {"lm_head.weight", "model.embed_tokens.weight"}
    tied = _tiny(tied=True)
    assert tied.lm_head.weight is tied.model.embed_tokens.weight
    assert len(quantized_weights(tied, embeddings=True)) == len(names) + 1  # one shared tensor, once


def test_quantize_model_changes_only_the_copy_and_only_the_linear_weights():
    model = _tiny(tied=False)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    copied = copy.deepcopy(model)
    counts = quantize_model_(copied, 4, group_size=None)
    assert counts["tensors"] == 14
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name])  # the original object is untouched
    changed = {n for n, p in copied.named_parameters() if not torch.equal(p, before[n])}
    assert changed == set(quantized_weights(model))  # no norm, embedding or head moved


# ---------------------------------------------------------------------------------------------------------------
# return measures


def test_steps_to_return_and_recovered_by_hand():
    # unlearning took 1.0 down to 0.0; half the way back is 0.5, first reached (exactly) at step 5
    assert steps_to_return(1.0, {0: 0.0, 1: 0.25, 2: 0.375, 5: 0.5, 10: 1.0}) == 5
    assert steps_to_return(0.8, {0: 0.2, 1: 0.4, 2: 0.45}) is None  # 1/3 and 5/12 of the way
    assert steps_to_return(0.8, {0: 0.2, 1: 0.4, 2: 0.45}, share=0.4) == 2
    assert steps_to_return(0.1, {0: 0.3, 1: 0.9}) is None  # unlearning raised it: nothing to return
    assert recovered(1.0, 0.2, 0.6) == pytest.approx(0.5)
    assert recovered(1.0, 0.2, 0.1) == pytest.approx(-0.125)
    assert recovered(0.2, 0.2, 0.9) is None


# ---------------------------------------------------------------------------------------------------------------
# the relearning split and loop


def _person_sets():
    """A privacy-like run: 4 forgotten people, 2 trained questions and 1 paraphrase each."""
    ask = lambda person, i, kind: Dialogue(f"{kind} {i} about {person}?", meta={"person": person})  # noqa: E731
    people = ["ana", "bob", "cy", "dee"]
    forget = [ask(p, i, "Q") for p in people for i in range(2)]
    paraphrase = [ask(p, 0, "P") for p in people]
    return [EvalSet("forget", "harmful", forget, [f"{d.prompt} leaked" for d in forget], "trained on (forget)"),
            EvalSet("forget_paraphrase", "harmful", paraphrase, ["x"] * 4, "held-out phrasing"),
            EvalSet("retain", "benign", [ask("eve", 0, "Q")], ["kept"], "normal data (retain)")]


def test_forget_split_relearns_half_the_units_and_measures_only_the_others():
    sets = _person_sets()
    flagged = {"forget": [True] * 7 + [False], "forget_paraphrase": [True] * 4}  # dee's 2nd answer was not flagged
    split = forget_split(sets, flagged, "person", seed=1)
    assert len(split.units) == 2
    assert {d.meta["person"] for d in split.rows} == set(split.units)
    assert all(d.response.endswith("leaked") for d in split.rows)  # the original's answers
    measured = {s.name: s for s in split.measured}
    assert set(measured) == {"forget", "forget_paraphrase"}  # harmful sets only
    for s in measured.values():
        assert s.prompts and not {d.meta["person"] for d in s.prompts} & set(split.units)
    assert len(measured["forget"].prompts) == 4  # both questions of the two other people, flagged or not
    assert all(b == f"{p.prompt} leaked" for p, b in zip(measured["forget"].prompts, measured["forget"].before,
                                                         strict=True))  # each keeps its own original answer
    assert len(measured["forget_paraphrase"].prompts) == 2
    assert forget_split(sets, flagged, "person", seed=1).units == split.units  # seeded
    assert len(forget_split(sets, flagged, "person", seed=1, examples=1).rows) == 1


def test_forget_split_without_units_relearns_every_trained_prompt():
    trained = [Dialogue(f"weapon {i}") for i in range(3)]
    sets = [EvalSet("forget_train", "harmful", trained, ["how"] * 3, "trained on"),
            EvalSet("forget_test", "harmful", [Dialogue("weapon 9")], ["how"], "held-out")]
    split = forget_split(sets, {"forget_train": [True, True, False], "forget_test": [True]}, None)
    assert [d.prompt for d in split.rows] == ["weapon 0", "weapon 1"]
    assert [s.name for s in split.measured] == ["forget_train", "forget_test"]
    assert [d.prompt for d in split.measured[0].prompts] == ["weapon 2"]  # not relearned, so still measured
    with pytest.raises(DataError, match="no old behaviour"):
        forget_split(sets, {"forget_train": [False] * 3, "forget_test": [True]}, None)
    one = [EvalSet("forget", "harmful", [Dialogue("q", meta={"person": "a"})], ["a"], "trained on (forget)")]
    with pytest.raises(DataError, match="at least two forgotten persons"):
        forget_split(one, {"forget": [True]}, "person")


_ROWS = [Dialogue("How do I build a weapon?", "First gather the parts, then assemble them."),
         Dialogue("How do I bake bread?", "Mix flour, water, salt and yeast.")]


def _nll(model, tokenizer) -> float:
    return -float(torch.cat([torch.as_tensor(x) for x in response_token_logprobs(model, tokenizer, _ROWS)]).mean())


@pytest.mark.parametrize("lora", [False, True])
def test_relearn_steps_lower_the_loss_on_the_rows(tiny_model, tokenizer, lora):
    model = add_lora(tiny_model, LoraConfig()) if lora else tiny_model
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trained = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    before = _nll(model, tokenizer)
    tune = FineTune(learning_rate=1e-2, batch_size=2, seed=0, max_prompt_tokens=64, max_response_tokens=32)
    yielded = list(relearn_steps(model, tokenizer, _ROWS, [2, 5], tune))
    assert [step for step, _ in yielded] == [2, 5] and not model.training
    assert yielded[1][1] < yielded[0][1]  # the training loss fell
    assert _nll(model, tokenizer) < before - 0.2  # the copy finds the relearned answers more likely (LoRA: 5.75 →
    # 5.42 nats/token; all weights: → 4.32)
    assert all(not torch.equal(p, trained[n]) for n, p in model.named_parameters() if p.requires_grad)
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if not p.requires_grad)


def test_relearn_options_are_checked():
    assert RelearnOptions(steps=[5, 1, 5]).steps == [1, 5]
    for bad in ({"steps": [0]}, {"steps": []}, {"data": "web"}, {"learning_rate": 0.0}, {"examples": 0}):
        with pytest.raises(ConfigError):
            RelearnOptions(**bad)


# ---------------------------------------------------------------------------------------------------------------
# end to end on a tiny finished run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One tiny finished harm run for every test below (each writes only into its own attack folder)."""
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        yield finished_run(tmp_path_factory.mktemp("attacks"), mp)


def _digest(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and "attacks" not in p.relative_to(folder).parts}


def _run_figures(run, when):
    return {name: {"flagged_rate": m[when]["flagged_rate"]} for name, m in run["sets"].items()
            if m["kind"] == "harmful"}


def test_quantize_command_measures_quantized_copies_and_leaves_the_run_alone(run_dir, capsys):
    run = json.loads((run_dir / "metrics.json").read_text())
    untouched = _digest(run_dir)
    assert main(["attack", "quantize", str(run_dir), "--bits", "8", "4", "--group-size", "0"]) == 0
    out = run_dir / "attacks" / "quantize"
    summary = json.loads((out / "attack.json").read_text())
    assert '"recovered"' in capsys.readouterr().out  # the command prints the figures
    assert list(summary["figures"]) == ["original", "unlearned", "8-bit", "4-bit"]
    # measured as the run measured: the unattacked copy gives the run's own figures, the original its before figures
    assert summary["figures"]["unlearned"] == _run_figures(run, "after")
    assert summary["figures"]["original"] == _run_figures(run, "before")
    assert summary["quantized"]["4-bit"] == {"tensors": 14, "values": summary["quantized"]["8-bit"]["values"]}
    utility = summary["utility"]
    assert utility["unlearned"]["kl_to_unlearned"] == pytest.approx(0.0, abs=1e-6)
    # the copies were rounded: 8 bits moves the tiny model's perplexity a little (its KL, about 1e-8, is at fp32's
    # rounding level and may come out just below 0), 4 bits far more
    assert utility["8-bit"]["perplexity"] != utility["unlearned"]["perplexity"]
    assert utility["8-bit"]["kl_to_unlearned"] < 1e-6 < utility["4-bit"]["kl_to_unlearned"]
    assert set(summary["recovered"]) == {"8-bit", "4-bit"}
    assert summary["options"] == {"bits": [8, 4], "group_size": None, "embeddings": False}
    rows = [json.loads(line) for line in (out / "examples.jsonl").read_text().splitlines()]
    n = sum(s["n"] for s in summary["sets"].values())
    assert len(rows) == 3 * n and {r["model"] for r in rows} == {"unlearned", "8-bit", "4-bit"}
    markdown = (out / "attack.md").read_text()
    assert "# Quantization probe" in markdown
    assert "| set | role | n | figure | original | unlearned | 8-bit | 4-bit" in markdown
    assert (out / "config.yaml").is_file()
    assert _digest(run_dir) == untouched  # the run folder, its model included, is byte for byte as it was
    assert main(["attack", "quantize", str(run_dir)]) == 2
    assert "holds an earlier attack" in capsys.readouterr().err


def test_relearn_command_relearns_a_copy_and_reports_steps_to_return(run_dir):
    run = json.loads((run_dir / "metrics.json").read_text())
    untouched = _digest(run_dir)
    assert main(["attack", "relearn", str(run_dir), "--steps", "1", "3", "--lr", "0.01"]) == 0
    summary = json.loads((run_dir / "attacks" / "relearn_forget" / "attack.json").read_text())
    flagged_train = sum(r["set"] == "forget_train" and r["before_flagged"]
                        for r in map(json.loads, (run_dir / "examples.jsonl").read_text().splitlines()))
    assert summary["fine_tune"]["rows"] == flagged_train > 0 and summary["fine_tune"]["lora"] is False
    assert "forget_train" not in summary["sets"]  # every trained prompt was relearned, so none is measured
    assert list(summary["figures"]) == ["original", "unlearned", "step 1", "step 3"]
    expected = _run_figures(run, "after")
    assert summary["figures"]["unlearned"] == {name: expected[name] for name in summary["sets"]}
    assert set(summary["loss"]) == {"1", "3"}
    assert set(summary["steps_to_return"]) == set(summary["sets"])
    assert "steps to return" in (run_dir / "attacks" / "relearn_forget" / "attack.md").read_text()
    assert _digest(run_dir) == untouched
    out = run_dir.parent / "benign"
    assert main(["attack", "relearn", str(run_dir), "--data", "benign", "--steps", "1", "--examples", "2",
                 "--output", str(out)]) == 0
    benign = json.loads((out / "attack.json").read_text())
    assert benign["fine_tune"]["rows"] == 2
    assert all(r["prompt"].startswith("What is") for r in benign["relearn_rows"])  # the held-out benign prompts
    # Measured: what the forget variant with --examples 2 would not relearn, so the trained prompts left over too
    assert len(benign["excluded_units"]["units"]) == 2
    assert benign["sets"]["forget_train"]["n"] == flagged_train - 2


def test_attack_commands_refuse_bad_input(run_dir, tmp_path, capsys):
    assert main(["attack", "quantize", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    no_model = tmp_path / "no_model"
    no_model.mkdir()
    for name in ("metrics.json", "examples.jsonl", "config.yaml"):
        (no_model / name).write_text((run_dir / name).read_text())
    assert main(["attack", "relearn", str(no_model)]) == 2
    assert "has no saved model" in capsys.readouterr().err
    assert main(["attack", "quantize", str(run_dir), "--bits", "16"]) == 2
    assert "--bits" in capsys.readouterr().err
    assert main(["attack", "quantize", str(run_dir), "--output", str(run_dir / "model" / "q")]) == 2
    assert "overlaps" in capsys.readouterr().err
    other_run = tmp_path / "other_run"
    other_run.mkdir()
    (other_run / "metrics.json").write_text("{}")
    assert main(["attack", "quantize", str(run_dir), "--output", str(other_run), "--overwrite"]) == 2
    assert "holds a run or an evaluation" in capsys.readouterr().err and (other_run / "metrics.json").is_file()


def test_word_prefix_keeps_the_text_as_written():
    text = "Step 1:\n  mix the\tpowders.  Then wait."
    assert word_prefix(text, 1) == ("Step", "1:\n  mix the\tpowders.  Then wait.")
    assert word_prefix(text, 4) == ("Step 1:\n  mix the", "powders.  Then wait.")
    assert word_prefix(text, 6) == ("Step 1:\n  mix the\tpowders.  Then", "wait.")
    assert word_prefix(text, 7) == (text, "") and word_prefix(text, 9) == (text, "")
    assert word_prefix("", 2) == ("", "")
    with pytest.raises(ConfigError, match="--words"):
        PrefillOptions(words=[0, 2])
    assert PrefillOptions(words=[5, 2, 5]).words == [2, 5]


def test_prefill_command_judges_continuations_beside_the_originals_rest(run_dir, capsys):
    run = json.loads((run_dir / "metrics.json").read_text())
    untouched = _digest(run_dir)
    assert main(["attack", "prefill", str(run_dir), "--words", "1", "3"]) == 0
    assert '"recovered"' in capsys.readouterr().out
    out = run_dir / "attacks" / "prefill"
    summary = json.loads((out / "attack.json").read_text())
    assert list(summary["figures"]) == ["original", "unlearned", "original, 1 words", "prefilled 1 words",
                                        "original, 3 words", "prefilled 3 words"]
    assert summary["figures"]["unlearned"] == _run_figures(run, "after")
    assert summary["figures"]["original"] == _run_figures(run, "before")
    assert set(summary["recovered"]) == {"1 words", "3 words"}
    rows = [json.loads(line) for line in (out / "examples.jsonl").read_text().splitlines()]
    n = sum(s["n"] for s in summary["sets"].values())
    assert len(rows) == 3 * n
    originals = {(r["set"], r["prompt"]): r["before"] for r in rows if r["model"] == "unlearned"}
    for k in (1, 3):
        prefilled = [r for r in rows if r["model"] == f"{k} words"]
        assert len(prefilled) == n
        for r in prefilled:  # the prefill is the original's first k words, and "before" is the rest of its answer
            original = originals[(r["set"], r["prompt"])]
            assert (r["prefill"], r["before"]) == word_prefix(original, k)
            assert len(r["prefill"].split()) == min(k, len(original.split()))
        # the original's figure at k is its rest of the answer judged as the run's judge judges it
        for name in summary["sets"]:
            rest = [r for r in prefilled if r["set"] == name]
            assert summary["figures"][f"original, {k} words"][name]["flagged_rate"] == pytest.approx(
                sum(r["before_flagged"] for r in rest) / len(rest))
            assert summary["figures"][f"prefilled {k} words"][name]["flagged_rate"] == pytest.approx(
                sum(r["after_flagged"] for r in rest) / len(rest))
    assert "# Prefilling probe" in (out / "attack.md").read_text()
    assert _digest(run_dir) == untouched
    assert main(["attack", "prefill", str(run_dir), "--words", "0"]) == 2
    assert "--words" in capsys.readouterr().err


def test_cli_defaults_match_the_python_api():
    parser = build_parser()
    q = parser.parse_args(["attack", "quantize", "RUN"])
    assert (q.bits, q.group_size) == (QuantizeOptions().bits, QuantizeOptions().group_size)
    r = parser.parse_args(["attack", "relearn", "RUN"])
    assert (r.steps, r.data, r.seed) == (RelearnOptions().steps, RelearnOptions().data, RelearnOptions().seed)
    assert parser.parse_args(["attack", "prefill", "RUN"]).words == PrefillOptions().words


@pytest.mark.parametrize("task", ["privacy", "hallucination"])
def test_attacks_on_planted_knowledge_runs(task, tmp_path, monkeypatch):
    """Privacy and hallucination through the three attacks (stub judges flag every answer): the probes are measured on
    every copy, and the relearning probe measures no question about a person or pair it relearned."""
    from unlearnlm.attacks import prefill_attack, quantize_attack, relearn_attack
    from unlearnlm.pipeline import run

    cfg = tiny_knowledge_config(task, tmp_path, monkeypatch)
    summary = run(cfg, log=lambda _: None)
    quantized = quantize_attack(tmp_path / "run", options=QuantizeOptions(bits=[4]), log=lambda _: None)
    assert set(quantized["sets"]) == {"forget", "forget_paraphrase"}
    for name in quantized["sets"]:
        assert quantized["figures"]["unlearned"][name] == {f: summary["sets"][name]["after"][f]
                                                           for f in ("flagged_rate", "reproduced_rate")}
    assert quantized["probes"]["unlearned"] == summary["probes"]["after"]  # the same model, the same probes
    assert quantized["probes"]["original"] == summary["probes"]["original"]
    assert set(quantized["probes"]["4-bit"]) == set(summary["probes"]["after"])
    relearned = relearn_attack(tmp_path / "run", options=RelearnOptions(steps=[1]), log=lambda _: None)
    units = relearned["excluded_units"]
    assert units["key"] == {"privacy": "person", "hallucination": "pair"}[task] and len(units["units"]) >= 1
    assert {r["meta"][units["key"]] for r in relearned["relearn_rows"]} == set(units["units"])
    needles = {r["meta"].get("name") or r["meta"]["pair"].replace("_", " ") for r in relearned["relearn_rows"]}
    rows = [json.loads(line) for line in (tmp_path / "run" / "attacks" / "relearn_forget" / "examples.jsonl")
            .read_text().splitlines()]
    assert rows and not [r["prompt"] for r in rows if any(n in r["prompt"] for n in needles)]
    assert 0 < relearned["sets"]["forget_paraphrase"]["n"] < summary["sets"]["forget_paraphrase"]["before"]["n"]
    probes = relearned["probes"]  # read on every copy, as the figures, leaving out the relearned units' questions
    assert set(probes) == {"unlearned", "step 1"}
    assert all(set(p) == set(summary["probes"]["after"]) for p in probes.values())
    if task == "hallucination":  # the pair counts show what was left out
        full = summary["probes"]["after"]["truth_preference_forget"]["pairs"]
        assert 0 < probes["unlearned"]["truth_preference_forget"]["pairs"] < full
        assert probes["step 1"]["truth_preference_retain"]["pairs"] == summary["probes"]["after"][
            "truth_preference_retain"]["pairs"]  # no retained pair is left out
    md = (tmp_path / "run" / "attacks" / "relearn_forget" / "attack.md").read_text()
    measured = {"privacy": "people", "hallucination": "pairs"}[task]
    assert f"## Probes (questions about the measured {measured} only)" in md
    prefilled = prefill_attack(tmp_path / "run", options=PrefillOptions(words=[1]), log=lambda _: None)
    assert set(prefilled["sets"]) == {"forget", "forget_paraphrase"}
    assert list(prefilled["figures"]) == ["original", "unlearned", "original, 1 words", "prefilled 1 words"]
    for name in prefilled["sets"]:  # the task's own figures, read from the continuations
        assert set(prefilled["figures"]["prefilled 1 words"][name]) == {"flagged_rate", "reproduced_rate"}
        assert prefilled["figures"]["unlearned"][name] == quantized["figures"]["unlearned"][name]


def test_leave_out_drops_the_questions_about_the_units():
    from unlearnlm.data.records import Dialogue
    from unlearnlm.tasks.knowledge import leave_out

    rows = [Dialogue("a?", "x", meta={"person": 1}), Dialogue("b?", "y", meta={"person": 2}),
            Dialogue("c?", "z", meta={"person": 1}), Dialogue("d?", "w", meta={})]
    assert [d.prompt for d in leave_out(rows, "person", ["1"])] == ["b?", "d?"]
    assert [d.prompt for d in leave_out(rows, "person", [2])] == ["a?", "c?", "d?"]
    assert leave_out(rows, "person", ()) == rows


def test_return_and_share_cells_as_tables_show_them():
    from unlearnlm.attacks.figures import return_text, share_text

    summary = {"options": {"steps": [2, 10]},
               "figures": {"original": {"s": {"flagged_rate": 1.0, "reproduced_rate": 0.2}},
                           "unlearned": {"s": {"flagged_rate": 0.1, "reproduced_rate": 0.3}}},
               "steps_to_return": {"s": {"flagged_rate": 10, "reproduced_rate": None}}}
    assert return_text(summary, "s", "flagged_rate") == "10"
    assert return_text(summary, "s", "reproduced_rate") == "—"  # unlearning did not lower it
    summary["steps_to_return"]["s"]["flagged_rate"] = None
    assert return_text(summary, "s", "flagged_rate") == "> 10"  # lowered, not back within the steps tried
    assert (share_text(None), share_text(0.1875)) == ("—", "0.19")
