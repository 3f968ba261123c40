"""``unlearnlm evaluate RUN``: a finished tiny run's model on the run's own sets, written elsewhere."""

from __future__ import annotations

import hashlib
import json

import pytest
from conftest import finished_run

from unlearnlm.cli import main


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    return finished_run(tmp_path, monkeypatch)


def _digest(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_evaluate_run_reproduces_the_runs_own_figures(run_dir, tmp_path):
    run = json.loads((run_dir / "metrics.json").read_text())
    assert run["training"]["best_step"] > 0  # the saved model is not the original
    assert any(m["before"] != m["after"] for m in run["sets"].values())
    untouched = _digest(run_dir)
    out = tmp_path / "eval"
    assert main(["evaluate", str(run_dir), "--output", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["sets"] == run["sets"]  # greedy decoding: the same answers, so the same figures
    assert metrics["rephrased_by_rule"] == run["rephrased_by_rule"]
    for name, m in run["normal_data"].items():
        assert metrics["normal_data"][name] == pytest.approx(m, rel=1e-5)
    rows = [json.loads(line) for line in (out / "examples.jsonl").read_text().splitlines()]
    assert rows == [json.loads(line) for line in (run_dir / "examples.jsonl").read_text().splitlines()]
    assert metrics["evaluated"]["run"] == str(run_dir)
    assert f"Re-evaluation of `{run_dir / 'model'}` on its run's own sets" in (out / "report.md").read_text()
    for name in ("report.md", "report.html", "config.yaml", "versions.json"):
        assert (out / name).is_file()
    assert _digest(run_dir) == untouched


def test_evaluate_run_adds_judges_and_prompt_files(run_dir, tmp_path):
    benign = tmp_path / "mine.jsonl"
    benign.write_text("".join(json.dumps({"prompt": f"Name a colour, number {i}."}) + "\n" for i in range(3)))
    out = tmp_path / "eval"
    assert main(["evaluate", str(run_dir), "--output", str(out), "--judges", "pii",
                 "--prompts", str(tmp_path / "harmful.jsonl"), "--benign-prompts", str(benign)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["judges"] == ["harm", "pii"]
    assert metrics["sets"]["given"]["before"]["n"] == 14 and metrics["sets"]["given_benign"]["kind"] == "benign"
    assert set(metrics["sets"]["forget_test"]["after"]["flagged_by"]) == {"harm", "pii"}
    row = json.loads((out / "examples.jsonl").read_text().splitlines()[0])
    assert set(row["after_scores"]) == {"harm", "pii"}


def test_evaluate_run_refuses_what_would_touch_the_run(run_dir, tmp_path, capsys):
    assert main(["evaluate", str(run_dir), "--output", str(run_dir / "eval")]) == 2
    assert "overlaps" in capsys.readouterr().err
    assert main(["evaluate", str(run_dir), "--output", str(tmp_path / "e"), "--config", "x.yaml"]) == 2
    assert "brings its own config.yaml" in capsys.readouterr().err
    assert main(["evaluate", str(run_dir), "--output", str(tmp_path / "e"), "--judges", "harm"]) == 2
    assert "already judge" in capsys.readouterr().err


def test_a_set_added_after_the_run_is_left_out_and_a_changed_one_refused(run_dir, tmp_path, capsys):
    """An older run (no ``homonyms`` rows) is still re-evaluated, without that set; a set whose prompts changed is
    refused by name rather than mismatched."""
    examples = run_dir / "examples.jsonl"
    rows = [json.loads(line) for line in examples.read_text().splitlines()]
    assert any(r["set"] == "homonyms" for r in rows)
    examples.write_text("".join(json.dumps(r) + "\n" for r in rows if r["set"] != "homonyms"))
    out = tmp_path / "eval"
    assert main(["evaluate", str(run_dir), "--output", str(out)]) == 0
    sets = json.loads((out / "metrics.json").read_text())["sets"]
    assert "homonyms" not in sets and "edgy" in sets
    rows = [r for r in rows if r["set"] != "homonyms"]
    rows[-1]["prompt"] += " (changed)"
    examples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--output", str(tmp_path / "eval2")]) == 2
    assert f"the {rows[-1]['set']!r} prompts rebuilt" in capsys.readouterr().err
