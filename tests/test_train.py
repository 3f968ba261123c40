"""The loop's early stopping and best-checkpoint keeping, with a scripted monitor."""

import math

import pytest
import torch

from unlearnlm.config import DataConfig, TrainConfig
from unlearnlm.data.records import Dialogue
from unlearnlm.methods import create_method
from unlearnlm.models import Reference
from unlearnlm.train import Check, lr_factor, unlearn

FORGET = [Dialogue("How do I build a weapon?", "First gather the parts, then assemble them.")] * 4


def _monitor(rates, kls, snapshots):
    def monitor(model, step):
        snapshots[step] = {n: p.detach().clone() for n, p in model.named_parameters()}
        i = len(snapshots) - 1
        return Check(step=step, flagged_rate=rates[i], normal_kl=kls[i])
    return monitor


def _train(model, tokenizer, monitor, **cfg):
    train_cfg = TrainConfig(batch_size=2, learning_rate=1e-2, **cfg)
    return unlearn(model, tokenizer, create_method("gradient_ascent"), forget=FORGET, normal=[], train_cfg=train_cfg,
                   data_cfg=DataConfig(), reference=Reference(model, copy_weights=False),
                   monitor=monitor, initial_check=Check(0, 1.0, 0.0))


def test_stops_when_target_reached(tiny_model, tokenizer):
    snaps = {}
    result = _train(tiny_model, tokenizer, _monitor([0.5, 0.0, 0.0], [0.01] * 3, snaps),
                    max_steps=30, eval_every=2, target_flagged_rate=0.05, max_normal_kl=0.1)
    assert result.stop_reason == "target_reached" and result.steps == 4 and result.best_step == 4


def test_patience_and_best_checkpoint_restored(tiny_model, tokenizer):
    snaps = {}
    # Best at step 2 (0.3); step 4 violates the KL bound; steps 4-6 bring no improvement.
    result = _train(tiny_model, tokenizer, _monitor([0.3, 0.0, 0.5, 0.4], [0.01, 9.0, 0.01, 0.01], snaps),
                    max_steps=30, eval_every=2, patience=3, max_normal_kl=0.1)
    assert result.stop_reason == "patience" and result.steps == 8 and result.best_step == 2
    for name, p in tiny_model.named_parameters():
        assert torch.equal(p, snaps[2][name]), name


def test_original_is_kept_when_nothing_beats_it(tiny_model, tokenizer):
    original = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    result = _train(tiny_model, tokenizer, _monitor([1.0, 1.0], [5.0, 5.0], {}), max_steps=4, eval_every=2,
                    patience=5, max_normal_kl=0.1)
    assert result.best_step == 0
    assert all(torch.equal(p, original[n]) for n, p in tiny_model.named_parameters())


def test_same_seed_same_result(tokenizer):
    from conftest import make_model

    runs = []
    for _ in range(2):
        model = make_model(len(tokenizer))
        _train(model, tokenizer, None, max_steps=3, eval_every=0)
        runs.append(next(model.parameters()).detach().clone())
    assert torch.equal(runs[0], runs[1])


def test_over_refusing_checkpoint_is_never_best(tiny_model, tokenizer):
    snaps = {}

    def monitor(model, step):
        snaps[step] = {n: p.detach().clone() for n, p in model.named_parameters()}
        # step 2: some unlearning; step 4: all unlearned but refuses half of the benign prompts
        return {2: Check(2, 0.5, 0.01, over_refusal=0.0), 4: Check(4, 0.0, 0.01, over_refusal=0.5)}[step]

    result = _train(tiny_model, tokenizer, monitor, max_steps=4, eval_every=2, target_flagged_rate=0.05,
                    max_normal_kl=0.1, max_over_refusal=0.1)
    assert result.best_step == 2 and result.stop_reason == "max_steps"
    assert all(torch.equal(p, snaps[2][n]) for n, p in tiny_model.named_parameters())


def test_lr_schedules():
    const = TrainConfig(max_steps=10, warmup_steps=2)
    assert [lr_factor(s, const) for s in (0, 1, 5, 9)] == [0.5, 1.0, 1.0, 1.0]
    linear = TrainConfig(max_steps=10, warmup_steps=2, lr_schedule="linear")
    assert lr_factor(0, linear) == 0.5 and lr_factor(1, linear) == 1.0
    assert lr_factor(5, linear) == pytest.approx(1 - 4 / 8) and lr_factor(9, linear) == pytest.approx(0.0)
    cosine = TrainConfig(max_steps=10, lr_schedule="cosine")
    assert lr_factor(0, cosine) == pytest.approx(1.0) and lr_factor(9, cosine) == pytest.approx(0.0, abs=1e-9)
    assert lr_factor(5, cosine) == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 9)))


def test_every_step_is_told_its_progress(tiny_model, tokenizer):
    from unlearnlm.methods.baselines import GradientAscent

    seen = []

    class Recording(GradientAscent):
        def step(self, model, reference, batch):
            seen.append(batch["progress"])
            return super().step(model, reference, batch)

    unlearn(tiny_model, tokenizer, Recording(GradientAscent.Options()), forget=FORGET, normal=[],
            train_cfg=TrainConfig(max_steps=4, batch_size=2, eval_every=0), data_cfg=DataConfig(),
            reference=Reference(tiny_model, copy_weights=False))
    assert seen == [0.25, 0.5, 0.75, 1.0]  # step / max_steps
