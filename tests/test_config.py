import pytest

from unlearnlm.config import RunConfig
from unlearnlm.loader import config_from_tree, load_config
from unlearnlm.errors import ConfigError, DataError


def test_defaults_are_valid_and_round_trip():
    cfg = load_config()
    assert isinstance(cfg, RunConfig) and cfg.method.name == "distance_cluster"
    assert config_from_tree(cfg.to_dict()) == cfg
    privacy = load_config(None, ["data.task=privacy", "data.privacy.n_identities=20"])
    assert privacy.to_dict()["data"]["privacy"]["n_identities"] == 20 and "options" not in privacy.to_dict()["data"]
    assert config_from_tree(privacy.to_dict()) == privacy


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  max_steps: 7\nmethod:\n  name: yao\ndata:\n  harmful_prompts: {path: p.jsonl}\n")
    cfg = load_config(path, ["train.learning_rate=1e-3", "lora.enabled=false"])
    assert cfg.train.max_steps == 7 and cfg.train.learning_rate == 1e-3 and not cfg.lora.enabled
    assert cfg.method.name == "yao" and cfg.data.harmful_prompts.path == "p.jsonl"


def test_an_unquoted_no_is_the_setting_not_false(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  mixed_precision: no\ngeneration:\n  mixed_precision: no\n")
    cfg = load_config(path, ["generation.mixed_precision=no"])
    assert cfg.train.mixed_precision == "no" and cfg.generation.mixed_precision == "no"
    with pytest.raises(ConfigError, match="model.dtype: False is not one of"):  # only where `no` is a choice
        load_config(None, ["model.dtype=no"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.max_stepz=3"], r"train: unknown key\(s\) \['max_stepz'\]"),
        (["train.max_steps=0"], "train.max_steps: must be positive"),
        (["train.max_steps=lots"], "train.max_steps: expected int"),
        (["model.dtype=float8"], "model.dtype: 'float8' is not one of"),
        (["lora.r=0"], "lora.r: must be a positive integer"),
        (["lora.layers=[]"], r"lora.layers: must be a non-empty list of layer indices >= 0"),
        (["lora.layers=[3, -1]"], r"lora.layers: must be a non-empty list of layer indices >= 0"),
        (["lora.layers=12"], r"lora.layers: expected a list, got 12"),
        (["lora.layers=[4, 4]"], r"lora.layers: names a layer twice"),
        (["lora.enabled=false", "lora.layers=[4]"], r"lora.layers: chooses where adapters go, so it needs lora"),
        (["data.val_fraction=0.9"], "data.val_fraction"),
        (["data.forget_rephrasings=-1"], "data.forget_rephrasings: must be >= 0"),
        (["data.stop_rephrasings=-2"], "data.stop_rephrasings: must be >= 0"),
        (["data.stop_pool=rho"], r"data.stop_pool: 'rho' is not one of \['none', 'airt'\]"),
        (["train.kl_top_k=-1"], r"train.kl_top_k: must be >= 0 \(0: exact KL\)"),
        (["train=3"], "train: expected a mapping"),
        (["nonsense"], "must look like section.key=value"),
    ],
)
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_bad_dataset_spec_is_reported():
    with pytest.raises((ConfigError, DataError), match="limit"):
        load_config(None, ["data.harmful_prompts={path: x.jsonl, limit: -1}"])


def test_a_path_alone_names_a_dataset(tmp_path):
    # `--set data.benign_prompts=mine.jsonl` is what a user types first; it means {path: mine.jsonl}, the defaults kept
    cfg = load_config(None, ["data.benign_prompts=mine.jsonl", "data.harmful_prompts={path: h.csv, limit: 5}"])
    assert cfg.data.benign_prompts.path == "mine.jsonl"
    assert cfg.data.benign_prompts.prompt_column == "prompt" and cfg.data.benign_prompts.limit is None
    assert (cfg.data.harmful_prompts.path, cfg.data.harmful_prompts.limit) == ("h.csv", 5)
    (tmp_path / "c.yaml").write_text("data:\n  normal_texts: texts.jsonl\n")
    assert load_config(tmp_path / "c.yaml").data.normal_texts.path == "texts.jsonl"
    with pytest.raises(DataError, match="non-empty string"):
        load_config(None, ["data.benign_prompts=''"])
    with pytest.raises(ConfigError, match="data.benign_prompts: expected a mapping"):  # a number is no path
        load_config(None, ["data.benign_prompts=3"])


def test_missing_or_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(listy)


def test_the_shipped_harm_config_is_the_default_run():
    # README: `unlearnlm run configs/harm.yaml` equals `unlearnlm run`; a default changed in one place only breaks it.
    from pathlib import Path

    from unlearnlm.loader import load_config
    from unlearnlm.methods import create_method

    shipped = load_config(Path(__file__).parents[1] / "configs" / "harm.yaml")
    default = load_config(None)
    assert (shipped.train, shipped.data, shipped.lora, shipped.generation) == (
        default.train, default.data, default.lora, default.generation)
    assert shipped.method.name == default.method.name
    assert create_method(shipped.method.name, shipped.method.options).options == create_method(
        default.method.name, default.method.options).options


def test_lora_layers_from_the_command_line():
    assert load_config(None, ["lora.layers=[16, 17, 29]"]).lora.layers == [16, 17, 29]
    assert load_config(None, []).lora.layers is None
