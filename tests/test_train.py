"""The loop's early stopping and best-checkpoint keeping, with a scripted monitor."""

import math

import pytest
import torch

from unlearnlm import losses
from unlearnlm.config import DataConfig, TrainConfig
from unlearnlm.data.records import Dialogue
from unlearnlm.errors import ConfigError, TrainingDiverged
from unlearnlm.methods import StepOutput, UnlearningMethod, create_method
from unlearnlm.methods.base import forward
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
    train_cfg = TrainConfig(**{"batch_size": 2, "learning_rate": 1e-2, **cfg})
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


def test_patience_after_move_waits_for_the_forget_answers_to_move(tiny_model, tokenizer):
    # Four checks at the original's rate, then it moves (0.6, not acceptable: KL over the bound), then two more that
    # do not beat the original.
    rates, kls = [1.0, 1.0, 1.0, 1.0, 0.6, 1.0, 1.0], [0.01, 0.01, 0.01, 0.01, 9.0, 0.01, 0.01]
    plain = _train(tiny_model, tokenizer, _monitor(rates, kls, {}), max_steps=30, eval_every=2, patience=3,
                   max_normal_kl=0.1, patience_after_move=False)
    assert plain.stop_reason == "patience" and plain.steps == 6  # three checks that never moved
    waited = _train(tiny_model, tokenizer, _monitor(rates, kls, {}), max_steps=30, eval_every=2, patience=3,
                    max_normal_kl=0.1)  # the default
    assert waited.stop_reason == "patience" and waited.steps == 14  # from step 10 on: 10, 12, 14
    never = _train(tiny_model, tokenizer, _monitor([1.0] * 5, [0.01] * 5, {}), max_steps=10, eval_every=2,
                   patience=1, max_normal_kl=0.1, patience_after_move=True)
    assert never.stop_reason == "max_steps" and never.best_step == 0


def test_min_steps_keeps_patience_from_ending_a_run_on_a_first_check_dip(tiny_model, tokenizer):
    # Run H's shape, then run HC's: a dip at the first check that the next four do not beat, then the descent.
    rates, kls = [0.49, 0.83, 0.83, 0.53, 0.49, 0.28, 0.15], [0.04] * 7
    plain = _train(tiny_model, tokenizer, _monitor(rates, kls, {}), max_steps=14, eval_every=2, patience=3,
                   max_normal_kl=0.1)
    assert plain.stop_reason == "patience" and plain.steps == 8 and plain.best_step == 2
    waited = _train(tiny_model, tokenizer, _monitor(rates, kls, {}), max_steps=14, eval_every=2, patience=3,
                    max_normal_kl=0.1, min_steps=8)  # only the checks after step 8 count: 10, then 12 improves
    assert waited.stop_reason == "max_steps" and waited.steps == 14 and waited.best_step == 14
    stale = _train(tiny_model, tokenizer, _monitor([0.49, 0.83, 0.83, 0.83, 0.83, 0.83, 0.83], kls, {}),
                   max_steps=14, eval_every=2, patience=3, max_normal_kl=0.1, min_steps=4)
    assert stale.stop_reason == "patience" and stale.steps == 10 and stale.best_step == 2  # checks 6, 8, 10
    with pytest.raises(ConfigError, match="train.min_steps"):
        TrainConfig(min_steps=-1)


def test_first_check_skips_the_checks_before_it_but_never_the_last_step(tiny_model, tokenizer):
    snaps = {}
    result = _train(tiny_model, tokenizer, _monitor([0.5, 0.4, 0.3], [0.01] * 3, snaps), max_steps=9, eval_every=2,
                    patience=5, max_normal_kl=0.1, first_check=6)
    assert sorted(snaps) == [6, 8, 9] and [c.step for c in result.checks] == [0, 6, 8, 9]
    assert result.best_step == 9
    snaps = {}
    _train(tiny_model, tokenizer, _monitor([0.5, 0.4], [0.01] * 2, snaps), max_steps=3, eval_every=2, first_check=10)
    assert sorted(snaps) == [3]  # past max_steps: only the last step
    with pytest.raises(ConfigError, match="train.first_check"):
        TrainConfig(first_check=-1)


