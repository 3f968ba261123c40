"""Bad input of every kind stops ``unlearnlm run`` with one line naming the problem (and the fix where there is
one), exit code 2 and no traceback. Everything that can be checked without loading the model is checked before
the run folder is made, so those cases also leave the output folder unwritten.

Each case is one parametrised test, named by what is wrong: ``pytest -v tests/test_bad_inputs.py`` lists them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import make_tokenizer, save_tiny, write_jsonl

from unlearnlm.cli import main


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """A tiny model folder and valid data files, shared by every case (none of them writes there)."""
    root = tmp_path_factory.mktemp("good")
    save_tiny(root / "tiny")
    write_jsonl(root / "forget.jsonl", [{"prompt": f"Tell me about weapon {i}", "response": "Here is how."} for i in range(8)])
    write_jsonl(root / "benign.jsonl", [{"prompt": f"What is {i} plus {i}?"} for i in range(12)])
    write_jsonl(root / "normal.jsonl", [{"prompt": "Capital of France?", "response": "Paris is the capital."}] * 4)
    return root


@dataclass
class Workspace:
    """One case's folder: a valid custom-task config on the tiny model, and helpers to break one thing in it."""

    good: Path
    tmp: Path

    @property
    def out(self) -> Path:
        return self.tmp / "out"

    def config(self) -> Path:
        path = self.tmp / "run.yaml"
        path.write_text(f"""
judges: [pii]
model: {{name_or_path: {self.good / "tiny"}}}
lora: {{enabled: false}}
data:
  task: custom
  custom: {{forget_dialogues: {{path: {self.good / "forget.jsonl"}}}}}
  benign_prompts: {{path: {self.good / "benign.jsonl"}}}
  normal_texts: {{path: {self.good / "normal.jsonl"}}}
  normal_train_size: 6
  eval_size: 4
  benign_val_size: 2
generation: {{max_new_tokens: 4, batch_size: 8}}
train: {{max_steps: 2, eval_every: 2, batch_size: 2}}
""")
        return path

    def file(self, name: str, content: str | bytes) -> str:
        path = self.tmp / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
        return str(path)

    def model(self, edit: Callable[[Path], None]) -> list[str]:
        """``--model`` pointing at a copy of the tiny model folder changed by ``edit``."""
        folder = self.tmp / "model"
        shutil.copytree(self.good / "tiny", folder)
        edit(folder)
        return ["--model", str(folder)]


def s(key: str, value: object) -> list[str]:
    """One ``--set`` override."""
    return ["--set", f"{key}={value}"]


def spec(path: str, **extra: object) -> str:
    """A dataset spec as a YAML flow mapping."""
    return "{" + ", ".join(f"{k}: {v}" for k, v in {"path": path, **extra}.items()) + "}"


def benign(w: Workspace, name: str, content: str | bytes, **extra: object) -> list[str]:
    """``data.benign_prompts`` read from a file holding ``content``."""
    return s("data.benign_prompts", spec(w.file(name, content), **extra))


def forget(w: Workspace, name: str, content: str | bytes, **extra: object) -> list[str]:
    """``data.custom.forget_dialogues`` read from a file holding ``content``."""
    return s("data.custom.forget_dialogues", spec(w.file(name, content), **extra))


def _replace_model(w: Workspace, model) -> list[str]:
    folder = w.tmp / "other"
    model.save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    return ["--model", str(folder)]


def _bert(w: Workspace) -> list[str]:
    from transformers import BertConfig, BertModel

    return _replace_model(w, BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                  intermediate_size=32, vocab_size=400)))


def _t5(w: Workspace) -> list[str]:
    from transformers import T5Config, T5ForConditionalGeneration

    return _replace_model(w, T5ForConditionalGeneration(T5Config(d_model=32, d_ff=32, num_layers=1, num_heads=2,
                                                                 d_kv=16, vocab_size=400)))


def _model_type(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "florp"}))


def _no_tokenizer(folder: Path) -> None:
    for path in folder.iterdir():
        if path.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            path.unlink()


