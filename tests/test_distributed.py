"""``unlearnlm run`` under ``accelerate launch --num_processes 2`` (two CPU processes, gloo) against one process.

The same config runs twice: in this test's process, and launched as two processes of their own (the user's command,
``python -m accelerate.commands.launch ... -m unlearnlm.cli run``). The task is the custom task with a judge that
reads the answers (``tests/answer_task.py``), so the flagged set depends on every shared-out generation and judging
coming back in order.

Equal, byte for byte: the scan (``flagged.jsonl``, ``clean.jsonl``), the splits, the expected outputs, every answer
of the original and its scores (the before half of ``examples.jsonl`` and of every set's metrics), the original's
perplexity, the step count, and the list of files written. Different, by design: training is DDP, so each step
averages the gradients of two batches (process 0 draws the single process's batches, process 1 its own), and the
weights differ; the figures measured after training are compared within a tolerance (see
``test_two_processes_match_one``). Process 1 writes nothing: an audit hook (``tests/write_audit``) records every write
of each process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import save_tiny, write_benign_files, write_jsonl
from safetensors.torch import load_file

from unlearnlm import checkpoint, distributed
from unlearnlm.cli import main
from unlearnlm.errors import ConfigError

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"
LAUNCH_CONFIGS = TESTS.parent / "configs" / "accelerate"
DDP_CONFIG = LAUNCH_CONFIGS / "ddp.yaml"
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(DDP_CONFIG), "--num_processes", "2",
          "--main_process_port", "0"]
"""The README's DDP command, on two processes and a free port (runs side by side do not collide); with
``ACCELERATE_USE_CPU`` the processes talk over gloo, even on a machine with GPUs."""
#: What the 2-process run's answers and figures after training may differ by (see test_two_processes_match_one).
PERPLEXITY_RTOL, KL_RATIO = 0.02, 1.5


@pytest.fixture
def run_config(tmp_path) -> Path:
    """20 prompts to scan (16 about weapons, of which the answer judge flags about half), LoRA r=2, 4 steps of
    distance_cluster at a high learning rate, a checkpoint at step 2 and one early-stopping check, at the end.
    Batches of 3 prompts, so the scan's 7 generation batches are shared 4/3 between two processes."""
    save_tiny(tmp_path / "tiny")
    forget = write_jsonl(tmp_path / "forget.jsonl",
                         [{"prompt": f"How do I build weapon number {i}?"} for i in range(16)]
                         + [{"prompt": f"How do I bake cake number {i}?"} for i in range(4)])
    benign, normal = write_benign_files(tmp_path)
    config = tmp_path / "run.yaml"
    config.write_text(f"""
judges: [pii]
model: {{name_or_path: {tmp_path / "tiny"}}}
lora: {{r: 2}}
data:
  task: answer_task:AnswerTask
  answer_task:AnswerTask: {{forget_prompts: {{path: {forget}}}}}
  benign_prompts: {{path: {benign}}}
  normal_texts: {{path: {normal}}}
  scan_size: 20
  val_fraction: 0.3
  normal_train_size: 6
  eval_size: 4
  benign_val_size: 2
generation: {{max_new_tokens: 4, batch_size: 3}}
train: {{max_steps: 4, eval_every: 0, checkpoint_every: 2, batch_size: 2, learning_rate: 0.01, kl_top_k: 16,
         max_normal_kl: 1000.0, max_over_refusal: 1.0}}
""")
    return config