def test_checks_that_generate_leave_a_lora_run_bit_for_bit_as_without_them(tokenizer):
    """A check answers prompts with the adapters merged in; the weights it hands back are the ones it got, so how
    many checks a run makes does not change what it trains (before exact restoring, unmerging left rounding)."""
    from conftest import make_model

    from unlearnlm.config import LoraConfig
    from unlearnlm.generation import generate
    from unlearnlm.models import add_lora

    def run(eval_every):
        model = add_lora(make_model(len(tokenizer)), LoraConfig(r=4, alpha=8), seed=0)

        def monitor(m, step):
            generate(m, tokenizer, FORGET[:2], max_new_tokens=3, batch_size=2)
            return Check(step=step, flagged_rate=1.0 / (step + 1), normal_kl=0.0)

        _train(model, tokenizer, monitor, max_steps=6, eval_every=eval_every, learning_rate=5e-2)
        return {n: p.detach().clone() for n, p in model.named_parameters()}

    every, last_only = run(1), run(0)
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in every.items())  # the adapters trained
    assert all(torch.equal(every[n], last_only[n]) for n in every)


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


def test_hidden_is_not_erased_the_stop_rule_waits_for_membership_inference(tiny_model, tokenizer):
    # Nothing leaks from step 2 on, but membership inference still tells the forget data apart until step 6.
    aucs = {2: 0.95, 4: 0.8, 6: 0.55}
    monitor = lambda model, step: Check(step, 0.0, 0.01, membership_auc=aucs[step])  # noqa: E731
    result = _train(tiny_model, tokenizer, monitor, max_steps=8, eval_every=2, patience=5, max_normal_kl=0.1,
                    max_membership_auc=0.6)
    assert result.stop_reason == "target_reached" and result.steps == 6 and result.best_step == 6
    unbounded = _train(tiny_model, tokenizer, monitor, max_steps=8, eval_every=2, max_normal_kl=0.1)
    assert unbounded.stop_reason == "target_reached" and unbounded.steps == 2  # no bound: the old rule


def test_among_checks_that_leak_nothing_the_lower_membership_auc_is_best(tiny_model, tokenizer):
    aucs = {2: 0.9, 4: 0.7, 6: 0.8}  # never under the bound: the run ends at max_steps and keeps step 4
    monitor = lambda model, step: Check(step, 0.0, {2: 0.01, 4: 0.05, 6: 0.01}[step], membership_auc=aucs[step])  # noqa: E731
    result = _train(tiny_model, tokenizer, monitor, max_steps=6, eval_every=2, patience=5, max_normal_kl=0.1,
                    max_membership_auc=0.6)
    assert result.stop_reason == "max_steps" and result.best_step == 4


@pytest.mark.parametrize("measure, bound", [("belief_drift", "max_belief_drift"),  # untouched stop pairs moved
                                            ("perplexity_change", "max_perplexity_increase")])  # human text degraded
def test_a_checkpoint_that_broke_what_the_check_guards_is_never_best(tiny_model, tokenizer, measure, bound):
    # step 4 forgets everything, but its guarded measure is 5 times over the bound (the KL stays low)
    value = {2: 0.01, 4: 0.10, 6: 0.02}
    flagged = {2: 0.6, 4: 0.0, 6: 0.3}
    monitor = lambda model, step: Check(step, flagged[step], 0.01, **{measure: value[step]})  # noqa: E731
    result = _train(tiny_model, tokenizer, monitor, max_steps=6, eval_every=2, patience=5, max_normal_kl=0.1,
                    **{bound: 0.02})
    assert result.stop_reason == "max_steps" and result.best_step == 6
    unbounded = _train(tiny_model, tokenizer, monitor, max_steps=6, eval_every=2, max_normal_kl=0.1)
    assert unbounded.stop_reason == "target_reached" and unbounded.best_step == 4


def test_perplexity_bound_is_a_positive_share():
    with pytest.raises(ConfigError, match="train.max_perplexity_increase"):
        TrainConfig(max_perplexity_increase=0.0)