def _read_only(w: Workspace) -> list[str]:
    """A folder nobody can write into: a chmod-ed one, or (as root, who ignores modes) a read-only file system."""
    folder = w.tmp / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    probe = folder / "probe"
    try:
        probe.touch()
    except OSError:
        return ["--output", str(folder / "run")]
    probe.unlink()
    folder.chmod(0o755)
    for candidate in (Path("/sys/unlearnlm-test"), Path("/proc/unlearnlm-test")):
        try:
            candidate.mkdir()
        except OSError:
            return ["--output", str(candidate)]
        candidate.rmdir()
    pytest.skip("no folder here refuses writes")


def _earlier(w: Workspace, *files: str) -> list[str]:
    for name in files:
        (w.out / name).parent.mkdir(parents=True, exist_ok=True)
        (w.out / name).write_text("earlier")
    return []


def _damaged_checkpoint(w: Workspace) -> list[str]:
    """The folder of a killed run whose checkpoint file is damaged (found once the run reaches training)."""
    _earlier(w, "checkpoint/state.pt")
    shutil.copy(w.config(), w.out / "config.yaml")
    return ["--resume", str(w.out)]


@dataclass
class Case:
    args: Callable[[Workspace], list[str]]
    """The command-line arguments that break one thing (the valid config and ``--output`` are added)."""
    expect: tuple[str, ...]
    """Fragments the one-line error must hold: the problem, and the fix where the code gives one."""
    before_writing: bool = True
    """Found before the run folder is made (False: only once the model is loaded; the folder may hold config.yaml
    but no finished run, so the corrected command runs without --overwrite)."""


