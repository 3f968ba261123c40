"""The lm-evaluation-harness bridge on tiny random models, offline: the shipped task and a task YAML over a local
JSON file, scores checked against log-likelihoods computed here by hand, the figures in metrics.json and both
reports, and the one-line error without the extra. ``make install`` installs the ``[lm-eval]`` extra, so these tests
are never skipped: without it they fail."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM

from conftest import make_model, write_jsonl
from unlearnlm.cli import main
from unlearnlm.config import RunConfig, UtilityConfig
from unlearnlm.lm_eval_bridge import compare_models
from unlearnlm.lm_eval_tasks import TRUTH_FILE, truth_rows
from unlearnlm.losses import token_logprobs

QUESTION = "Q: Which statement is true?\nA:"  # unlearnlm_truth.yaml's doc_to_text


def shipped_rows() -> list[dict]:
    return [json.loads(line) for line in TRUTH_FILE.read_text(encoding="utf-8").splitlines()]


@torch.no_grad()
def hand_scores(model, tokenizer, rows: list[dict]) -> dict[str, float]:
    """acc and acc_norm as lm_eval defines them, computed here: each choice's summed log-probability after the
    context (the row's ``question``, else unlearnlm_truth's; its tokens as encoded alone, the choice's as the rest of
    the whole text, joined by a space), argmax against gold; acc_norm divides by the choice's length in characters."""
    hits = {"acc": 0, "acc_norm": 0}
    for row in rows:
        context = row.get("question", QUESTION)
        lls = []
        for choice in row["choices"]:
            whole = tokenizer.encode(context + " " + choice)
            n_context = len(tokenizer.encode(context))
            labels = torch.tensor([[-100] * n_context + whole[n_context:]])
            logits = model(input_ids=torch.tensor([whole])).logits  # (1, T, V)
            picked, _ = token_logprobs(logits, labels)  # (1, T-1)
            lls.append(float(picked.sum()))
        lengths = np.array([len(c) for c in row["choices"]], dtype=float)
        hits["acc"] += int(np.argmax(lls) == row["gold"])
        hits["acc_norm"] += int(np.argmax(np.array(lls) / lengths) == row["gold"])
    return {name: n / len(rows) for name, n in hits.items()}


def test_shipped_task_is_rebuilt_from_its_source_and_balanced():
    rows = shipped_rows()
    assert rows == truth_rows()
    assert len(rows) == 108 and sum(r["gold"] for r in rows) == 54  # always picking one position scores 50%
    assert all(len(r["choices"]) == 2 and r["gold"] in (0, 1) for r in rows)


def test_bridge_scores_equal_hand_computed_loglikelihood_argmax(tokenizer):
    original, unlearned = make_model(len(tokenizer), seed=0), make_model(len(tokenizer), seed=1)
    rows = shipped_rows()
    expected = {"original": hand_scores(original, tokenizer, rows), "unlearned": hand_scores(unlearned, tokenizer, rows)}
    assert expected["original"]["acc"] != expected["unlearned"]["acc"]  # so swapped models would fail below
    cfg = RunConfig(utility=UtilityConfig(lm_eval_tasks=["unlearnlm_truth"]))
    rng = torch.random.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    original.train()

    entry = compare_models(original, unlearned, tokenizer, cfg, log=lambda _: None)["lm_eval"]

    scores = entry["tasks"]["unlearnlm_truth"]
    assert set(scores) == {"acc", "acc_norm"} and entry["samples"] == {"unlearnlm_truth": 108}
    assert entry["top_level"] == ["unlearnlm_truth"] and entry["requested"] == ["unlearnlm_truth"]
    for metric in ("acc", "acc_norm"):
        m = scores[metric]
        assert (m["original"], m["unlearned"]) == (expected["original"][metric], expected["unlearned"][metric])
        assert m["change"] == m["unlearned"] - m["original"]
        assert 0 < m["stderr_original"] < 0.1 and 0 < m["stderr_unlearned"] < 0.1
    # lm_eval seeds every RNG and switches models to eval mode; a run around it must not notice
    assert torch.equal(torch.random.get_rng_state(), rng[0]) and random.getstate() == rng[1]
    assert np.array_equal(np.random.get_state()[1], rng[2]) and original.training


