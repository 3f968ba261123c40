import json

import pytest
import torch

from unlearnlm.config import LoraConfig
from unlearnlm.errors import ConfigError
from unlearnlm.models import add_lora
from unlearnlm.outputs import atomic_write_text, prepare_output_dir, save_model_atomically, write_rows


def test_atomic_write_leaves_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")

    class Boom(str):
        def __str__(self):
            raise RuntimeError("boom")

    with pytest.raises(TypeError):
        atomic_write_text(target, 123)  # not text: fails inside the write
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_write_rows_is_jsonl(tmp_path):
    write_rows(tmp_path / "x.jsonl", [{"a": 1}, {"b": "é"}])
    assert [json.loads(line) for line in (tmp_path / "x.jsonl").read_text().splitlines()] == [{"a": 1}, {"b": "é"}]


def test_output_dir_never_overlaps_the_input_model(tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    for out in (model_dir, model_dir / "run", tmp_path):
        with pytest.raises(ConfigError, match="input model"):
            prepare_output_dir(out, str(model_dir), overwrite=True)


def test_earlier_run_needs_overwrite(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "report.md").write_text("earlier")
    with pytest.raises(ConfigError, match="--overwrite"):
        prepare_output_dir(out, "some/hub-id", overwrite=False)
    assert prepare_output_dir(out, "some/hub-id", overwrite=True) == out.resolve()


def test_save_merges_lora_and_failure_keeps_previous(tiny_model, tokenizer, tmp_path, monkeypatch):
    model = add_lora(tiny_model, LoraConfig(r=2, target_modules=["q_proj"]))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.fill_(0.1)
    target = save_model_atomically(model, tokenizer, tmp_path / "model", merge_lora=True)
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(target)
    assert not any("lora" in n for n, _ in reloaded.named_parameters())
    before = sorted(p.name for p in target.iterdir())

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(type(reloaded), "save_pretrained", fail)
    with pytest.raises(OSError, match="disk full"):
        save_model_atomically(reloaded, tokenizer, target, merge_lora=False)
    assert sorted(p.name for p in target.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no half-written folder left


def test_which_earlier_folders_need_overwrite(tmp_path):
    def folder(name, *files):
        out = tmp_path / name
        for f in files:
            (out / f).parent.mkdir(parents=True, exist_ok=True)
            (out / f).write_text("x")
        return out

    stopped = folder("stopped", "config.yaml", "versions.json", "flagged.jsonl", ".config.yaml.tmp1")
    assert prepare_output_dir(stopped, "hub/id", overwrite=False) == stopped.resolve()  # stopped before training
    for out, message in [(folder("done", "config.yaml", "metrics.json"), "holds a finished run"),
                         (folder("killed", "config.yaml", "checkpoint/state.pt"), "unlearnlm run --resume"),
                         (folder("other", "notes.txt"), "files that are not a run's")]:
        with pytest.raises(ConfigError, match=message):
            prepare_output_dir(out, "hub/id", overwrite=False)
    done = folder("done2", "config.yaml", "metrics.json", "model/model.safetensors", "checkpoint/state.pt", "report.md")
    prepare_output_dir(done, "hub/id", overwrite=True)  # the earlier results go, so nothing of them can be mixed in
    assert sorted(p.name for p in done.iterdir()) == ["config.yaml", "report.md"]


def test_output_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        prepare_output_dir(tmp_path / "file", "hub/id", overwrite=True)
