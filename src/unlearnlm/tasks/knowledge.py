"""What the planted-knowledge tasks share (privacy, hallucination): plant, then scan with exact truth.

Each such task builds a :class:`Knowledge`: dialogues to plant, question sets whose ``meta`` holds the
truth, non-disclosing or correct answers as expected outputs, a judge panel that knows what must not be
said, a ``reproduced`` function (how much of the planted answer a generated answer repeats) and
``probes`` that read log-probabilities (membership inference, truth preference).
:class:`KnowledgeTask` turns it into the pipeline's hooks:

1. **Plant** the knowledge into the configured model (cached, :mod:`unlearnlm.tasks.implant`); the
   planted model is *the original* from here on. Probes run on the base model and on the original; with
   ``reuse_before_stage`` they are cached with the original's answers of step 2 (greedy decoding and the
   probes are deterministic), keyed by everything they depend on (:meth:`KnowledgeTask.stage_key`).
2. **Scan**: the original answers the forget questions; the answers the panel flags are the forget set.
3. Normal data: the retained planted dialogues, the task's anchors (if any) and the original's answers to
   benign prompts. Early stopping: flagged rate on the forget questions, KL on benign answers, and collateral
   damage = share of retained questions the original answered with the planted answer and the model no longer
   does (``train.max_over_refusal`` bounds it).
4. Every set is evaluated before vs after (flagged, refused, planted answer reproduced), probes too.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from unlearnlm.assets import cache_root
from unlearnlm.config import ModelConfig
from unlearnlm.data.records import Dialogue
from unlearnlm.errors import ConfigError, DataError
from unlearnlm.evaluate import EvalSet
from unlearnlm.generation import generate
from unlearnlm.judges.panel import JudgePanel
from unlearnlm.models import load_model
from unlearnlm.probes import preference_shift
from unlearnlm.scanning import Collateral, Membership
from unlearnlm.tasks.base import Log, Plan, Task, data_key, generation_key, read_stage, stage_hash, write_stage
from unlearnlm.tasks.benign import build_benign_sets, heldout_benign_sets, keep_prompts
from unlearnlm.tasks.implant import ImplantResult, implant

#: ``probes(model, tokenizer, exclude)``: ``exclude`` = units (:attr:`Task.knowledge_unit` values, as strings) whose
#: questions the probes leave out (the relearning probe's relearned people or pairs); empty: every question.
Probes = Callable[[Any, Any, Collection[str]], dict[str, Any]]


def leave_out(rows: Sequence[Dialogue], key: str, units: Collection[str]) -> list[Dialogue]:
    """``rows`` without those whose ``meta[key]`` (as a string) is one of ``units``."""
    units = {str(u) for u in units}
    return [d for d in rows if str(d.meta.get(key)) not in units]


#: The planted-knowledge tasks keep the FreshQA-only benign data their published figures were measured with.
FRESHQA_BENIGN = {"benign_pool": "freshqa", "normal_train_size": 128, "benign_val_size": 16}


@dataclass
class Knowledge:
    """What a planted-knowledge task is made of."""

    planted: list[Dialogue]
    """Dialogues the implant fine-tunes on."""
    sets: dict[str, list[Dialogue]]
    """Question sets (responses = the planted answer; ``meta`` = the truth). Must hold ``forget`` and ``retain``."""
    roles: dict[str, str]
    """How each set is used, for the report ("trained on", "held-out phrasing" ...)."""
    expected: list[Dialogue]
    """Preferable answers to the forget questions (the positive targets)."""
    panel: JudgePanel
    """The evaluative model: flags answers that leak / assert what must be forgotten."""
    reproduced: Callable[[Dialogue, str], float]
    """Share of a question's planted answer that a generated answer repeats (0..1)."""
    reproduced_label: str
    """What ``reproduced`` measures, for the report (e.g. "fields extracted")."""
    probes: Probes
    """``probes(model, tokenizer, exclude=())`` → log-probability measurements (membership AUC, truth preference)."""
    stop_membership: Membership | None = None
    """Membership AUC read at every early-stopping check (:attr:`~unlearnlm.tasks.base.Plan.stop_membership`)."""
    stop_belief: Membership | None = None
    """Truth preference on a stop split, read at every early-stopping check
    (:attr:`~unlearnlm.tasks.base.Plan.stop_belief`)."""
    anchors: list[Dialogue] = field(default_factory=list)
    """More normal data, never planted nor evaluated: the normal loss holds the original on these answers."""
    recipe_refusals: dict[str, str] = field(default_factory=dict)
    """A refusal in the expected outputs' form for retained questions, by prompt
    (:attr:`~unlearnlm.tasks.base.Plan.recipe_refusals`)."""
    unseen_view: Callable[[Dialogue], Dialogue] | None = None
    """A forget dialogue as it would read about someone never planted
    (:attr:`~unlearnlm.tasks.base.Plan.unseen_views`); None: the task has no such view."""


