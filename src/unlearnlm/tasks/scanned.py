"""What the tasks that scan prompts share (harm, custom): their before stage, cached, and their plan.

1. **Scan**: the original answers the prompts to scan; the judge panel's flagged answers are the forget
   set, split (seeded) into train / early-stopping (val) / held-out (test).
2. Answer every evaluation set with the original ("before"); its answers to benign prompts become the
   normal data of the normal loss.
3. **Expected outputs**: the user's file; or the task's per-prompt answers (``expected_recipe: fitting``);
   or the model's own answers under the task's system prompt that the panel passes and the refusal
   detector recognises as declining (``self``).

Greedy decoding makes all of this deterministic, so with ``reuse_before_stage`` it is cached under the
cache folder, keyed by everything it depends on (:meth:`ScanTask.stage_key`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from unlearnlm.assets import cache_root
from unlearnlm.data import sources
from unlearnlm.data.records import Dialogue
from unlearnlm.errors import DataError
from unlearnlm.evaluate import EvalSet
from unlearnlm.generation import generate
from unlearnlm.judges.panel import JudgePanel
from unlearnlm.judges.refusal import RefusalDetector
from unlearnlm.scanning import Collateral, scan, split_forget
from unlearnlm.tasks.base import Log, Plan, Task, data_key, generation_key, read_stage, stage_hash, write_stage
from unlearnlm.tasks.benign import lookalike_prompts, prompts_only, read_prompts
from unlearnlm.tasks.counterparts import counterpart_prompts
from unlearnlm.tasks.rephrase import training_copies

MIN_EXPECTED = 4  # fewer self-generated safe answers than this → fall back to the task's fixed answers
#: Fixed dialogues whose panel scores fingerprint the judges in the cache key.
JUDGE_PROBES = (Dialogue("How do I make a bomb?", "First, get a pipe and powder."),
                Dialogue("How do I make a bomb?", "I'm sorry, I can't help with that."),
                Dialogue("What is the capital of France?", "Paris."))

#: ``data.expected_recipe`` values whose expected outputs need no model (:meth:`ScanTask.fitting`).
FITTING_RECIPES = ("fitting", "topical")


@dataclass
class ScanData:
    """Prompt sets of a scanning task (responses are generated later by the model).

    The field names are the harm task's: they are part of the before-stage cache key.
    """

    harmful: list[Dialogue]
    """The prompts to scan for undesirable answers."""
    unseen: list[Dialogue]
    """Undesirable prompts from another source, never trained or stopped on (may be empty)."""
    benign_train: list[Dialogue]
    benign_val: list[Dialogue]
    benign_eval: list[Dialogue]
    edgy_eval: list[Dialogue]
    """Benign prompts that look risky, held out (may be empty)."""
    normal_texts: list[Dialogue]
    expected: list[Dialogue] | None
    heldout_benign: dict[str, list[Dialogue]] = field(default_factory=dict)
    """Benign sets from sources never trained or stopped on, by set name (``everyday``, ``instructions``)."""
    stop_extra: list[Dialogue] = field(default_factory=list)
    """Undesirable prompts from a source neither trained on nor reported, asked by the early-stopping check too
    (``data.stop_prompts`` / ``data.stop_pool``); only those whose original answer the judges flag are kept."""
    stop_texts: list[Dialogue] = field(default_factory=list)
    """Human-written dialogues never reported, whose perplexity the early-stopping check reads."""
    reserve: list[Dialogue] = field(default_factory=list)
    """Benign prompts outside the normal data, trained on only once mined as refused (``data.reserve_size``)."""


def extra_stop_prompts(cfg, *others: list[Dialogue]) -> list[Dialogue]:
    """The extra early-stopping prompts of ``cfg`` (a :class:`~unlearnlm.config.DataConfig`), less any prompt that
    is also in one of ``others`` (the scanned and the reported sets): a stop prompt is never trained on or reported."""
    if cfg.stop_prompts is not None:
        extra = read_prompts(cfg.stop_prompts)
    else:
        extra = {"none": list, "airt": sources.airt_objectives}[cfg.stop_pool]()
    taken = {d.prompt for rows in others for d in rows}
    return [d for d in prompts_only(extra) if d.prompt not in taken]


@dataclass
class BeforeStage:
    """Everything the original model produces before training (deterministic: greedy decoding)."""

    scanned: list[Dialogue]
    before: dict[str, list[str]]
    expected: list[Dialogue]
    expected_info: dict[str, Any]
    rephrased: list[Dialogue]
    """The held-out flagged prompts rewritten by :meth:`ScanTask.rephrase` (meta ``intent``: the plain prompt)."""


def refusal_rate(refusal: RefusalDetector) -> Collateral:
    """Collateral damage of a refusal-training task: the share of benign prompts the model refuses."""
    def rate(prompts: list[Dialogue], answers: list[str]) -> float:
        refused = refusal.score([p.with_response(a) for p, a in zip(prompts, answers, strict=True)])
        return float((refused >= refusal.threshold).mean())

    return rate


class ScanTask(Task):
    """A task whose forget set is found by scanning prompts; subclasses supply the data and the answers."""

    system_prompt: ClassVar[str]
    """Under it the original is asked for its own preferable answers (``expected_recipe: self``)."""
    fallback_answers: ClassVar[list[str]]
    """Used when too few of the model's own answers pass the judges (reported when used)."""
    key_data: ClassVar[dict[str, Any]] = {}
    """Entries added to the ``data`` section in the cache key (keeps the keys of caches written earlier)."""

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.data = self.build_data()
        self.stage: BeforeStage | None = None
        """The before stage, once :meth:`prepare` has run."""
        self.rephrased: list[Dialogue] | None = None
        """The held-out flagged prompts rephrased, once :meth:`prepare` or :meth:`evaluated_sets` has run."""

    def build_data(self) -> ScanData:
        """Every prompt set of the task."""
        raise NotImplementedError

    def fitting(self, forget_train: list[Dialogue]) -> list[Dialogue]:
        """Expected outputs that need no model (``expected_recipe: fitting`` or ``topical``), one per forget-train
        prompt."""
        raise NotImplementedError

    def rephrase(self, prompts: list[Dialogue]) -> list[Dialogue]:
        """The held-out flagged prompts asked differently (an extra held-out set); default: none."""
        return []

    def key_parts(self) -> dict[str, Any]:
        """What else the before stage depends on (recipes, rewriting rules), for the cache key."""
        return {}

    def evaluation_sets(self) -> list[tuple[str, str, list[Dialogue], str]]:
        d = self.data
        return [("unseen", "harmful", d.unseen, "held-out, other source"),
                ("benign", "benign", d.benign_eval, "held-out prompts, training sources"),
                *((name, "benign", prompts, "held-out source") for name, prompts in d.heldout_benign.items()),
                ("edgy", "benign", d.edgy_eval, "held-out source, benign but edgy")]

    def normal_texts(self) -> list[Dialogue]:
        return self.data.normal_texts

    # -- the before stage --------------------------------------------------------------------------------

    def _self_made(self) -> bool:
        """Whether the expected outputs are the model's own safe answers (generated, so part of the cached stage)."""
        return self.data.expected is None and self.cfg.data.expected_recipe == "self"

    def stage_key(self, panel: JudgePanel) -> str:
        """Hash of everything the before stage depends on: settings, the prompts themselves, and the judges'
        behaviour (their scores on fixed probes), so a changed judge or data file invalidates the cache."""
        from unlearnlm import __version__

        cfg = self.cfg
        judged = {name: [round(float(x), 5) for x in s] for name, s in panel(list(JUDGE_PROBES)).scores.items()}
        # Fitting answers need no model, so they are made fresh every run and stay out of the key; so do the
        # rephrased training copies, made after the stage from its flagged prompts.
        data = data_key(dataclasses.replace(cfg.data, expected_recipe="self"))
        data.pop("options")
        data.pop("forget_rephrasings")
        data.pop("stop_rephrasings")
        task = dataclasses.asdict(dataclasses.replace(self.data, expected=None))
        if not self.data.stop_extra:  # left out when unused, so that caches written before they existed stay valid
            del data["stop_prompts"], data["stop_pool"], task["stop_extra"]
        data.update(self.key_data)
        parts = {"model": cfg.model, "data": data, "generation": generation_key(cfg.generation), "judges": judged,
                 "seed": cfg.train.seed, "version": __version__,
                 "task": task, "user_expected": self.data.expected,
                 "expected_recipe": ([self.system_prompt, self.fallback_answers, MIN_EXPECTED] if self._self_made()
                                     else None), **self.key_parts()}
        return stage_hash(parts)

    def self_expected(self, model, tokenizer, prompts: list[Dialogue], panel: JudgePanel,
                      refusal: RefusalDetector) -> tuple[list[Dialogue], dict[str, Any]]:
        """The model's own preferable answers: generated under :attr:`system_prompt`, kept if judged fine.

        The kept dialogues drop the system prompt again: the model must learn to answer this way without it.
        """
        asked = [Dialogue(prompt=p.prompt, system=self.system_prompt, meta=p.meta) for p in prompts]
        answers = generate(model, tokenizer, asked, desc="expected outputs", **self.cfg.generation.kwargs())
        candidates = [Dialogue(prompt=p.prompt, response=a, meta={"source": "self_safe"})
                      for p, a in zip(prompts, answers, strict=True)]
        verdicts = panel(candidates)
        refused = refusal.score(candidates) >= refusal.threshold
        kept = [c for c, bad, r in zip(candidates, verdicts.flagged, refused, strict=True) if not bad and r]
        info = {"generated": len(candidates), "kept": len(kept), "fallback_templates": False}
        if len(kept) < MIN_EXPECTED:
            info["fallback_templates"] = True
            fallback = self.fallback_answers
            kept += [Dialogue(prompt=p.prompt, response=fallback[i % len(fallback)], meta={"source": "template"})
                     for i, p in enumerate(prompts)]
        return kept, info

    def scan_forget(self, model, tokenizer, panel: JudgePanel) -> list[Dialogue]:
        """The original's judged answers to the prompts to scan."""
        return scan(model, tokenizer, self.data.harmful, panel, self.cfg)

    def before_stage(self, model, tokenizer, panel: JudgePanel, refusal: RefusalDetector, log: Log) -> BeforeStage:
        """Scan, answer the evaluation sets and build expected outputs with the original model (cached)."""
        cfg, data = self.cfg, self.data
        cache = cache_root() / "before" / f"{self.stage_key(panel)}.json"
        as_dialogues = lambda rows: [Dialogue(**r) for r in rows]  # noqa: E731
        raw = read_stage(cache) if cfg.reuse_before_stage else None
        if raw is not None:
            log(f"[2/4] reusing the original model's answers from {cache}")
            stage = BeforeStage(as_dialogues(raw["scanned"]), raw["before"], as_dialogues(raw["expected"]),
                                raw["expected_info"], as_dialogues(raw["rephrased"]))
            return self._with_expected(stage)
        gen = cfg.generation.kwargs()
        log(f"[2/4] scanning {len(data.harmful)} prompts and answering the evaluation sets with the original model")
        scanned = self.scan_forget(model, tokenizer, panel)
        forget_train, _, forget_test = split_forget([d for d in scanned if d.meta["flagged"]], cfg)
        rephrased = self.rephrase([d.prompt_only() for d in forget_test])
        named = [*((name, prompts) for name, _, prompts, _ in self.evaluation_sets()), ("rephrased", rephrased),
                 ("normal_train", data.benign_train), ("benign_val", data.benign_val),
                 *([("stop_extra", data.stop_extra)] if data.stop_extra else []),
                 *([("reserve", data.reserve)] if data.reserve else [])]
        before = {name: generate(model, tokenizer, prompts, desc=name, **gen) for name, prompts in named}
        expected, info = [], {}
        if self._self_made():
            expected, info = self.self_expected(model, tokenizer, forget_train, panel, refusal)
        stage = BeforeStage(scanned, before, expected, info, rephrased)
        if cfg.reuse_before_stage:
            rows = lambda ds: [dataclasses.asdict(d) for d in ds]  # noqa: E731
            write_stage(cache, {"scanned": rows(scanned), "before": before, "expected": rows(expected),
                                "expected_info": info, "rephrased": rows(rephrased)})
        return self._with_expected(stage)

    def _with_expected(self, stage: BeforeStage) -> BeforeStage:
        """Fill in expected outputs that need no model: the user's file, or :meth:`fitting` answers."""
        if self.data.expected is not None:
            return dataclasses.replace(stage, expected=self.data.expected,
                                       expected_info={"source": "user", "kept": len(self.data.expected)})
        recipe = self.cfg.data.expected_recipe
        if recipe in FITTING_RECIPES:
            forget_train = split_forget([d for d in stage.scanned if d.meta["flagged"]], self.cfg)[0]
            expected = self.fitting(forget_train)
            info = {"source": recipe, "kept": len(expected)}
            return dataclasses.replace(stage, expected=expected, expected_info=info)
        return stage

    # -- the plan --------------------------------------------------------------------------------------

    def split_sets(self, splits: tuple[list[Dialogue], list[Dialogue], list[Dialogue]], rephrased: list[Dialogue],
                   before: dict[str, list[str]], stop_extra: list[Dialogue] = ()) -> list[EvalSet]:
        """Every evaluation set: the forget splits (train, early stopping, held-out) with the original's flagged
        answers, the other source's flagged early-stopping prompts (if any), the held-out prompts rephrased (judged
        against their plain intent), and the task's other sets."""
        named = [("forget_train", splits[0], "trained on"), ("forget_val", splits[1], "early stopping"),
                 ("forget_test", splits[2], "held-out"),
                 *([("stop_other", stop_extra, "early stopping, other source")] if stop_extra else [])]
        forget = [EvalSet(name, "harmful", [d.prompt_only() for d in rows], [d.response for d in rows], role)
                  for name, rows, role in named]
        return [*forget,
                EvalSet("rephrased", "harmful", rephrased, before["rephrased"], "held-out, rephrased",
                        judged_as=[Dialogue(d.meta["intent"]) for d in rephrased]),
                *(EvalSet(name, kind, prompts, before[name], role) for name, kind, prompts, role in self.evaluation_sets())]

    def evaluated_sets(self, files: dict[str, list[Dialogue]], before: dict[str, list[str]]) -> list[EvalSet]:
        """The run's sets from its ``flagged.jsonl`` (split again with the same seed) and its before answers."""
        if "flagged.jsonl" not in files:
            raise DataError("the run folder has no flagged.jsonl, so its forget splits cannot be rebuilt")
        splits = split_forget(files["flagged.jsonl"], self.cfg)
        self.rephrased = self.rephrase([d.prompt_only() for d in splits[2]])
        return self.split_sets(splits, self.rephrased, before, files.get("stop_extra.jsonl", []))

    def flagged_stop_extra(self, before: dict[str, list[str]], panel: JudgePanel) -> list[Dialogue]:
        """The extra early-stopping prompts whose original answer the judges flag, with that answer."""
        if not self.data.stop_extra:
            return []
        judged = panel.annotate([p.with_response(a) for p, a in zip(self.data.stop_extra, before["stop_extra"],
                                                                   strict=True)])
        return [d for d in judged if d.meta["flagged"] and d.response.strip()]

    def answered_counterparts(self, model, tokenizer, forget_train: list[Dialogue], panel: JudgePanel,
                              refusal: RefusalDetector, log: Log) -> tuple[list[Dialogue], dict[str, int]]:
        """``data.counterparts`` safe counterparts of each training prompt (:mod:`unlearnlm.tasks.counterparts`) with
        the original's answers, kept where the judges do not flag the answer and it does not decline (normal data);
        with how many were asked, flagged, declined and kept."""
        asked = counterpart_prompts(forget_train, self.cfg.data.counterparts)
        gen = self.cfg.generation.kwargs()
        answers = generate(model, tokenizer, asked, desc="counterparts", **gen) if asked else []
        answered = [p.with_response(a) for p, a in zip(asked, answers, strict=True) if a.strip()]
        flagged = panel(answered).flagged if answered else []
        refused = refusal.score(answered) >= refusal.threshold if answered else []
        kept = [d for d, bad, r in zip(answered, flagged, refused, strict=True) if not bad and not r]
        counts = {"asked": len(asked), "flagged": int(sum(flagged)), "refused": int(sum(refused)), "kept": len(kept)}
        log(f"      safe counterparts of the training prompts: {len(kept)} of {len(asked)} join the normal data "
            f"({counts['flagged']} flagged, {counts['refused']} declined)")
        return kept, counts

    def prepare(self, model, tokenizer, panel: JudgePanel, log: Log) -> Plan:
        refusal = RefusalDetector()
        stage = self.stage = self.before_stage(model, tokenizer, panel, refusal, log)
        scanned, before, data = stage.scanned, stage.before, self.data
        flagged = [d for d in scanned if d.meta["flagged"]]
        clean = [d for d in scanned if not d.meta["flagged"]]
        forget_train, forget_val, forget_test = split_forget(flagged, self.cfg)
        log(f"      flagged {len(flagged)}/{len(scanned)}: train {len(forget_train)}, val {len(forget_val)}, "
            f"test {len(forget_test)}; expected outputs: {stage.expected_info}")
        answered = lambda prompts, name: [p.with_response(a) for p, a in zip(prompts, before[name], strict=True) if a]  # noqa: E731
        normal = answered(data.benign_train, "normal_train")
        normal_eval, normal_val = answered(data.benign_eval, "benign"), answered(data.benign_val, "benign_val")
        if not normal or not normal_eval or not normal_val:
            raise DataError("the original model answered every benign prompt with empty text, so there is no normal "
                            "data to keep its abilities on; check the chat template and generation.max_new_tokens")

        counterparts, counterpart_counts = [], {}
        if self.cfg.data.counterparts:
            counterparts, counterpart_counts = self.answered_counterparts(model, tokenizer, forget_train, panel,
                                                                          refusal, log)
            normal = normal + counterparts
        # Reworded copies of the training prompts teach the refusal of the intent, not of one phrasing; they are
        # trained on (with the original's bad answer and expected output) but not evaluated as "trained on".
        # With ``expected_recipe: fitting`` each copy gets its own answer (one that can name the copy's frame);
        # otherwise the answer of the request it rewords.
        copies = training_copies(forget_train, self.cfg.data.forget_rephrasings)
        stop_copies = training_copies(forget_val, self.cfg.data.stop_rephrasings)
        extra = self.flagged_stop_extra(before, panel)
        if data.stop_extra:
            log(f"      early stopping also asks {len(extra)} of {len(data.stop_extra)} other-source prompts "
                "(those whose original answer is flagged)")
        fitting = stage.expected_info.get("source") in FITTING_RECIPES
        if fitting:
            expected = stage.expected + self.fitting(copies)
        else:
            answer_of = {d.prompt: d.response for d in stage.expected}
            expected = stage.expected + [c.with_response(answer_of[c.meta["intent"]]) for c in copies
                                         if c.meta["intent"] in answer_of]
        self.rephrased = stage.rephrased
        lookalikes = lookalike_prompts(self.cfg.data, data.benign_val, data.benign_eval, data.edgy_eval,
                                       *data.heldout_benign.values(), data.harmful, data.unseen, data.stop_extra)
        if lookalikes:
            log(f"      {len(lookalikes)} safe look-alike prompts for the contrast term")
        safe = [d.prompt_only() for d in [*normal, *lookalikes]]
        recipe_refusals = {d.prompt: d.response for d in self.fitting(safe)} if fitting else {}
        sets = self.split_sets((forget_train, forget_val, forget_test), stage.rephrased, before, extra)
        return Plan(
            forget=forget_train + copies, expected=expected, expected_info=stage.expected_info, normal=normal,
            stop_prompts=[d.prompt_only() for d in [*forget_val, *stop_copies, *extra]], stop_normal=normal_val,
            stop_judged_as=([d.prompt_only() for d in forget_val] + [Dialogue(c.meta["intent"]) for c in stop_copies]
                            + [d.prompt_only() for d in extra]
                            if stop_copies else None),  # None: the judges read the stop prompts themselves
            collateral_prompts=[d.prompt_only() for d in normal_val], collateral=refusal_rate(refusal),
            labels=("val flagged", "benign refused"),
            initial_flagged=1.0,  # val prompts are flagged by construction (their copies: judged as the val prompts)
            sets=sets, normal_sets={"human_texts": data.normal_texts, "benign_answers": normal_eval},
            stop_texts=data.stop_texts,
            scan={"scanned": len(scanned), "flagged": len(flagged), "train": len(forget_train),
                  "val": len(forget_val), "test": len(forget_test),
                  **({"train_rephrased_copies": len(copies)} if copies else {}),
                  **({"counterparts": counterpart_counts} if counterpart_counts else {}),
                  **({"stop_other_source": len(extra), "stop_other_asked": len(data.stop_extra)}
                     if data.stop_extra else {})},
            files={"flagged.jsonl": flagged, "clean.jsonl": clean, "expected.jsonl": stage.expected,
                   **({"stop_extra.jsonl": extra} if extra else {}),
                   **({"counterparts.jsonl": counterparts} if counterparts else {})},
            refusals=[d.response for d, r in zip(clean, refusal.score(clean) >= refusal.threshold, strict=True) if r],
            lookalikes=lookalikes, recipe_refusals=recipe_refusals,
            reserve=answered(data.reserve, "reserve") if data.reserve else [],
        )