def test_lr_schedules():
    const = TrainConfig(max_steps=10, warmup_steps=2)
    assert [lr_factor(s, const) for s in (0, 1, 5, 9)] == [0.5, 1.0, 1.0, 1.0]
    linear = TrainConfig(max_steps=10, warmup_steps=2, lr_schedule="linear")
    assert lr_factor(0, linear) == 0.5 and lr_factor(1, linear) == 1.0
    assert lr_factor(5, linear) == pytest.approx(1 - 4 / 8) and lr_factor(9, linear) == pytest.approx(0.0)
    cosine = TrainConfig(max_steps=10, lr_schedule="cosine")
    assert lr_factor(0, cosine) == pytest.approx(1.0) and lr_factor(9, cosine) == pytest.approx(0.0, abs=1e-9)
    assert lr_factor(5, cosine) == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 9)))


class _Scripted(UnlearningMethod):
    """Cross-entropy on the forget answers plus a term that turns bad at step ``at``: ``nan`` (the term's value) or
    ``grad`` (a finite value, sqrt of 0, whose gradient is infinite)."""

    name, Options = "scripted", None

    def __init__(self, at: int, how: str) -> None:
        super().__init__(None)
        self.at, self.how, self.calls = at, how, 0

    def step(self, model, reference, batch):
        self.calls += 1
        out = forward(model, batch["forget"])
        ce = losses.nll(out.logits, out.labels)
        extra = ce * 0.0
        if self.calls == self.at:
            weight = next(p for p in model.parameters() if p.requires_grad)
            extra = ce * float("nan") if self.how == "nan" else torch.sqrt(((weight - weight.detach()) ** 2).sum())
        return StepOutput(loss=ce + extra, terms={"ce": ce.item(), "extra": extra.item()})


@pytest.mark.parametrize(("how", "message"), [("nan", "loss term 'extra' is nan"), ("grad", "the gradient norm is nan")])
def test_a_non_finite_step_stops_the_run_and_never_reaches_the_weights(tiny_model, tokenizer, how, message):
    snaps = {}
    with pytest.raises(TrainingDiverged) as caught:
        unlearn(tiny_model, tokenizer, _Scripted(at=3, how=how), forget=FORGET, normal=[],
                train_cfg=TrainConfig(batch_size=2, learning_rate=1e-2, max_steps=6, eval_every=2),
                data_cfg=DataConfig(), reference=Reference(tiny_model, copy_weights=False),
                monitor=_monitor([0.5, 0.5], [0.01, 0.01], snaps), initial_check=Check(0, 1.0, 0.0))
    text = str(caught.value)
    assert text.startswith("training diverged at step 3: ") and message in text, text
    assert "the best checkpoint so far was step 2" in text and "train.learning_rate (now 0.01)" in text
    assert [row["step"] for row in caught.value.history] == [1, 2, 3]
    assert not math.isfinite(caught.value.history[-1]["extra"]) if how == "nan" else caught.value.history[-1]["extra"] == 0
    # the weights are those after step 2: the bad step never reached them
    assert all(torch.isfinite(p).all() for p in tiny_model.parameters())
    assert all(torch.equal(p, snaps[2][n]) for n, p in tiny_model.named_parameters())


class _Killed(Exception):
    """Stands in for a kill in the in-process resume test (the real SIGKILL is in test_resume.py)."""


def _prompt_miner(refused_prompts, asked):
    """A scripted miner: refuses exactly the prompts in ``refused_prompts`` (a list per round, then none)."""
    def miner(model, dialogues):
        asked.append([d.prompt for d in dialogues])
        refusing = refused_prompts.pop(0) if refused_prompts else set()
        return [d.prompt in refusing for d in dialogues]
    return miner


def _normal_rows_seen(tokenizer, normal):
    """A yao method that records, per step, which normal prompts its normal batch held."""
    seen = []
    method = create_method("yao")
    step = method.step

    def recording(model, reference, batch):
        texts = tokenizer.batch_decode(batch["normal"]["input_ids"])
        seen.append(sorted(d.prompt for t in texts for d in normal if d.prompt in t))
        return step(model, reference, batch)
    method.step = recording
    return method, seen