def test_include_folder_task_over_a_local_json_file(tokenizer, tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    rows = [{"question": f"Is {i} even?", "choices": ["yes", "no"], "gold": i % 2} for i in range(6)]
    data = write_jsonl(tmp_path / "parity.jsonl", rows)
    tasks = tmp_path / "my_tasks"
    tasks.mkdir()
    (tasks / "parity.yaml").write_text(f"""task: parity
dataset_path: json
dataset_kwargs: {{data_files: {{test: {data}}}}}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: gold
metric_list: [{{metric: acc, aggregation: mean, higher_is_better: true}}]
""")
    original, unlearned = make_model(len(tokenizer), seed=0), make_model(len(tokenizer), seed=1)
    cfg = RunConfig(utility=UtilityConfig(lm_eval_tasks=["parity", "unlearnlm_truth"], lm_eval_include=str(tasks),
                                          lm_eval_limit=4))
    entry = compare_models(original, unlearned, tokenizer, cfg, log=lambda _: None)["lm_eval"]
    assert entry["samples"] == {"parity": 4, "unlearnlm_truth": 4}
    assert set(entry["tasks"]["parity"]) == {"acc"}
    m = entry["tasks"]["parity"]["acc"]
    assert m["original"] == hand_scores(original, tokenizer, rows[:4])["acc"]
    assert m["unlearned"] == hand_scores(unlearned, tokenizer, rows[:4])["acc"]


def test_evaluate_writes_lm_eval_into_metrics_and_both_reports(workspace, tokenizer):
    root, config, model_dir = workspace
    unlearned = root / "unlearned"
    make_model(len(tokenizer), seed=1).save_pretrained(unlearned)
    tokenizer.save_pretrained(unlearned)
    out = root / "eval"
    assert main(["evaluate", str(unlearned), "--config", str(config), "--output", str(out),
                 "--lm-eval", "unlearnlm_truth", "--lm-eval-limit", "10"]) == 0

    entry = json.loads((out / "metrics.json").read_text())["lm_eval"]
    rows = shipped_rows()[:10]
    original = make_model(len(tokenizer), seed=0)  # save_tiny's model
    acc = entry["tasks"]["unlearnlm_truth"]["acc"]
    assert acc["original"] == hand_scores(original, tokenizer, rows)["acc"]
    assert acc["unlearned"] == hand_scores(make_model(len(tokenizer), seed=1), tokenizer, rows)["acc"]
    assert entry["samples"] == {"unlearnlm_truth": 10} and entry["limit"] == 10
    figures = [f"{acc['original']:.4f} ± {acc['stderr_original']:.4f}", f"{acc['change']:+.4f}"]
    for report in ("report.md", "report.html"):
        text = (out / report).read_text()
        assert "lm-evaluation-harness" in text and all(f in text for f in figures), report
    assert yaml_tasks(out) == ["unlearnlm_truth"]


def yaml_tasks(folder: Path) -> list[str]:
    import yaml

    return yaml.safe_load((folder / "config.yaml").read_text())["utility"]["lm_eval_tasks"]


def test_run_with_the_config_key_scores_the_original_before_training(workspace, tokenizer):
    root, config, model_dir = workspace
    out = root / "run"
    assert main(["run", str(config), "--output", str(out), "--set", "utility.lm_eval_tasks=[unlearnlm_truth]",
                 "--set", "utility.lm_eval_limit=6"]) == 0
    summary = json.loads((out / "metrics.json").read_text())
    acc = summary["lm_eval"]["tasks"]["unlearnlm_truth"]["acc"]
    rows = shipped_rows()[:6]
    saved = AutoModelForCausalLM.from_pretrained(out / "model")
    assert acc["original"] == hand_scores(make_model(len(tokenizer), seed=0), tokenizer, rows)["acc"]
    assert acc["unlearned"] == hand_scores(saved, tokenizer, rows)["acc"]
    assert {"lm-eval, original", "lm-eval, unlearned"} <= set(summary["stage_seconds"])
    assert "## lm-evaluation-harness" in (out / "report.md").read_text()


def test_without_the_extra_the_error_says_how_to_install_it(workspace, monkeypatch, capsys):
    root, config, model_dir = workspace
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval raises ImportError
    assert main(["evaluate", str(model_dir), "--config", str(config), "--output", str(root / "eval"),
                 "--lm-eval", "unlearnlm_truth"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("unlearnlm: error:") and "pip install 'unlearnlm[lm-eval]'" in err
    assert not (root / "eval").exists()  # stopped before any model was loaded or file written
