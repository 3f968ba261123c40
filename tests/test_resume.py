"""A real kill: ``unlearnlm run`` in its own process is SIGKILLed in the middle of training, ``--resume`` finishes it,
and the result equals an uninterrupted run of the same config bit for bit (weights, losses, answers, metrics; not
the timings). The uninterrupted run and the resumed one run in the test's own process, to save two start-ups."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import save_tiny, write_benign_files, write_jsonl
from safetensors.torch import load_file

from unlearnlm.cli import main

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_STEPS, EVERY = 100, 5
TIMINGS = {"seconds", "wall_seconds", "stage_seconds"}


@pytest.fixture
def run_config(tmp_path) -> Path:
    """A custom-task run on a tiny LoRA-adapted model: 100 distance_cluster steps, a checkpoint every 5, one check
    at the end (the pii judge never flags the tiny model's answers, so the last step's weights are kept)."""
    save_tiny(tmp_path / "tiny")
    forget = write_jsonl(tmp_path / "forget.jsonl", [{"prompt": f"Tell me about weapon {i}",
                                                      "response": f"Here is how, step {i}."} for i in range(10)])
    benign, normal = write_benign_files(tmp_path)
    config = tmp_path / "run.yaml"
    config.write_text(f"""
judges: [pii]
model: {{name_or_path: {tmp_path / "tiny"}}}
lora: {{r: 2}}
data:
  task: custom
  custom: {{forget_dialogues: {{path: {forget}}}}}
  benign_prompts: {{path: {benign}}}
  normal_texts: {{path: {normal}}}
  normal_train_size: 6
  eval_size: 4
  benign_val_size: 2
generation: {{max_new_tokens: 4, batch_size: 8}}
train: {{max_steps: {MAX_STEPS}, checkpoint_every: {EVERY}, eval_every: 0, batch_size: 2, kl_top_k: 16,
         target_flagged_rate: 1.0, max_normal_kl: 1000.0, max_over_refusal: 1.0}}
""")
    return config


def _cli(tmp_path: Path, *args: str) -> subprocess.Popen:
    """``unlearnlm run ARGS`` in a process of its own, one thread (as the tests run), offline."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "UNLEARNLM_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "victim.log", "w") as log:  # a file, not a pipe nobody reads while it runs: that could fill
        return subprocess.Popen([sys.executable, "-m", "unlearnlm.cli", "run", *args], env=env, cwd=tmp_path,
                                stdout=log, stderr=subprocess.STDOUT)


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def test_a_killed_run_resumes_to_the_uninterrupted_result(tmp_path, run_config, monkeypatch, capsys):
    monkeypatch.setenv("UNLEARNLM_CACHE", str(tmp_path / "cache"))
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    victim = _cli(tmp_path, str(run_config), "--output", str(killed))
    # The uninterrupted run, in this process while the victim starts up (both on one thread, so the same sums).
    assert main(["run", str(run_config), "--output", str(whole)]) == 0
    state = killed / "checkpoint" / "state.pt"
    deadline = time.monotonic() + 90
    while not state.exists():  # the first checkpoint (step 5) is written: training is under way
        assert victim.poll() is None and time.monotonic() < deadline, (tmp_path / "victim.log").read_text()
        time.sleep(0.02)
    time.sleep(0.1)  # a few steps past the checkpoint: the resumed run must redo them
    assert victim.poll() is None, "the run finished before it could be killed"
    os.kill(victim.pid, signal.SIGKILL)
    assert victim.wait(timeout=30) == -signal.SIGKILL
    saved = torch.load(state, weights_only=True)
    assert 0 < saved["step"] < MAX_STEPS and saved["step"] % EVERY == 0
    assert not (killed / "metrics.json").exists() and not (killed / "model").exists()

    assert main(["run", str(run_config), "--output", str(killed)]) == 2  # a plain run into it is refused
    assert "unlearnlm run --resume" in capsys.readouterr().err
    assert main(["run", "--resume", str(killed)]) == 0
    log = capsys.readouterr().out
    assert f"resumed from the checkpoint at step {saved['step']}" in log
    assert "reusing the original model's answers" in log  # the before stage came from its cache

    metrics = {name: json.loads((folder / "metrics.json").read_text()) for name, folder in [("whole", whole), ("killed", killed)]}
    assert metrics["whole"]["training"]["steps"] == metrics["whole"]["training"]["best_step"] == MAX_STEPS
    assert _without_timings(metrics["killed"]) == _without_timings(metrics["whole"])
    for name in ("history.jsonl", "examples.jsonl", "expected.jsonl"):
        assert (killed / name).read_text() == (whole / name).read_text(), name
    a, b = load_file(whole / "model" / "model.safetensors"), load_file(killed / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (killed / "checkpoint").exists()  # a finished run no longer needs it
