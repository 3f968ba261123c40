"""report.html and the model card, from a tiny end-to-end run (the ``workspace`` fixture in conftest.py)."""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser

import pytest
from PIL import Image

from unlearnlm import distributed
from unlearnlm.cli import main
from unlearnlm.config import RunConfig
from unlearnlm.pipeline import run_precision
from unlearnlm.report import card as card_module
from unlearnlm.report.card import base_metadata, front_matter
from unlearnlm.report.content import headline, set_title


class Tables(HTMLParser):
    """Cells of every table with an id, by table id, then by row key (``data-key``)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, dict[str, list[str]]] = {}
        self._table = self._key = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and "id" in attrs:
            self._table = self.tables.setdefault(attrs["id"], {})
        elif tag == "tr" and self._table is not None and "data-key" in attrs:
            self._key = attrs["data-key"]
            self._table[self._key] = []
        elif tag == "td" and self._key is not None:
            self._cell = []

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self._table[self._key].append("".join(self._cell))
            self._cell = None
        elif tag == "tr":
            self._key = None
        elif tag == "table":
            self._table = None


def rate(cell: str) -> float:
    return float(cell.split()[0].rstrip("%")) / 100


@pytest.fixture
def run_dir(workspace):
    tmp_path, config, _ = workspace
    out = tmp_path / "run"
    assert main(["run", str(config), "--output", str(out)]) == 0
    return out


def test_report_html_is_self_contained_and_its_images_decode(run_dir):
    page = (run_dir / "report.html").read_text()
    assert not re.search(r'(?:src|href)="(?!data:)', page), "the page must not load anything from outside"
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 5  # checks, losses, before/after bars, utility, stage times
    for data in images:
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        image.load()
        assert image.format == "PNG" and image.size[0] >= 900
    assert "function filterExamples()" in page
    rows = (run_dir / "examples.jsonl").read_text().splitlines()
    assert page.count('<tr data-set="') == len(rows)  # every per-example row is in the searchable table


def test_report_html_prints_the_numbers_of_metrics_json(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    parser = Tables()
    parser.feed((run_dir / "report.html").read_text())
    tables = parser.tables
    assert set(tables["sets"]) == set(metrics["sets"])
    for name, cells in tables["sets"].items():
        b, a = metrics["sets"][name]["before"], metrics["sets"][name]["after"]
        assert int(cells[2]) == b["n"]
        for cell, value in zip(cells[3:7], (b["flagged_rate"], a["flagged_rate"], b["refusal_rate"], a["refusal_rate"]),
                               strict=True):
            assert rate(cell) == pytest.approx(value, abs=5e-4)
        for cell, interval in ((cells[4], a["flagged_interval"]), (cells[6], a["refusal_interval"])):
            low, high = (float(x) / 100 for x in cell.split("(")[1].rstrip(")").split("–"))
            assert (low, high) == pytest.approx(interval, abs=5e-4) and low <= rate(cell) <= high
        assert float(cells[7]) == pytest.approx(b["distinct_2"], abs=5e-3)
        assert float(cells[10].split()[0]) == pytest.approx(a["relevance"], abs=5e-3)
    for name, cells in tables["normal"].items():
        m = metrics["normal_data"][name]
        assert float(cells[1]) == pytest.approx(m["perplexity_original"], abs=5e-3)
        assert float(cells[2]) == pytest.approx(m["perplexity"], abs=5e-3)
        assert float(cells[4]) == pytest.approx(m["kl_to_original"], abs=5e-5)
    checks = {str(c["step"]): c for c in metrics["training"]["checks"]}
    assert set(tables["checks"]) == set(checks)
    for step, cells in tables["checks"].items():
        assert rate(cells[1]) == pytest.approx(checks[step]["flagged_rate"], abs=5e-4)
        assert rate(cells[2]) == pytest.approx(checks[step]["over_refusal"], abs=5e-4)
    assert set(tables["stages"]) == set(metrics["stage_seconds"])
    page = (run_dir / "report.html").read_text()
    h = headline(metrics)
    assert f"{100 * h['flagged_before']:.1f}% → {100 * h['flagged_after']:.1f}%" in page
    assert f"answered in {metrics['precision']['generation']}." in page


def test_report_command_rebuilds_the_page_from_the_run_folder(run_dir, tmp_path):
    out = tmp_path / "rebuilt"
    assert main(["report", str(run_dir), "--output", str(out)]) == 0
    assert (out / "report.md").read_text() == (run_dir / "report.md").read_text()
    assert (out / "report.html").read_text() == (run_dir / "report.html").read_text()  # a pure function of the files
    assert main(["report", str(tmp_path / "nothing"), "--output", str(out)]) == 2


def test_model_card(run_dir):
    card = (run_dir / "model" / "README.md").read_text()
    meta = front_matter(run_dir / "model" / "README.md")
    assert meta["library_name"] == "transformers" and meta["tags"] == ["unlearning", "unlearnlm"]
    assert "base_model" not in meta  # the tiny base is a local folder without a card
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert f"# {metrics['model']}, unlearned with `{metrics['method']}`" in card
    for section in ("## Method and options", "## Data", "## Before and after", "## Known limits"):
        assert section in card
    assert "| Flagged prompts, held-out | held-out |" in card
    assert "every weight trained" in card  # the workspace config turns LoRA off
    assert "membership AUC" not in card  # a harm run's stop rule has no membership bound
    used = metrics["precision"]["generation"]  # the harm default `auto`, resolved on this machine
    assert used == ("bf16 autocast" if distributed.bf16_supported() else "float32")
    assert ("bf16 autocast (`generation.mixed_precision: auto`)" if used == "bf16 autocast"
            else "Both models answered in float32.") in card


def test_the_report_names_the_machine_its_timings_come_from(run_dir):
    machine = json.loads((run_dir / "metrics.json").read_text())["machine"]
    where = f"{machine['cpu']}{' with AMX' if machine['amx'] else ''}, {machine['torch_threads']} torch threads."
    assert f"s on {where}" in (run_dir / "report.md").read_text()


def test_model_card_names_the_precision_of_older_runs():
    summary = {"judges": ["harm"], "sets": {}, "training": {}}
    gen = {"mixed_precision": "auto"}
    assert "fp32 elsewhere" in card_module._precision_note(summary, gen)
    assert "bf16 autocast (`generation.mixed_precision: bf16`)" in card_module._precision_note(summary, {
        "mixed_precision": "bf16"})
    assert card_module._precision_note(summary, {"mixed_precision": "no"}) == ""
    assert card_module._precision_note({"precision": {"generation": "bfloat16"}}, {"mixed_precision": "no"}) == (
        " Both models answered in bfloat16.")


def test_base_metadata(tmp_path):
    assert base_metadata("embedded:smollm2-135m-instruct") == {"base_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
                                                               "license": "apache-2.0"}
    assert base_metadata("org/some-model") == {"base_model": "org/some-model"}
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "README.md").write_text("---\nlicense: mit\nbase_model: org/base\ntags: [x]\n---\n# a model\n")
    assert base_metadata(str(tmp_path)) == {"base_model": "org/base", "license": "mit"}


def test_compare_page_puts_runs_of_one_task_side_by_side(workspace, tmp_path):
    from unlearnlm.report.compare import render_compare
    from unlearnlm.report.run_files import read_run

    _, config, _ = workspace
    runs = []
    for method in ("distance_cluster", "gradient_ascent"):
        runs.append(tmp_path / method)
        assert main(["run", str(config), "--output", str(runs[-1]), "--method", method]) == 0
    out = tmp_path / "compare"
    assert main(["compare", *map(str, runs), "--output", str(out)]) == 0
    page = (out / "compare.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 2  # the efficacy-utility scatter, the sets by run
    for data in images:
        Image.open(io.BytesIO(base64.b64decode(data))).load()
    assert (out / "tradeoff.png").read_bytes() == base64.b64decode(images[0])  # the page's scatter, as a file
    parser = Tables()
    parser.feed(page)
    table = parser.tables["compare"]
    for column, folder in enumerate(runs, start=1):
        metrics = json.loads((folder / "metrics.json").read_text())
        h = headline(metrics)
        assert table["held_out_flagged"][column] == f"{100 * h['flagged_before']:.1f}% → {100 * h['flagged_after']:.1f}%"
        assert table["steps"][column] == f"{metrics['training']['steps']} ({metrics['training']['best_step']})"
        benign = metrics["sets"]["everyday"]
        assert rate(table["everyday"][column].split(" → ")[1]) == pytest.approx(benign["after"]["refusal_rate"], abs=5e-4)
    assert "| held-out flagged |" in (out / "compare.md").read_text()
    other = read_run(runs[1])
    other.config["data"]["task"] = "privacy"
    with pytest.raises(ValueError, match="different tasks"):
        render_compare([read_run(runs[0]), other])


def test_tradeoff_figure_names_every_run_once_in_a_legend():
    """Runs that land on the same spot stay readable: each is named once in the legend, with its own style."""
    from unlearnlm.report.figures import tradeoff_figure

    points = [{"label": f"method_{i}", "flagged_before": 1.0, "flagged_after": 0.95 if i else 0.05,
               "over_refusal_before": 0.02, "over_refusal_after": 0.02, "perplexity_change": 0.0} for i in range(12)]
    fig = tradeoff_figure(points, "held-out")
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [*(p["label"] for p in points), "original"]
    styles = {(tuple(c.get_facecolor()[0]), c.get_paths()[0].vertices.tobytes())
              for c in fig.axes[0].collections[:12]}
    assert len(styles) == 12  # no two runs share colour and shape
    assert not [t for ax in fig.axes for t in ax.texts]  # no labels written over the dots


def test_percent_axes_label_every_tick_differently():
    """Ticks half a percent apart read 0.5%, 1.0%, ...: with whole percents two ticks would both read "1%"."""
    import matplotlib.pyplot as plt

    from unlearnlm.report.figures import _percent_axis

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0.0, 0.035])
    _percent_axis(ax)
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    plt.close(fig)
    assert len(labels) > 4 and len(set(labels)) == len(labels), labels


def test_run_precision_names_what_mixed_precision_resolves_to():
    cfg = RunConfig()
    cfg.train.mixed_precision, cfg.generation.mixed_precision = "fp16", "no"
    assert run_precision(cfg) == {"training": "fp16 autocast", "generation": cfg.model.dtype}
    cfg.generation.mixed_precision = "auto"
    assert run_precision(cfg)["generation"] == ("bf16 autocast" if distributed.bf16_supported() else cfg.model.dtype)


def test_the_report_counts_each_sets_paired_changes_from_its_answers(run_dir):
    """The paired changes the report prints are the per-prompt flags of examples.jsonl, counted."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "examples.jsonl").read_text().splitlines()]
    report = (run_dir / "report.md").read_text()
    for name, m in metrics["sets"].items():
        what = "flagged" if m["kind"] == "harmful" else "refused"
        mine = [r for r in rows if r["set"] == name]
        new = sum(not r[f"before_{what}"] and r[f"after_{what}"] for r in mine)
        gone = sum(r[f"before_{what}"] and not r[f"after_{what}"] for r in mine)
        assert (m["changes"][what]["new"], m["changes"][what]["gone"]) == (new, gone)
        assert f"{set_title(name)}: {what} +{new} / −{gone} (p" in report
