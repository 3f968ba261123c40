"""Choosing among tries of one method by the early-stopping split only (``unlearnlm.tuning``)."""

import pytest

from unlearnlm.errors import ConfigError
from unlearnlm.tuning import best_try, kept_check, method_grids, tries_grid


def test_tries_grid_is_every_combination_first_axis_slowest():
    assert tries_grid([]) == [[]]
    assert tries_grid(["train.learning_rate=1e-4, 6e-4"]) == [["train.learning_rate=1e-4"],
                                                               ["train.learning_rate=6e-4"]]
    assert tries_grid(["a.x=1,2", "b.y=3,4,5"]) == [["a.x=1", "b.y=3"], ["a.x=1", "b.y=4"], ["a.x=1", "b.y=5"],
                                                    ["a.x=2", "b.y=3"], ["a.x=2", "b.y=4"], ["a.x=2", "b.y=5"]]


@pytest.mark.parametrize("spec", ["train.learning_rate", "=1,2", "a.x=1,,2", "a.x=[1,2]"])
def test_tries_grid_rejects_what_it_cannot_split(spec):
    with pytest.raises(ConfigError, match="section.key=V1,V2"):
        tries_grid([spec])


def test_method_grids_give_a_method_its_own_setting_in_place_of_the_shared_one():
    grids = method_grids(["train.learning_rate=1e-4,6e-4", "rmu:method.options.steering_coeff=2,20"],
                         ["npo", "rmu"])
    assert grids == {"npo": [["train.learning_rate=1e-4"], ["train.learning_rate=6e-4"]],
                     "rmu": [["method.options.steering_coeff=2"], ["method.options.steering_coeff=20"]]}
    # a value may hold a colon: only a colon before "=" names a method
    assert method_grids(["a.x=b:c"], ["npo"]) == {"npo": [["a.x=b:c"]]}
    assert method_grids([], ["npo", "rmu"]) == {"npo": [[]], "rmu": [[]]}


def test_method_grids_refuse_unequal_searches_and_methods_not_compared():
    with pytest.raises(ConfigError, match="different numbers of tries.*npo 2, rmu 3"):
        method_grids(["train.learning_rate=1e-4,6e-4", "rmu:method.options.layer=4,8,12"], ["npo", "rmu"])
    with pytest.raises(ConfigError, match="names rmu, which is not among the compared methods"):
        method_grids(["rmu:method.options.layer=4,8"], ["npo"])


def _summary(best_step, checks, held_out=0.5):
    """A run's summary: ``checks`` as (step, flagged, kl[, auc]); a held-out figure the choice must not read."""
    return {"method": "m", "sets": {"forget_test": {"after": {"flagged_rate": held_out}}},
            "training": {"best_step": best_step,
                         "checks": [{"step": c[0], "flagged_rate": c[1], "normal_kl": c[2],
                                     "membership_auc": c[3] if len(c) > 3 else None} for c in checks]}}


def test_kept_check_is_the_check_at_the_best_step():
    run = _summary(20, [(0, 1.0, 0.0), (10, 0.4, 0.05), (20, 0.2, 0.08), (30, 0.1, 0.9)])
    assert (kept_check(run).step, kept_check(run).flagged_rate) == (20, 0.2)
    with pytest.raises(ValueError, match="best step 40"):
        kept_check(_summary(40, [(0, 1.0, 0.0)]))


def test_best_try_ranks_kept_checks_as_the_stop_rule_does_and_never_reads_held_out_figures():
    original_kept = _summary(0, [(0, 1.0, 0.0), (10, 0.0, 5.0)], held_out=0.0)  # its step 10 broke the KL bound
    forgot_some = _summary(10, [(0, 1.0, 0.0), (10, 0.3, 0.1)], held_out=0.9)
    forgot_more = _summary(20, [(0, 1.0, 0.0), (20, 0.2, 0.14)], held_out=0.95)
    assert best_try([original_kept, forgot_some, forgot_more]) == 2
    same_rate_lower_kl = _summary(20, [(0, 1.0, 0.0), (20, 0.2, 0.01)])
    assert best_try([forgot_more, same_rate_lower_kl]) == 1
    lower_auc = _summary(20, [(0, 1.0, 0.0, 0.99), (20, 0.2, 0.14, 0.7)])
    higher_auc = _summary(20, [(0, 1.0, 0.0, 0.99), (20, 0.2, 0.01, 0.9)])
    assert best_try([higher_auc, lower_auc]) == 1
    assert best_try([forgot_some, forgot_some]) == 0  # equals: the first
    with pytest.raises(ValueError):
        best_try([])