def test_mined_refusals_fill_the_normal_batches_until_answered(tiny_model, tokenizer):
    normal = [Dialogue(f"What is {i} plus {i}?", f"It is {2 * i}.") for i in range(8)]
    hard = {"What is 3 plus 3?", "What is 5 plus 5?"}
    asked = []
    method, seen = _normal_rows_seen(tokenizer, normal)
    result = unlearn(tiny_model, tokenizer, method, forget=FORGET, normal=normal,
                     train_cfg=TrainConfig(batch_size=4, learning_rate=1e-3, max_steps=8, eval_every=2,
                                           mine_refusals=8, mine_share=0.5),
                     data_cfg=DataConfig(), reference=Reference(tiny_model, copy_weights=True),
                     miner=_prompt_miner([hard, set(), hard], asked))
    # rounds after steps 2, 4, 6 (not at the last step); every round asks all 8 normal prompts and nothing else
    assert [m["step"] for m in result.mined] == [2, 4, 6] and len(asked) == 3
    assert all(sorted(a) == sorted(d.prompt for d in normal) for a in asked)
    assert [(m["refused"], m["held"]) for m in result.mined] == [(2, 2), (0, 0), (2, 2)]
    for step, rows in enumerate(seen, start=1):
        from_hard = sum(r in hard for r in rows)
        if step in (3, 4, 7, 8):  # after a round that found the two refused: half of each batch is drawn from them
            assert from_hard >= 2, (step, rows)
        assert len(rows) == 4 or len(set(rows)) < 4  # the batch keeps its size (repeats collapse in the decode)
    assert any(sum(r in hard for r in rows) < 2 for rows in seen[4:6])  # steps 5-6: answered, plain batches again


def test_a_reserve_row_is_trained_on_only_once_mined_as_refused(tiny_model, tokenizer):
    normal = [Dialogue(f"What is {i} plus {i}?", f"It is {2 * i}.") for i in range(4)]
    reserve = [Dialogue(f"What is {i} times two?", f"It is {2 * i}.") for i in range(4)]
    hard = {"What is 2 times two?"}
    asked = []
    method, seen = _normal_rows_seen(tokenizer, [*normal, *reserve])
    result = unlearn(tiny_model, tokenizer, method, forget=FORGET, normal=normal, reserve=reserve,
                     train_cfg=TrainConfig(batch_size=2, learning_rate=1e-3, max_steps=6, eval_every=2,
                                           mine_refusals=4, mine_share=0.5),
                     data_cfg=DataConfig(), reference=Reference(tiny_model, copy_weights=True),
                     miner=_prompt_miner([hard, hard], asked))
    assert all(sorted(a) == sorted(d.prompt for d in reserve) for a in asked)  # mining asks the reserve only
    reserve_prompts = {d.prompt for d in reserve}
    assert not any(r in reserve_prompts for rows in seen[:2] for r in rows)  # before the first round: none
    for rows in seen[2:]:  # afterwards: the refused one in every batch, no other reserve row ever
        assert "What is 2 times two?" in rows and not (set(rows) & (reserve_prompts - hard)), rows
    assert [m["held"] for m in result.mined] == [1, 1]


def test_without_mining_a_miner_changes_nothing(tokenizer):
    from conftest import make_model

    normal = [Dialogue(f"What is {i} plus {i}?", f"It is {2 * i}.") for i in range(8)]

    def run(miner, mine_refusals):
        model = make_model(len(tokenizer))
        method, seen = _normal_rows_seen(tokenizer, normal)
        result = unlearn(model, tokenizer, method, forget=FORGET, normal=normal,
                         train_cfg=TrainConfig(batch_size=2, learning_rate=1e-3, max_steps=6, eval_every=2,
                                               mine_refusals=mine_refusals),
                         data_cfg=DataConfig(), reference=Reference(model, copy_weights=True), miner=miner)
        return result, seen

    plain, plain_seen = run(None, 0)
    off, off_seen = run(_prompt_miner([{"What is 1 plus 1?"}], []), 0)  # a miner, but mining off
    nothing, nothing_seen = run(_prompt_miner([], []), 4)  # mining on, nothing refused
    assert plain_seen == off_seen and plain.history == off.history and not off.mined
    assert len(nothing.mined) == 2 and all(m["held"] == 0 for m in nothing.mined)


def test_mining_needs_checks():
    with pytest.raises(ConfigError, match="train.mine_refusals"):
        TrainConfig(mine_refusals=16, eval_every=0)
    with pytest.raises(ConfigError, match="train.mine_share"):
        TrainConfig(mine_refusals=16, mine_share=0.0)