CASES: dict[str, Case] = {
    # --- data files -----------------------------------------------------------------------------------
    "data_missing_file": Case(lambda w: s("data.custom.forget_dialogues", spec("/no/such/forget.jsonl")),
                              ("/no/such/forget.jsonl: file not found", "check the path")),
    "data_bad_json_line": Case(lambda w: forget(w, "bad.jsonl", '{"prompt": "a", "response": "b"}\n{"prompt": \n'),
                               ("bad.jsonl:2: invalid JSON", "Each line must be one complete JSON object")),
    "data_wrong_prompt_column": Case(lambda w: s("data.custom.forget_dialogues",
                                                 spec(str(w.good / "forget.jsonl"), prompt_column="question")),
                                     ("no column 'question'", "columns present: ['prompt', 'response']",
                                      "set `prompt_column` to one of them")),
    "data_empty_jsonl": Case(lambda w: forget(w, "empty.jsonl", ""), ("empty.jsonl: no rows to read", "add at least one row")),
    "data_csv_without_the_column": Case(lambda w: benign(w, "b.csv", "question\nhi\n"),
                                        ("b.csv:1 (header): no column 'prompt'", "columns present: ['question']")),
    "data_empty_csv": Case(lambda w: benign(w, "e.csv", ""), ("e.csv: file is empty", "add a header row")),
    "data_csv_short_row": Case(lambda w: benign(w, "c.csv", "prompt,topic\nhello\n"),
                               ("c.csv:2: row has 1 fields but the header has 2", "quote fields")),
    "data_csv_repeated_header": Case(lambda w: benign(w, "d.csv", "prompt,prompt\na,b\n"),
                                     ("header repeats column(s) ['prompt']", "unique name")),
    "data_not_utf8": Case(lambda w: benign(w, "latin.jsonl", b'{"prompt": "caf\xe9"}\n'),
                          ("latin.jsonl:1: byte 0xe9", "not valid UTF-8", "re-encode it as UTF-8")),
    "data_line_not_an_object": Case(lambda w: benign(w, "l.jsonl", '["a"]\n'),
                                    ("l.jsonl:1: line is a list, expected a JSON object",)),
    "data_prompt_not_text": Case(lambda w: benign(w, "n.jsonl", '{"prompt": 3}\n'),
                                 ("column 'prompt' holds a number (int)", "write it as a string")),
    "data_empty_prompt": Case(lambda w: benign(w, "ep.jsonl", '{"prompt": "  "}\n'),
                              ("ep.jsonl:1: empty prompt", "fill it in or delete the row")),
    "data_unknown_suffix": Case(lambda w: benign(w, "p.txt", "hello\n"), ("unknown suffix '.txt'", "Rename the file")),
    "data_folder_instead_of_file": Case(lambda w: s("data.benign_prompts", spec(str(w.good), format="jsonl")),
                                        ("is a directory, expected a jsonl file",)),
    "data_broken_json_array": Case(lambda w: benign(w, "a.json", '[{"prompt": "a"},'),
                                   ("a.json:1: invalid JSON", "convert it to JSON Lines")),
    "data_dialogues_without_response_column": Case(lambda w: forget(w, "nr.jsonl", '{"prompt": "a"}\n'),
                                                   ("no column 'response'", "or to null if the data has no such column")),
    "data_dialogue_with_empty_response": Case(
        lambda w: forget(w, "er.jsonl", '{"prompt": "a", "response": "b"}\n{"prompt": "c", "response": ""}\n'),
        ("data.custom.forget_dialogues: every row needs a response",)),
    "data_expected_output_without_response": Case(
        lambda w: s("data.expected_outputs", spec(w.file("x.jsonl", '{"prompt": "a", "response": ""}\n'))),
        ("data.expected_outputs: every row needs a response",)),
    "data_unseen_prompts_missing": Case(lambda w: s("data.unseen_prompts", spec("/no/such/unseen.csv")),
                                        ("/no/such/unseen.csv: file not found",)),
    "data_spec_unknown_key": Case(lambda w: s("data.benign_prompts", "{path: x.jsonl, promt_column: q}"),
                                  ("data.benign_prompts: unknown key(s) ['promt_column']", "valid keys are")),
    "data_spec_without_path": Case(lambda w: s("data.benign_prompts", "{prompt_column: q}"),
                                   ("data.benign_prompts: missing required key(s) ['path']",)),
    "data_spec_bad_limit": Case(lambda w: s("data.benign_prompts", "{path: x.jsonl, limit: 0}"),
                                ("data.benign_prompts: dataset spec for x.jsonl: `limit` must be a positive integer",)),
    "data_spec_not_a_mapping": Case(lambda w: s("data.benign_prompts", "[prompts.jsonl]"),
                                    ("data.benign_prompts: expected a mapping, got list",)),
    "data_spec_path_alone_not_found": Case(lambda w: s("data.benign_prompts", "prompts.jsonl"),  # {path: ...}
                                           ("prompts.jsonl: file not found", "check the path")),
    "data_spec_reserved_meta_column": Case(lambda w: s("data.benign_prompts", "{path: x.jsonl, meta_columns: [source]}"),
                                           ("`meta_columns` may not contain ['source']", "rename that column")),
    # --- configs --------------------------------------------------------------------------------------
    "config_file_missing": Case(lambda w: ["/no/such/run.yaml"], ("config file /no/such/run.yaml does not exist",)),
    "config_invalid_yaml": Case(lambda w: [w.file("bad.yaml", "train: [unclosed")], ("bad.yaml is not valid YAML",)),
    "config_top_level_list": Case(lambda w: [w.file("list.yaml", "- 1\n- 2\n")], ("the top level must be a mapping",)),
    "config_unknown_section": Case(lambda w: s("modle.name_or_path", "x"), ("config: unknown key(s) ['modle']", "valid keys")),
    "config_topical_recipe_outside_harm": Case(lambda w: s("data.expected_recipe", "topical"),
                                               ("data.expected_recipe: topical writes harm-task refusals",)),
    "config_unknown_key": Case(lambda w: s("train.max_stepz", 3), ("train: unknown key(s) ['max_stepz']",)),
    "config_text_for_a_number": Case(lambda w: s("train.max_steps", "lots"), ("train.max_steps: expected int, got str",)),
    "config_float_for_an_int": Case(lambda w: s("train.max_steps", 2.5), ("train.max_steps: expected int, got float",)),
    "config_text_for_a_bool": Case(lambda w: s("lora.enabled", "maybe"), ("lora.enabled: expected bool, got str",)),
    "config_section_not_a_mapping": Case(lambda w: s("train", 3), ("train: expected a mapping, got int",)),
    "config_fraction_out_of_range": Case(lambda w: s("data.val_fraction", 0.9), ("data.val_fraction: must be in (0, 0.5)",)),
    "config_negative_learning_rate": Case(lambda w: s("train.learning_rate", -1), ("train.learning_rate: must be positive",)),
    "config_zero_lora_rank": Case(lambda w: s("lora.r", 0), ("lora.r: must be a positive integer",)),
    "config_unknown_dtype": Case(lambda w: s("model.dtype", "float8"), ("model.dtype: 'float8' is not one of",)),
    "config_unknown_schedule": Case(lambda w: s("train.lr_schedule", "step"), ("train.lr_schedule: 'step' is not one of",)),
    "config_unknown_mixed_precision": Case(lambda w: s("train.mixed_precision", "fp8"), ("train.mixed_precision: 'fp8'",)),
    "config_zero_new_tokens": Case(lambda w: s("generation.max_new_tokens", 0), ("generation.max_new_tokens: must be positive",)),
    "config_zero_patience": Case(lambda w: s("train.patience", 0), ("train.patience: must be positive",)),
    "config_negative_eval_every": Case(lambda w: s("train.eval_every", -1), ("train.eval_every: must be >= 0",)),
    "config_negative_checkpoint_every": Case(lambda w: s("train.checkpoint_every", -1),
                                             ("train.checkpoint_every: must be >= 0 (0: no checkpoints)",)),
    "config_judges_not_a_list": Case(lambda w: s("judges", "pii"), ("judges: expected a list, got 'pii'",)),
    "config_task_settings_misplaced": Case(lambda w: s("data.options", "{}"), ("data.options: write the task's settings under data.custom",)),
    # --- --set overrides ------------------------------------------------------------------------------
    "set_without_equals": Case(lambda w: ["--set", "train.max_steps"], ("must look like section.key=value",)),
    "set_empty_key": Case(lambda w: ["--set", "=3"], ("override '=3': the key '' has an empty part",)),
    "set_empty_key_part": Case(lambda w: ["--set", "train..max_steps=1"], ("the key 'train..max_steps' has an empty part",)),
    "set_value_not_yaml": Case(lambda w: ["--set", "train.max_steps=[1,"], ("the value is not valid YAML", "quote it")),
    "set_key_below_a_value": Case(lambda w: ["--set", "train.max_steps.x=1"], ("'max_steps' is not a section",)),
    "set_unknown_key": Case(lambda w: s("model.nme", "x"), ("model: unknown key(s) ['nme']",)),
    # --- methods --------------------------------------------------------------------------------------
    "method_unknown": Case(lambda w: ["--method", "forgetful"], ("method.name: unknown method 'forgetful'", "registered methods")),
    "method_option_unknown": Case(lambda w: s("method.options.foo", 1),
                                  ("method.options: ['foo'] not valid for 'distance_cluster'", "valid options")),
    "method_option_wrong_type": Case(lambda w: s("method.options.margin", "wide"),
                                     ("method.options[distance_cluster].margin: expected float, got str",)),
    # --- model folders --------------------------------------------------------------------------------
    "model_path_missing": Case(lambda w: ["--model", "./no-such-model"], ("no-such-model does not exist", "check the path")),
    "model_folder_without_config": Case(lambda w: ["--model", str(w.good)], ("no config.json", "save_pretrained")),
    "model_config_not_json": Case(lambda w: w.model(lambda f: (f / "config.json").write_text("{not json")),
                                  ("config.json cannot be read as JSON", "save the model again")),
    "model_unknown_type": Case(lambda w: w.model(_model_type), ("model of type 'florp'", "upgrade transformers")),
    "model_not_causal": Case(_bert, ("holds a BertModel, not a causal language model", "AutoModelForCausalLM")),
    "model_encoder_decoder": Case(_t5, ("holds a T5ForConditionalGeneration, not a causal language model",)),
    "model_without_weights": Case(lambda w: w.model(lambda f: (f / "model.safetensors").unlink()),
                                  ("holds no weights", "save the model into it")),
    "model_corrupted_safetensors": Case(lambda w: w.model(lambda f: (f / "model.safetensors").write_bytes(b"garbage" * 9)),
                                        ("model.safetensors is damaged or incomplete", "save the model again")),
    "model_without_tokenizer": Case(lambda w: w.model(_no_tokenizer), ("holds no tokenizer", "tokenizer.save_pretrained")),
    "model_unknown_embedded": Case(lambda w: ["--model", "embedded:gpt-9"], ("unknown embedded model 'embedded:gpt-9'",)),
    "model_without_lora_modules": Case(lambda w: s("lora.enabled", "true") + s("lora.target_modules", "[c_attn]"),
                                       ("lora.target_modules: ['c_attn'] not found in the model", "modules it has"),
                                       before_writing=False),
    # --- output folders -------------------------------------------------------------------------------
    "output_read_only": Case(_read_only, ("is not writable", "choose a folder you can write to")),
    "output_inside_the_model": Case(lambda w: ["--output", str(w.good / "tiny" / "run")],
                                    ("overlaps the input model folder", "the input model is never overwritten")),
    "output_is_the_model": Case(lambda w: ["--output", str(w.good / "tiny")], ("overlaps the input model folder",)),
    "output_is_a_file": Case(lambda w: ["--output", w.file("taken", "x")], ("is a file, not a folder",)),
    "output_holds_a_finished_run": Case(lambda w: _earlier(w, "config.yaml", "metrics.json"),
                                        ("holds a finished run (metrics.json)", "pass --overwrite")),
    "output_holds_an_interrupted_run": Case(lambda w: _earlier(w, "config.yaml", "checkpoint/state.pt"),
                                            ("holds an interrupted run", "unlearnlm run --resume")),
    "output_holds_other_files": Case(lambda w: _earlier(w, "thesis.tex"), ("files that are not a run's", "--overwrite")),
    # --- resuming -------------------------------------------------------------------------------------
    "resume_not_a_run": Case(lambda w: ["--resume", str(w.good)], ("no config.yaml there, so it is not the folder of a run",)),
    "resume_a_finished_run": Case(lambda w: _earlier(w, "config.yaml", "metrics.json") + ["--resume", str(w.out)],
                                  ("that run has finished (metrics.json); nothing to continue",)),
    "resume_with_other_options": Case(lambda w: ["--resume", str(w.out), "--set", "train.max_steps=3", "--overwrite"],
                                      ("--resume continues a run with the config saved in its folder; drop --set, "
                                       "--overwrite",)),
    "resume_damaged_checkpoint": Case(_damaged_checkpoint, ("checkpoint/state.pt is damaged and cannot be read", "--output", "--overwrite"),
                                      before_writing=False),
    # --- judges and tasks -----------------------------------------------------------------------------
    "judge_unknown": Case(lambda w: s("judges", "[pii, oracle]"), ("judges: unknown judge(s) ['oracle']", "available")),
    "judges_empty": Case(lambda w: s("judges", "[]"), ("judges: enable at least one judge",)),
    "task_unknown": Case(lambda w: ["--task", "poetry"], ("data.task: 'poetry' is not a registered task",)),
    "task_import_path_missing": Case(lambda w: ["--task", "no_such_module:Task"],
                                     ("cannot load 'no_such_module:Task'", "check the module is importable")),
    "task_import_path_not_a_task": Case(lambda w: ["--task", "unlearnlm.config:RunConfig"], ("is not a subclass of",)),
    "task_name_not_text": Case(lambda w: s("data.task", 3), ("data.task: expected the name of a task, got 3",)),
    "task_setting_unknown": Case(lambda w: s("data.custom.forget_dialogz", 1), ("data.custom: unknown key(s) ['forget_dialogz']",)),
    "task_without_forget_source": Case(lambda w: s("data.custom.forget_dialogues", "null"),
                                       ("data.custom: give what to forget",)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, good, tmp_path, capsys):
    case, w = CASES[name], Workspace(good, tmp_path)
    args = case.args(w)
    config = [] if "--resume" in args or (args and not args[0].startswith("-")) else [str(w.config())]
    output = [] if "--output" in args or "--resume" in args else ["--output", str(w.out)]
    before = sorted(p.relative_to(w.out) for p in w.out.rglob("*")) if w.out.exists() else None
    assert main(["run", *config, *args, *output]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("unlearnlm: error: ")]
    assert len(lines) == 1, err
    for fragment in case.expect:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    after = sorted(p.relative_to(w.out) for p in w.out.rglob("*")) if w.out.exists() else None
    if case.before_writing:
        assert after == before  # nothing written: the output folder is as it was (or still absent)
    else:
        assert not (w.out / "metrics.json").exists()


def test_there_are_at_least_forty_cases():
    assert len(CASES) >= 40


def test_a_run_that_failed_on_the_model_is_rerun_without_overwrite(good, tmp_path, capsys):
    """The one kind of case that writes config.yaml first (the model had to load): the corrected command needs no
    --overwrite."""
    w = Workspace(good, tmp_path)
    args = ["run", str(w.config()), "--output", str(w.out)]
    assert main([*args, *CASES["model_without_lora_modules"].args(w)]) == 2
    assert (w.out / "config.yaml").is_file()
    assert main(args) == 0 and (w.out / "metrics.json").is_file()
