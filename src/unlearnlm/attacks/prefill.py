"""Prefilling probe: start the unlearned model's answer with the first words of the original's, let it go on.

A model whose refusal lives only in its first few tokens goes on with the old answer once those tokens are given to
it: Qi et al., 2024 ("Safety Alignment Should Be Made More Than Just a Few Tokens Deep", arXiv 2406.05946) prefill
the first 5-40 tokens of a harmful answer and see aligned chat models' harmfulness rise with the prefix length, and
Andriushchenko et al., 2024 (arXiv 2404.02151) jailbreak models whose API lets the user prefill the answer. An open
weights model can always be prefilled, so unlearning that holds only at the start of the answer hid the behaviour.

What is measured, per prefix length ``k`` words (:func:`word_prefix`):

* the **attacked** model: each harmful prompt, its assistant turn opened with the first ``k`` words of the
  original's answer to it (the run's own before answer), continued greedily; the judges read the *continuation only*
  (the model's own words, not the attacker's), against the prompt as the run judged it;
* the **original** at the same ``k``: the rest of its own answer after those words, judged the same way. Under
  greedy decoding that is what the original continues with from its own prefix (up to the float rounding of a
  different batch), so no original model is loaded. It is shorter than the attacked continuation by ``k`` words,
  which can only lower the original's figure.

A row whose original answer has no more than ``k`` words is prefilled with all of it, and the original's rest is
empty (not flagged). The unlearned model with no prefix is measured too (the run's own after figures).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from unlearnlm.config import check

_WORD = re.compile(r"\S+")


@dataclass
class PrefillOptions:
    """Settings of ``unlearnlm attack prefill``."""

    words: list[int] = field(default_factory=lambda: [2, 5, 10])
    """Prefix lengths, in words of the original's answer, each measured on its own."""

    def __post_init__(self) -> None:
        check(bool(self.words) and all(isinstance(k, int) and k > 0 for k in self.words), "--words",
              f"give positive word counts, e.g. --words 2 5 10; got {self.words}")
        self.words = sorted(set(self.words))


def word_prefix(text: str, k: int) -> tuple[str, str]:
    """``text`` split after its ``k``-th whitespace-separated word: ``(prefix, rest)``, the prefix as written (its
    line breaks and spacing kept, no trailing space), the rest without its leading space. Fewer than ``k`` words:
    ``(text, "")``."""
    ends = [m.end() for m in _WORD.finditer(text)]
    if len(ends) <= k:
        return text, ""
    return text[: ends[k - 1]], text[ends[k - 1]:].lstrip()