@pytest.mark.parametrize("lora, mining", [(True, False), (False, False), (False, True)])
def test_resume_from_a_checkpoint_equals_an_uninterrupted_run(tokenizer, tmp_path, lora, mining):
    """Yao's method reads two streams and a paired one; a linear schedule with warm-up and a scripted monitor whose
    best check moves: every piece of state a checkpoint holds matters here (with ``mining``, the mined refusals
    too)."""
    from conftest import make_model

    from unlearnlm.config import LoraConfig
    from unlearnlm.models import add_lora

    normal = [Dialogue(f"What is {i} plus {i}?", f"It is {2 * i}.") for i in range(5)]
    cfg = TrainConfig(batch_size=2, learning_rate=1e-2, max_steps=9, eval_every=2, checkpoint_every=3, patience=9,
                      warmup_steps=2, lr_schedule="linear", max_normal_kl=1.0, mine_refusals=3 if mining else 0)
    rates = {2: 0.8, 4: 0.5, 6: 0.6, 8: 0.4, 9: 0.7}

    def train(folder, *, kill_at=None, resume=False):
        model = make_model(len(tokenizer))
        if lora:
            model = add_lora(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))

        def monitor(m, step):
            if step == kill_at:
                raise _Killed
            return Check(step, rates[step], 0.01)

        def miner(m, dialogues):  # refuses the even sums: a held set that changes from round to round
            return [int(d.prompt.split()[2]) % 2 == 0 for d in dialogues]

        result = unlearn(model, tokenizer, create_method("yao"), forget=FORGET, normal=normal, train_cfg=cfg,
                         data_cfg=DataConfig(), reference=Reference(model, copy_weights=not lora), monitor=monitor,
                         miner=miner, initial_check=Check(0, 1.0, 0.0), checkpoint_dir=folder, resume=resume)
        return result, {n: p.detach().clone() for n, p in model.named_parameters()}

    whole, whole_weights = train(tmp_path / "whole")
    with pytest.raises(_Killed):
        train(tmp_path / "killed", kill_at=8)  # the last checkpoint is step 6
    resumed, resumed_weights = train(tmp_path / "killed", resume=True)
    assert resumed.resumed_from == 6 and whole.resumed_from is None
    assert (resumed.steps, resumed.best_step, resumed.stop_reason) == (whole.steps, whole.best_step, whole.stop_reason) \
        == (9, 8, "max_steps")
    assert resumed.history == whole.history  # every loss term of every step, bit for bit
    assert resumed.mined == whole.mined and bool(whole.mined) == mining
    assert [vars(c) for c in resumed.checks] == [vars(c) for c in whole.checks]
    assert all(torch.equal(resumed_weights[n], p) for n, p in whole_weights.items())


def test_a_diverged_run_names_the_checkpoint_on_disk(tiny_model, tokenizer, tmp_path):
    with pytest.raises(TrainingDiverged, match=rf"the last checkpoint on disk is step 4 in {tmp_path}"):
        unlearn(tiny_model, tokenizer, _Scripted(at=5, how="nan"), forget=FORGET, normal=[],
                train_cfg=TrainConfig(batch_size=2, max_steps=8, eval_every=0, checkpoint_every=2),
                data_cfg=DataConfig(), reference=Reference(tiny_model, copy_weights=False), checkpoint_dir=tmp_path)


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


def test_bf16_training_leaves_a_plain_fp32_model(tokenizer):
    # Under train.mixed_precision bf16 the steps run under autocast; the model handed back (evaluated and saved)
    # must compute as the saved fp32 weights do when a user loads them, not under the training-time wrapper.
    from conftest import make_model

    model = make_model(len(tokenizer))
    _train(model, tokenizer, None, max_steps=2, eval_every=0, mixed_precision="bf16")
    fresh = make_model(len(tokenizer))
    fresh.load_state_dict(model.state_dict())
    ids = tokenizer("How do I build a weapon?", return_tensors="pt").input_ids
    with torch.no_grad():
        plain = model(ids).logits
        assert torch.equal(plain, fresh(ids).logits)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not torch.equal(fresh(ids).logits.float(), plain)  # the test can tell the two apart


@pytest.mark.parametrize(("precision", "reference_precision", "prepared_in", "dtype"), [
    ("bf16", "model", torch.float32, torch.bfloat16), ("no", "model", torch.float32, torch.float32),
    ("bf16", "train", torch.bfloat16, torch.bfloat16), ("no", "train", torch.float32, torch.float32)])