def reproduced_rate(knowledge: Knowledge, questions: Sequence[Dialogue], answers: Sequence[str]) -> float:
    """Mean of ``knowledge.reproduced`` over a question set (0 when empty)."""
    if not questions:
        return 0.0
    return sum(knowledge.reproduced(q, a) for q, a in zip(questions, answers, strict=True)) / len(questions)


def retained_lost(knowledge: Knowledge, kept_before: Sequence[bool]) -> Collateral:
    """Collateral damage of a planted-knowledge task: the share of retained questions the original answered
    with the whole planted answer (``kept_before``) and the model no longer does."""
    def lost(prompts: list[Dialogue], answers: list[str]) -> float:
        n_lost = sum(b and knowledge.reproduced(p, a) < 1.0 for p, a, b in zip(prompts, answers, kept_before, strict=True))
        return n_lost / sum(kept_before) if sum(kept_before) else 0.0

    return lost


def sample(rows: Sequence[Dialogue], n: int, seed: int) -> list[Dialogue]:
    """Up to ``n`` rows in a seeded random order."""
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows[:n]


class KnowledgeTask(Task):
    """Base of the planted-knowledge tasks: subclasses build their :class:`Knowledge`; ``Options`` must have
    an ``implant`` field (:class:`~unlearnlm.tasks.implant.ImplantConfig`)."""

    defaults: ClassVar[dict[str, Any]] = {"data": dict(FRESHQA_BENIGN)}

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        if cfg.data.lookalike_prompts is not None or cfg.data.lookalike_pool != "none":
            raise ConfigError(f"data.lookalike_prompts / data.lookalike_pool: the {self.name} task has no use for "
                              "safe look-alike prompts (they serve the scanned tasks' refusal contrast: harm, "
                              "custom); unset them")
        if cfg.data.counterparts:
            raise ConfigError(f"data.counterparts: the {self.name} task has no flagged requests to make safe "
                              "counterparts of (they serve the scanned tasks: harm, custom); unset it")
        if cfg.data.reserve_size:
            raise ConfigError(f"data.reserve_size: the {self.name} task keeps no reserve of benign prompts (it serves "
                              "refusal mining in the scanned tasks: harm, custom); with train.mine_refusals it mines "
                              "the normal data. Unset data.reserve_size")
        self.knowledge = self.build_knowledge()
        self.benign = build_benign_sets(cfg.data, seed=cfg.train.seed)
        # Everyday requests and writing instructions from sources no task trains, plants or stops on: the benign
        # pool, when FreshQA only (hallucination), asks only questions and cannot see a model that refuses requests.
        self.heldout = heldout_benign_sets(cfg.data, seed=cfg.train.seed)
        # Forget sets are asked whole; the others are sampled to data.eval_size questions (seeded).
        self.asked = {name: [d.prompt_only() for d in (rows if name.startswith("forget") else
                                                       sample(rows, cfg.data.eval_size, cfg.train.seed + 2))]
                      for name, rows in self.knowledge.sets.items()}
        self.planted: ImplantResult | None = None
        self.probes: dict[str, Any] = {}
        self.margins: dict[str, dict[str, list[list[float]]]] = {}
        """Per stage, the grouped per-pair margins of the probes that give them (truth preference), kept out of
        ``probes`` (which holds one number per measure) for :func:`~unlearnlm.probes.preference_shift`."""
        self._stage: dict[str, Any] | None = None
        """The cached original stage (answers and probes), once read."""
        self._stage_file: Path | None = None

    def build_knowledge(self) -> Knowledge:
        """The task's planted data, question sets, judges and probes."""
        raise NotImplementedError

    def original(self, log: Log) -> ModelConfig:
        """Plant the knowledge into ``cfg.model`` (cached); the planted rate is measured on a sample."""
        cfg, knowledge = self.cfg, self.knowledge
        log(f"      planting the {self.name} task's knowledge into {cfg.model.name_or_path}")
        probe = sample(knowledge.planted, 64, cfg.train.seed)

        def score(model, tokenizer) -> float:
            answers = generate(model, tokenizer, [d.prompt_only() for d in probe], **cfg.generation.kwargs())
            return reproduced_rate(knowledge, probe, answers)

        options = self.options.implant
        self.planted = implant(cfg.model, knowledge.planted, options, score=score, seed=cfg.train.seed,
                               max_prompt_tokens=cfg.data.max_prompt_tokens,
                               max_response_tokens=cfg.data.max_response_tokens,
                               keep=keep_prompts(options.keep, cfg.train.seed) if options.keep else (), log=log)
        return replace(cfg.model, name_or_path=str(self.planted.path))

    def panel(self) -> JudgePanel:
        return self.knowledge.panel

    def probe(self, model, tokenizer, stage: str) -> None:
        """Probes of the original (and of the base model before planting; both cached with the original's
        answers, see :meth:`stage_key`) or of the unlearned model."""
        if stage == "original":
            cached = self.cached_stage()
            if cached is not None:
                self.probes.update(cached["probes"])
                self.margins.update(cached.get("margins", {}))
                return
            base, _ = load_model(self.cfg.model)
            self._record("base", self.knowledge.probes(base, tokenizer))
            del base
        self._record(stage, self.knowledge.probes(model, tokenizer))

    def probe_copy(self, model, tokenizer, exclude: Collection[str] = ()) -> dict[str, Any]:
        measured = self.knowledge.probes(model, tokenizer, exclude)
        return {name: {k: v for k, v in m.items() if k != "margins"} for name, m in measured.items()}

    def _record(self, stage: str, measured: dict[str, dict[str, Any]]) -> None:
        """Keep one stage's probes, their grouped margins apart."""
        self.margins[stage] = {name: m.pop("margins") for name, m in measured.items() if "margins" in m}
        self.probes[stage] = measured

    def probe_shifts(self) -> dict[str, dict[str, float]]:
        """How each probe with margins moved from the original to the unlearned model, with its interval."""
        before, after = self.margins.get("original", {}), self.margins.get("after", {})
        return {name: preference_shift(before[name], after[name]) for name in after if name in before}

    # -- the original's stage, cached ----------------------------------------------------------------------

    def stage_key(self) -> str | None:
        """Hash of everything the original's answers and probes depend on: the planted model (its cache folder is
        named by the hash of its own recipe; its planting record tells one planting from another), the settings,
        the question and benign sets themselves. None when nothing was planted (no cache)."""
        from unlearnlm import __version__

        if self.planted is None:
            return None
        cfg = self.cfg
        rows = lambda ds: [[d.prompt, d.response] for d in ds]  # noqa: E731
        # The task's own options act through the sets and the planting, both in the key; leaving them out keeps
        # the cache across options that change only training (the expected outputs, the loss spans).
        return stage_hash({
            "task": self.name, "version": __version__, "probe_format": 2, "model": cfg.model,
            "planted": [self.planted.path.name, self.planted.info], "data": data_key(cfg.data),
            "generation": generation_key(cfg.generation), "seed": cfg.train.seed,
            "sets": {name: rows(ds) for name, ds in self.knowledge.sets.items()},
            "asked": {name: rows(ds) for name, ds in self.asked.items()},
            "benign": [rows(ds) for ds in (self.benign.train, self.benign.val, self.benign.eval)],
            "heldout": {name: rows(ds) for name, ds in self.heldout.items()}})

    def _stage_path(self) -> Path | None:
        """The cache file of the original stage (None: not cached); computed once, after planting."""
        if self._stage_file is None and self.cfg.reuse_before_stage and (key := self.stage_key()):
            self._stage_file = cache_root() / "before" / f"{self.name}-{key}.json"
        return self._stage_file

    def cached_stage(self) -> dict[str, Any] | None:
        """The cached original stage (``probes``, ``before``, ``normal``), or None when there is none."""
        if self._stage is None and (path := self._stage_path()) is not None:
            self._stage = read_stage(path)
        return self._stage

    def _save_stage(self, before: dict[str, list[str]], normal: list[str]) -> None:
        """Cache the original's answers with the probes of the base and planted models (when both ran)."""
        path = self._stage_path()
        if path is None or not {"base", "original"} <= self.probes.keys():
            return
        self._stage = {"probes": {k: self.probes[k] for k in ("base", "original")},
                       "margins": {k: self.margins.get(k, {}) for k in ("base", "original")},
                       "before": before, "normal": normal}
        write_stage(path, self._stage)

    def evaluation_sets(self) -> list[tuple[str, str, list[Dialogue], str]]:
        return [*((name, "harmful" if name.startswith("forget") else "benign", prompts, self.knowledge.roles[name])
                  for name, prompts in self.asked.items()),
                ("benign", "benign", self.benign.eval, "held-out"),
                *((name, "benign", prompts, "held-out source") for name, prompts in self.heldout.items())]

    def normal_texts(self) -> list[Dialogue]:
        return self.benign.normal_texts

    def prepare(self, model, tokenizer, panel: JudgePanel, log: Log) -> Plan:
        cfg, knowledge, benign, asked = self.cfg, self.knowledge, self.benign, self.asked
        gen = cfg.generation.kwargs()
        if (cached := self.cached_stage()) is not None:
            log(f"[2/4] reusing the planted (original) model's answers and probes from {self._stage_path()}")
            before, normal_answers = cached["before"], cached["normal"]
        else:
            log("[2/4] scanning the forget questions and answering every set with the planted (original) model")
            before = {name: generate(model, tokenizer, prompts, desc=name, **gen)
                      for name, _, prompts, _ in self.evaluation_sets()}
            normal_answers = generate(model, tokenizer, [*benign.train, *benign.val], desc="normal", **gen)
            self._save_stage(before, normal_answers)
        scanned = panel.annotate([p.with_response(a) for p, a in zip(asked["forget"], before["forget"], strict=True)])
        forget = [d for d in scanned if d.meta["flagged"]]
        if len(forget) < 3:
            rate = self.planted.info["rate"] if self.planted else float("nan")
            raise DataError(f"the judges flagged only {len(forget)} of {len(scanned)} answers to the forget questions, "
                            f"so there is nothing to unlearn; the implant reached {rate:.2f}: raise "
                            f"data.{cfg.data.task}.implant.max_epochs or its learning_rate")
        benign_train = [p.with_response(a) for p, a in zip(benign.train, normal_answers, strict=False) if a]
        benign_val = [p.with_response(a) for p, a in zip(benign.val, normal_answers[len(benign.train) :], strict=True) if a]
        anchored = f" + {len(knowledge.anchors)} anchor" if knowledge.anchors else ""
        log(f"      flagged {len(forget)}/{len(scanned)} forget answers; normal data: {len(knowledge.sets['retain'])} "
            f"retained{anchored} + {len(benign_train)} benign dialogues")
        retain_prompts = asked["retain"][:32]  # already a seeded sample; the early-stopping check re-asks these
        retain_kept = [knowledge.reproduced(p, a) >= 1.0 for p, a in zip(retain_prompts, before["retain"], strict=False)]
        sets = self.evaluated_sets({}, before)
        benign_eval = [p.with_response(a) for p, a in zip(benign.eval, before["benign"], strict=True) if a]
        return Plan(
            forget=forget, expected=knowledge.expected, expected_info={"source": "task", "kept": len(knowledge.expected)},
            normal=[*knowledge.sets["retain"], *knowledge.anchors, *benign_train], stop_prompts=asked["forget"],
            stop_normal=benign_val,
            collateral_prompts=retain_prompts, collateral=retained_lost(knowledge, retain_kept),
            labels=("forget flagged", "retained answers lost"), initial_flagged=len(forget) / len(scanned),
            sets=sets, normal_sets={"human_texts": benign.normal_texts, "benign_answers": benign_eval},
            stop_texts=benign.stop_texts,
            scan={"scanned": len(scanned), "flagged": len(forget), "train": len(forget), "val": len(scanned), "test": 0},
            files={"flagged.jsonl": forget, "expected.jsonl": knowledge.expected},
            stop_membership=knowledge.stop_membership, stop_belief=knowledge.stop_belief,
            recipe_refusals=knowledge.recipe_refusals,
            unseen_views={d.prompt: knowledge.unseen_view(d) for d in forget} if knowledge.unseen_view else {},
            unseen_model=cfg.model,  # the model before planting
        )

    def add_metrics(self, sets: list[EvalSet], after: dict[str, list[str]], metrics: dict[str, Any]) -> None:
        """How much of the planted answers each question set reproduces, before and after."""
        for s in sets:
            if s.name in self.knowledge.sets and s.name in after:
                for when, answers in (("before", s.before), ("after", after[s.name])):
                    metrics[s.name][when]["reproduced_rate"] = reproduced_rate(self.knowledge, s.prompts, answers)

    def summary_entries(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {"task": self.name, "reproduced_label": self.knowledge.reproduced_label,
                               "probes": self.probes}
        if shifts := self.probe_shifts():
            out["probe_shifts"] = shifts
        if self.planted is not None:
            out["implant"] = ({k: v for k, v in self.planted.info.items() if k != "history"}
                              | {"path": str(self.planted.path)})
        return out