def test_compare_methods_runs_every_try_and_shows_the_chosen_one(workspace, monkeypatch, capsys):
    import json
    import runpy
    import sys
    from pathlib import Path

    root, config, _ = workspace
    out = root / "cmp"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_methods.py"
    monkeypatch.setattr(sys, "argv", [str(script), str(config), "--methods", "gradient_ascent", "npo", "--output",
                                      str(out), "--tries", "train.learning_rate=1e-3,1e-2",
                                      "--tries", "npo:method.options.beta=0.05,0.2"])
    runpy.run_path(str(script), run_name="__main__")
    npo_tries = json.loads((out / "npo" / "tries.json").read_text())  # its own setting, not the learning rate
    assert [t["overrides"] for t in npo_tries] == [["method.options.beta=0.05"], ["method.options.beta=0.2"]]
    tries = json.loads((out / "gradient_ascent" / "tries.json").read_text())
    assert [t["overrides"] for t in tries] == [["train.learning_rate=1e-3"], ["train.learning_rate=1e-2"]]
    import yaml

    assert [yaml.safe_load((Path(t["folder"]) / "config.yaml").read_text())["train"]["learning_rate"]
            for t in tries] == [1e-3, 1e-2]
    assert [yaml.safe_load((Path(t["folder"]) / "config.yaml").read_text())["method"]["options"]["beta"]
            for t in npo_tries] == [0.05, 0.2]
    chosen = [t["chosen"] for t in tries]
    assert chosen.count(True) == 1
    # only the kept try is evaluated and saved; the other keeps its checks in training.json, and no model
    trainings = []
    for t, kept in zip(tries, chosen, strict=True):
        folder = Path(t["folder"])
        assert (folder / "metrics.json").is_file() == kept and (folder / "model").is_dir() == kept
        assert (folder / "training.json").is_file() and not (folder / "checkpoint").exists()  # every try's checks
        assert (folder / "history.jsonl").is_file()
        trainings.append(json.loads((folder / "metrics.json").read_text())["training"] if kept
                         else json.loads((folder / "training.json").read_text()))
    assert chosen.index(True) == best_try([{"training": training} for training in trainings])
    assert [t["kept_check"] for t in tries] == [vars(kept_check({"training": tr})) for tr in trainings]
    label = f"gradient_ascent ({tries[chosen.index(True)]['overrides'][0]})"
    first = capsys.readouterr().out
    assert f"| {label} |" in first
    assert (out / "compare.html").is_file()

    # --resume: a comparison stopped in NPO's evaluation (no tries.json yet) reads gradient ascent's kept run and
    # NPO's two trained tries back, and trains again only the kept try, which has to be evaluated
    import unlearnlm.pipeline

    npo_kept = Path(next(t["folder"] for t in npo_tries if t["chosen"]))
    untimed = lambda checks: [{k: v for k, v in c.items() if k != "seconds"} for c in checks]  # noqa: E731
    npo_checks = untimed(json.loads((npo_kept / "metrics.json").read_text())["training"]["checks"])
    (out / "npo" / "tries.json").unlink()
    (npo_kept / "metrics.json").unlink()
    trained = []
    real = unlearnlm.pipeline.train_run

    def counted(cfg, **kw):
        trained.append(Path(cfg.output_dir))
        return real(cfg, **kw)

    monkeypatch.setattr(unlearnlm.pipeline, "train_run", counted)
    monkeypatch.setattr(sys, "argv", [*sys.argv, "--resume"])
    runpy.run_path(str(script), run_name="__main__")
    assert trained == [npo_kept]
    again = json.loads((out / "npo" / "tries.json").read_text())
    assert [t["chosen"] for t in again] == [t["chosen"] for t in npo_tries]
    assert untimed(json.loads((npo_kept / "metrics.json").read_text())["training"]["checks"]) == npo_checks
    ga_row = next(line for line in first.splitlines() if line.startswith(f"| {label} |"))
    assert ga_row in capsys.readouterr().out.splitlines()  # the same row, read from the finished run

    # a try whose saved config is not the one it would run now is trained again; the other is still read back
    (out / "npo" / "tries.json").unlink()
    first_try = out / "npo" / "try-0"
    (first_try / "config.yaml").write_text((first_try / "config.yaml").read_text().replace("beta: 0.05", "beta: 0.07"))
    trained.clear()
    runpy.run_path(str(script), run_name="__main__")
    assert trained == [first_try, *([npo_kept] if npo_kept != first_try else [])]  # the kept try-1: read, so again
    assert yaml.safe_load((first_try / "config.yaml").read_text())["method"]["options"]["beta"] == 0.05