def test_the_methods_preparation_runs_in_the_chosen_precision(tiny_model, tokenizer, precision, reference_precision,
                                                               prepared_in, dtype):
    # The original's states and log-probabilities a method caches before training come from passes in the model's
    # own dtype whatever the steps' autocast, or under the steps' autocast with train.reference_precision: train.
    from unlearnlm.methods.base import reference_sequence_logprobs
    from unlearnlm.methods.baselines import GradientAscent

    seen = []

    class Preparing(GradientAscent):
        def prepare(self, ctx):
            reference_sequence_logprobs(ctx, ctx.forget[:1])
            seen.append("prepared")
            return super().prepare(ctx)

    hook = tiny_model.model.layers[0].self_attn.q_proj.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    try:
        unlearn(tiny_model, tokenizer, Preparing(GradientAscent.Options()), forget=FORGET, normal=[],
                train_cfg=TrainConfig(max_steps=1, batch_size=2, eval_every=0, mixed_precision=precision,
                                      reference_precision=reference_precision),
                data_cfg=DataConfig(), reference=Reference(tiny_model, copy_weights=True))
    finally:
        hook.remove()
    assert seen == [prepared_in, "prepared", dtype]  # the original's pass in prepare, then the step's pass


def test_the_reference_casts_only_inside_its_autocast_block(tiny_model, tokenizer):
    ref = Reference.of(tiny_model)
    ids = tokenizer("How do I bake bread?", return_tensors="pt").input_ids
    mask = torch.ones_like(ids)
    plain, _ = ref(ids, mask)
    with ref.autocast(torch.bfloat16):
        cast, _ = ref(ids, mask)
        with ref.autocast(None):  # nested: as it otherwise runs
            assert torch.equal(ref(ids, mask)[0], plain)
        assert ref(ids, mask)[0].dtype == torch.bfloat16
    assert cast.dtype == torch.bfloat16 and plain.dtype == torch.float32
    assert not torch.equal(cast.float(), plain) and torch.allclose(cast.float(), plain, atol=0.1)
    assert torch.equal(ref(ids, mask)[0], plain)  # back to the model's own precision after the block


def test_compiled_blocks_train_as_eager_ones_do_and_are_eager_outside_the_steps(tokenizer):
    """``train.compile``: the steps run through compiled decoder layers and train the weights as the eager run does
    (to float tolerance); the checks in between generate with eager blocks, and so does the model handed back."""
    from conftest import make_model

    from unlearnlm.config import LoraConfig
    from unlearnlm.generation import generate
    from unlearnlm.models import add_lora, repeated_blocks

    def run(compiled):
        model = add_lora(make_model(len(tokenizer)), LoraConfig(r=4, alpha=8), seed=0)
        during, graphs = [], []

        def monitor(m, step):
            during.append([b._compiled_call_impl is not None for b in repeated_blocks(m)])
            graphs.append(torch._dynamo.utils.counters["stats"]["unique_graphs"])
            generate(m, tokenizer, FORGET[:2], max_new_tokens=3, batch_size=2)
            return Check(step=step, flagged_rate=1.0 / (step + 1), normal_kl=0.0)

        _train(model, tokenizer, monitor, max_steps=4, eval_every=2, learning_rate=5e-2, compile=compiled)
        return model, during, graphs

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled, during, graphs = run(True)
    # the first two steps built the graphs; steps 3 and 4 switched the same compiled calls on again: no new graph
    assert graphs[0] >= 1 and graphs[1] == graphs[0] == torch._dynamo.utils.counters["stats"]["unique_graphs"]
    eager, _, _ = run(False)
    blocks = repeated_blocks(compiled)
    assert len(blocks) == compiled.config.num_hidden_layers
    assert during == [[False] * len(blocks)] * 2 and all(b._compiled_call_impl is None for b in blocks)
    params = dict(eager.named_parameters())
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in params.items())  # the adapters trained
    # Adam moved the weights by up to 0.2 in 4 steps; fused kernels round differently, by 1e-4 at most here
    assert all(torch.allclose(p, params[n], atol=5e-4) for n, p in compiled.named_parameters())


def test_compile_names_the_setting_when_a_model_has_no_blocks_to_compile():
    from unlearnlm.models import CompiledBlocks

    with pytest.raises(ConfigError, match="train.compile"):
        CompiledBlocks(torch.nn.Linear(2, 2))