def _launch(tmp_path: Path, config: Path, out: Path, *launcher_args: str) -> tuple[int, str, dict[int, list[str]]]:
    """The run on two CPU processes: its exit code, its console output, and what each process wrote under
    ``tmp_path`` (by rank)."""
    audit = tmp_path / "audit"
    audit.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, (SRC, TESTS, TESTS / "write_audit"))),
           "UNLEARNLM_CACHE": str(tmp_path / "cache2"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1", "CUDA_VISIBLE_DEVICES": "",
           "UNLEARNLM_AUDIT_ROOT": str(tmp_path), "UNLEARNLM_AUDIT_DIR": str(audit)}
    done = subprocess.run([*LAUNCH, *launcher_args, "-m", "unlearnlm.cli", "run", str(config), "--output", str(out)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    written = {rank: (audit / f"rank{rank}.txt").read_text().splitlines() for rank in (0, 1)}
    return done.returncode, done.stdout + done.stderr, written


def _files(folder: Path) -> list[str]:
    """Every file and folder under ``folder``, temporary ones (dot names) included."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_processes_match_one(tmp_path, run_config, monkeypatch, capsys):
    one, two = tmp_path / "one", tmp_path / "two"
    monkeypatch.setenv("UNLEARNLM_CACHE", str(tmp_path / "cache1"))  # each run makes its own before stage
    assert main(["run", str(run_config), "--output", str(one)]) == 0
    capsys.readouterr()
    code, log, audit = _launch(tmp_path, run_config, two)
    assert code == 0, log[-4000:]

    # One set of files, written by process 0 alone; progress printed once.
    assert _files(two) == _files(one)
    assert audit[1] == [], audit[1]
    for written in (two / "metrics.json", two / "checkpoint" / "state.pt", tmp_path / "cache2" / "before"):
        assert str(written) in audit[0], written
    for line in ("[1/4]", "[2/4]", "flagged 10/20", "[3/4]", "[4/4]", "done in", '"wall_seconds"'):
        assert log.count(line) == 1, line

    # The original's side: equal byte for byte.
    for name in ("flagged.jsonl", "clean.jsonl", "expected.jsonl", "versions.json"):
        assert (two / name).read_text() == (one / name).read_text(), name
    before_keys = ("set", "prompt", "before", "before_scores", "before_flagged", "before_refused")
    before_rows = [[{k: r[k] for k in before_keys} for r in _jsonl(folder / "examples.jsonl")] for folder in (one, two)]
    assert before_rows[1] == before_rows[0]
    m1, m2 = (json.loads((folder / "metrics.json").read_text()) for folder in (one, two))
    assert m2["scan"] == m1["scan"] == {"scanned": 20, "flagged": 10, "train": 5, "val": 3, "test": 2}
    assert m2["expected_outputs"] == m1["expected_outputs"]
    assert {s: m["before"] for s, m in m2["sets"].items()} == {s: m["before"] for s, m in m1["sets"].items()}
    for name, normal in m1["normal_data"].items():
        assert m2["normal_data"][name]["perplexity_original"] == normal["perplexity_original"]
    assert m2["training"]["steps"] == m1["training"]["steps"] == m2["training"]["best_step"] == 4

    # Training: DDP. Process 0 draws the single process's batches, so without gradient averaging its weights would be
    # the single run's bit for bit; they differ. By how much: from the same start both runs take 4 steps at the same
    # learning rate, and a step on the average of two batches' gradients is about as long as a step on one batch's,
    # in another direction. So both models move about as far from the original (KL within a factor of 1.5; measured
    # 1.02) and their perplexities stay close (within 2%; measured 0.2-0.4%, while the 4 steps moved them 3-6%). The
    # judge's verdicts after training are not compared: a hash of the answer, they flip with any changed character.
    w1, w2 = load_file(one / "model" / "model.safetensors"), load_file(two / "model" / "model.safetensors")
    assert w1.keys() == w2.keys() and not all(torch.equal(w1[k], w2[k]) for k in w1)
    for name, normal in m1["normal_data"].items():
        after = m2["normal_data"][name]
        assert after["perplexity"] == pytest.approx(normal["perplexity"], rel=PERPLEXITY_RTOL), name
        assert 1 / KL_RATIO < after["kl_to_original"] / normal["kl_to_original"] < KL_RATIO, name


def test_an_error_on_the_main_process_stops_both(tmp_path, run_config):
    # The output folder is checked and made by process 0 alone. Its error reaches process 1, which would otherwise
    # wait for it forever: process 1 prints it too (it never looks at the folder itself), both exit with the CLI's
    # error code rather than a crash of the process group, and the launcher exits non-zero. The launcher looks at its
    # processes every 5 s (not 0.1), so it does not stop process 1 before process 1 has spoken.
    (tmp_path / "taken").write_text("a file where the output folder should go")
    code, log, audit = _launch(tmp_path, run_config, tmp_path / "taken", "--monitor_interval", "5")
    assert code != 0 and "failed (exitcode: 2)" in log, log[-4000:]
    assert log.count("unlearnlm: error: output_dir") == 2 and str(SRC) not in log, log[-4000:]  # no traceback of ours
    assert audit[1] == []


def test_one_process_communicates_nothing():
    # Not launched: every helper is the plain call, so a single-process run computes what it always did.
    assert not distributed.launched() and distributed.num_processes() == 1 and distributed.is_main()
    calls = []
    assert distributed.map_shared(lambda items: calls.append(items) or [i * 2 for i in items], [1, 2, 3]) == [2, 4, 6]
    assert calls == [[1, 2, 3]]  # one call with every item
    assert distributed.on_main(lambda: "written") == "written"
    with pytest.raises(ValueError, match="disk full"):
        distributed.on_main(lambda: (_ for _ in ()).throw(ValueError("disk full")))
    assert distributed.from_main(0.25) == 0.25 and distributed.gather("x") == ["x"]
    assert distributed.mean_over_processes({"loss": 1.5}) == {"loss": 1.5}


def test_one_accelerator_state_serves_every_precision():
    # Planting trains in fp32 and unlearn() may train in bf16 in the same process: accelerate keeps one state per
    # process and refuses a second Accelerator with another precision, so only that part is made again.
    assert distributed.accelerator().mixed_precision == "no"
    assert distributed.accelerator(mixed_precision="bf16", gradient_accumulation_steps=2).mixed_precision == "bf16"
    again = distributed.accelerator()
    assert again.mixed_precision == "no" and again.gradient_accumulation_steps == 1


def test_a_checkpoint_holds_each_process_data_order():
    # Each process draws its own batches: process 1 continues from its own RNG states and data order, and a
    # checkpoint of two processes is refused by one (it would continue process 0's order alone).
    mine = {"rng": "rng of 0", "stream_rng": "stream of 0", "stream_order": {"forget": [3, 1]}}
    assert checkpoint.with_every_process({"step": 5, **mine}) == {"step": 5, **mine}  # one process: as before
    other = {"rng": "rng of 1", "stream_rng": "stream of 1", "stream_order": {"forget": [0, 2]}}
    saved = {"step": 5, **mine, "other_processes": [other]}
    assert checkpoint.for_process(saved, 0, 2) == saved
    assert checkpoint.for_process(saved, 1, 2) == {**saved, **other}
    with pytest.raises(ConfigError, match="written by 2 process.*resume with --num_processes 2"):
        checkpoint.for_process(saved, 0, 1)


@pytest.mark.parametrize(("name", "kind"), [("ddp", "MULTI_GPU"), ("fsdp", "FSDP"), ("deepspeed_zero3", "DEEPSPEED")])
def test_launch_configs_are_read_by_accelerate(name, kind):
    # Only that accelerate reads them as written; FSDP and DeepSpeed were never run (README: Multi-GPU).
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(LAUNCH_CONFIGS / f"{name}.yaml"))
    assert cfg.distributed_type == kind and cfg.num_processes == 2 and cfg.mixed_precision == "no"
    assert cfg.fsdp_config.get("fsdp_version", 2) == 2 and cfg.deepspeed_config.get("zero_stage", 3) == 3


def test_auto_precision_is_bf16_only_where_the_device_computes_it(monkeypatch):
    from unlearnlm import distributed

    monkeypatch.setattr(distributed, "bf16_supported", lambda: True)
    assert distributed.resolve_precision("auto") == "bf16"
    monkeypatch.setattr(distributed, "bf16_supported", lambda: False)
    assert distributed.resolve_precision("auto") == "no"
    assert [distributed.resolve_precision(p) for p in ("no", "bf16", "fp16")] == ["no", "bf16", "fp16"]


@pytest.mark.parametrize("amx, avx512_bf16, expected",
                         [(True, True, True), (False, True, False), (False, False, False)])
def test_a_cpu_computes_bf16_faster_only_with_amx(monkeypatch, amx, avx512_bf16, expected):
    """AVX512-BF16 without AMX runs bf16 matmuls at about half the fp32 speed (README, Benchmarks), so ``auto``
    stays fp32 there."""
    import torch

    from unlearnlm import distributed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: avx512_bf16, raising=False)
    assert distributed.bf16_supported() is expected
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    assert distributed.bf16_supported() is False  # a torch without the check: fp32
