import pytest

from unlearnlm.cli import main


def test_methods_lists_every_registered_method(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in ("distance_cluster", "gradient_ascent", "yao", "npo", "grad_diff", "simnpo", "me_gd", "refusal_dpo",
                 "idk_ap", "rmu", "circuit_breakers", "repbend", "undial"):
        assert name in out
    assert "layers=[10, 20]" in out  # a list default (default_factory) is listed too


def test_bad_config_is_a_clear_error_not_a_traceback(capsys, tmp_path):
    assert main(["run", "--set", "train.max_steps=0", "--output", str(tmp_path / "r")]) == 2
    assert "train.max_steps: must be positive" in capsys.readouterr().err


def test_missing_prompts_file_is_reported(capsys, tmp_path):
    assert main(["scan", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path)]) == 2
    assert "missing.jsonl" in capsys.readouterr().err


def test_unknown_command_exits_nonzero():
    with pytest.raises(SystemExit):
        main(["frobnicate"])