def test_a_model_the_compiler_fails_on_gets_an_error_naming_the_setting(tiny_model, tokenizer):
    from unlearnlm.models import CompiledBlocks

    def broken(graph, example_inputs):
        raise RuntimeError("no C++ compiler found")

    torch._dynamo.reset()
    with pytest.raises(ConfigError, match=r"train.compile: torch.compile could not compile LlamaDecoderLayer.*no C"):
        with CompiledBlocks(tiny_model, backend=broken).active():
            tiny_model(torch.tensor([[1, 2, 3]]))
    assert tiny_model(torch.tensor([[1, 2, 3]])).logits.shape[1] == 3  # eager again
    torch._dynamo.reset()


def test_a_broken_collateral_bound_raises_the_keep_terms_for_every_step_after_it(tiny_model, tokenizer):
    """``train.normal_boost``: each check over ``max_over_refusal`` multiplies the scale the method's keep-the-rest
    terms get from then on; a check within the bound leaves it where it is."""
    from unlearnlm.methods.baselines import GradientAscent

    seen = []

    class Scaling(GradientAscent):
        scales_normal = True

        def step(self, model, reference, batch):
            seen.append(batch.get("normal_scale", 1.0))
            return super().step(model, reference, batch)

    refused = {2: 0.5, 4: 0.0, 6: 0.25, 8: 0.0}
    result = unlearn(tiny_model, tokenizer, Scaling(GradientAscent.Options()), forget=FORGET, normal=[],
                     train_cfg=TrainConfig(max_steps=8, batch_size=2, eval_every=2, patience=9, max_normal_kl=9.0,
                                           max_over_refusal=0.1, normal_boost=2.0),
                     data_cfg=DataConfig(), reference=Reference(tiny_model, copy_weights=False),
                     monitor=lambda m, step: Check(step, 0.9, 0.0, over_refusal=refused[step]),
                     initial_check=Check(0, 1.0, 0.0))
    assert seen == [1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 4.0, 4.0]
    assert result.boosted == [2, 6]


def test_without_a_broken_bound_the_boost_changes_nothing(tokenizer):
    from conftest import make_model

    def run(boost):
        model = make_model(len(tokenizer))
        refusal = FORGET[0].with_response("I can't help with that.")
        result = unlearn(model, tokenizer, create_method("distance_cluster"), forget=FORGET,
                         normal=[Dialogue("What is 2 plus 2?", "It is 4.")] * 2, expected=[refusal],
                         data_cfg=DataConfig(), reference=Reference(model, copy_weights=True),
                         train_cfg=TrainConfig(max_steps=4, batch_size=2, learning_rate=1e-2, eval_every=2,
                                               max_over_refusal=0.1, normal_boost=boost),
                         monitor=lambda m, step: Check(step, 0.9, 0.0, over_refusal=0.1),  # at the bound, not over
                         initial_check=Check(0, 1.0, 0.0))
        return result, {n: p.detach().clone() for n, p in model.named_parameters()}

    (plain, weights), (boosted, boosted_weights) = run(1.0), run(4.0)
    assert boosted.boosted == [] and boosted.history == plain.history
    assert all(torch.equal(boosted_weights[n], p) for n, p in weights.items())


def test_normal_boost_needs_a_method_that_scales_its_normal_terms(tiny_model, tokenizer):
    with pytest.raises(ConfigError, match="train.normal_boost: method 'gradient_ascent'"):
        _train(tiny_model, tokenizer, None, max_steps=2, normal_boost=2.0)
    with pytest.raises(ConfigError, match="train.normal_boost"):
        TrainConfig(normal_boost=0.5)


def test_a_checkpoint_keeps_the_boosted_scale():
    from unlearnlm.train import _Progress

    cfg = TrainConfig(max_over_refusal=0.1, normal_boost=1.5)
    progress = _Progress(best=Check(0, 1.0, 0.0), best_state={}, checks=[])
    progress.record(Check(10, 0.5, 0.0, over_refusal=0.3), dict, cfg)
    back = _Progress.from_state({**progress.state(), "seconds": 0.0})
    assert (back.normal_scale(cfg), back.boosted) == (progress.normal_scale(cfg), progress.boosted) == (1.5, [10])