def test_compare_methods_attacks_each_kept_run_and_tabulates_the_headline_figure(workspace, monkeypatch, capsys):
    import json
    import runpy
    import sys
    from pathlib import Path

    root, config, _ = workspace
    out = root / "cmp"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_methods.py"
    monkeypatch.setattr(sys, "argv", [str(script), str(config), "--methods", "gradient_ascent", "--output", str(out),
                                      "--attack", "quantize", "--attack", "relearn", "--relearn-steps", "1", "3",
                                      "--attack", "prefill", "--prefill-words", "1", "4"])
    runpy.run_path(str(script), run_name="__main__")
    attacks = out / "gradient_ascent" / "attacks"
    quant = json.loads((attacks / "quantize" / "attack.json").read_text())
    relearn = json.loads((attacks / "relearn_forget" / "attack.json").read_text())
    prefill = json.loads((attacks / "prefill" / "attack.json").read_text())
    assert quant["run"] == relearn["run"] == prefill["run"] == str(out / "gradient_ascent")
    assert prefill["options"]["words"] == [1, 4]
    assert relearn["options"]["steps"] == [1, 3]

    def pct(summary, label):
        return f"{100 * summary['figures'][label]['forget_test']['flagged_rate']:.1f}"

    printed = capsys.readouterr().out.splitlines()
    header = next(line for line in printed if line.startswith("| method | original (forget_test flagged %)"))
    assert header.split(" | ")[3:] == ["8-bit", "4-bit", "recovered at 4-bit", "relearn (forget) step 1",
                                       "relearn (forget) step 3", "steps to return", "prefilled 1 words",
                                       "prefilled 4 words", "recovered at 4 words |"]
    rows = [line for line in printed if line.startswith("| gradient_ascent |") and line.count("|") == header.count("|")]
    cells = rows[-1].strip("| ").split(" | ")
    assert cells[1:5] == [pct(quant, w) for w in ("original", "unlearned", "8-bit", "4-bit")]
    assert cells[6:8] == [pct(relearn, "step 1"), pct(relearn, "step 3")]
    assert cells[9:11] == [pct(prefill, "prefilled 1 words"), pct(prefill, "prefilled 4 words")]


def test_compare_methods_hallucination_row_shows_the_interval_of_each_truth_preference_change():
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_methods.py"
    spec = importlib.util.spec_from_file_location("compare_methods", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rates = lambda before, after, key: {"before": {key: before}, "after": {key: after}}  # noqa: E731
    summary = {
        "task": "hallucination", "method": "distance_cluster",
        "training": {"steps": 70, "best_step": 70, "stop_reason": "target_reached", "seconds": 551.0},
        "sets": {"forget": rates(1.0, 0.03, "flagged_rate"), "forget_paraphrase": rates(1.0, 0.05, "flagged_rate"),
                 "retain": rates(1.0, 1.0, "reproduced_rate")},
        "probes": {s: {f"truth_preference_{g}": {"preference": p} for g, p in groups.items()}
                   for s, groups in {"original": {"forget": 0.0, "untouched": 0.431},
                                     "after": {"forget": 1.0, "untouched": 0.519}}.items()},
        "probe_shifts": {"truth_preference_untouched": {"change": 0.088, "low": 0.025, "high": 0.156}},
        "normal_data": {"human_texts": {"perplexity": 22.8, "perplexity_original": 24.0, "kl_to_original": 0.221}},
        "wall_seconds": 1392.0,
    }
    row = module.knowledge_row(summary)
    assert row.endswith("| -5.0% | 0.221 | 551 | 1392 |")
    assert "| 0 → 100 | 43 → 52 (+2 to +16) |" in row  # the forget pairs have no interval: none in probe_shifts
    assert row.count("|") == module.HEADERS["hallucination"][0].count("|")
