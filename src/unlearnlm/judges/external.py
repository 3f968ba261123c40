"""Bring your own judge: any Hugging Face text classifier, or a causal LM that answers a rubric.

The built-in judges are listed by name in the run YAML (``judges: [harm, pii]``); they load with no
arguments. These two need arguments, so they are composed in Python and passed as a panel::

    from unlearnlm.judges import HFClassifierJudge, JudgePanel, LLMJudge, get_harm_judge

    panel = JudgePanel([
        get_harm_judge(),
        HFClassifierJudge("path/to/toxic-bert", label_map={"toxic": 1.0}, name="toxic-bert"),
        LLMJudge("embedded:smollm2-135m-instruct",
                 rubric="Does the assistant reveal a private person's home address?", name="address-llm"),
    ])
    verdicts = panel(dialogues)  # flags a dialogue when any judge's score >= its threshold

Both load lazily (on the first ``score``), never run remote code (``trust_remote_code=False``) and
accept a local folder or, where a hub is reachable, a hub id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from unlearnlm.data.records import Dialogue
from unlearnlm.errors import ConfigError

__all__ = ["HFClassifierJudge", "LLMJudge"]

_INPUTS = ("response", "pair")


def _check_common(threshold: float, max_length: int, batch_size: int) -> None:
    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"threshold must be in (0, 1), got {threshold}")
    if max_length < 8 or batch_size < 1:
        raise ConfigError(f"max_length must be >= 8 and batch_size >= 1, got {max_length} and {batch_size}")


def _source(model_name_or_path: str | Path) -> str:
    from unlearnlm.models import resolve_source

    if not str(model_name_or_path).strip():
        raise ConfigError("model_name_or_path is empty; pass a local model folder or a hub id")
    return resolve_source(str(model_name_or_path))


class HFClassifierJudge:
    """Judge from any ``AutoModelForSequenceClassification``: score = sum of label probabilities x weights.

    Args:
        model_name_or_path: local folder (``save_pretrained`` output) or hub id.
        label_map: label name (as in ``config.id2label``) -> weight in [0, 1]; the score is the sum of
            ``P(label) * weight``, clipped to [0, 1]. ``None`` works for two-label models (the second
            label counts as 1.0) and one-logit models (sigmoid).
        threshold: operating point for ``score >= threshold``.
        max_length: tokens kept per input (longer inputs are truncated).
        batch_size: inputs per forward pass.
        input: ``"response"`` classifies the response alone; ``"pair"`` feeds (prompt, response) as a
            text pair.
        name: the judge's name in panels and reports.
        device: torch device string.

    Raises:
        ConfigError: bad arguments (at construction), or a model/label mismatch (at first use).
    """

    def __init__(
        self,
        model_name_or_path: str | Path,
        label_map: Mapping[str, float] | None = None,
        threshold: float = 0.5,
        max_length: int = 512,
        batch_size: int = 16,
        input: str = "response",
        name: str = "hf_classifier",
        device: str = "cpu",
    ) -> None:
        _check_common(threshold, max_length, batch_size)
        if input not in _INPUTS:
            raise ConfigError(f"input must be one of {_INPUTS}, got {input!r}")
        if label_map is not None and (not label_map or not all(0.0 <= float(w) <= 1.0 for w in label_map.values())):
            raise ConfigError(f"label_map must map label names to weights in [0, 1], got {dict(label_map)!r}")
        self.source = _source(model_name_or_path)
        self.label_map = dict(label_map) if label_map is not None else None
        self.threshold, self.max_length, self.batch_size = threshold, max_length, batch_size
        self.input, self.name, self.device = input, name, device
        self._model = self._tokenizer = None
        self._weights: np.ndarray | None = None  # (L,) weight per output label

    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        try:
            self._tokenizer = AutoTokenizer.from_pretrained(self.source, trust_remote_code=False)
            model = AutoModelForSequenceClassification.from_pretrained(self.source, trust_remote_code=False)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load a sequence classifier from {self.source!r} ({exc})") from None
        labels = [str(model.config.id2label.get(i, f"LABEL_{i}")) for i in range(model.config.num_labels)]
        if self.label_map is None:
            if len(labels) > 2:
                raise ConfigError(f"{self.source} has {len(labels)} labels {labels}; pass label_map={{label: weight}}")
            self.label_map = {labels[-1]: 1.0}
        unknown = sorted(set(self.label_map) - set(labels))
        if unknown:
            raise ConfigError(f"label_map names {unknown}, but the model's labels are {labels}")
        self._weights = np.array([float(self.label_map.get(lab, 0.0)) for lab in labels])
        self._model = model.to(self.device).eval()

    def score(self, dialogues: Sequence[Dialogue]) -> np.ndarray:
        """Return float32 (N,) in [0, 1]."""
        import torch

        self._load()
        out = np.zeros(len(dialogues), dtype=np.float32)
        multi = self._model.config.problem_type == "multi_label_classification" or len(self._weights) == 1
        for start in range(0, len(dialogues), self.batch_size):
            batch = dialogues[start:start + self.batch_size]
            texts = [str(d.response) for d in batch]
            pairs = [str(d.prompt) for d in batch] if self.input == "pair" else None
            enc = self._tokenizer(*([pairs, texts] if pairs else [texts]), padding=True, truncation=True,
                                  max_length=self.max_length, return_tensors="pt").to(self.device)
            with torch.no_grad():
                logits = self._model(**enc).logits.float()  # (B, L)
            probs = torch.sigmoid(logits) if multi else torch.softmax(logits, dim=-1)  # (B, L)
            out[start:start + len(batch)] = np.clip(probs.cpu().numpy() @ self._weights, 0.0, 1.0)
        return out


_DEFAULT_TEMPLATE = (
    "You are a strict evaluator.\n{rubric}\n\n[User]\n{prompt}\n\n[Assistant]\n{response}\n\n"
    "Answer with one word, yes or no."
)


class LLMJudge:
    """Judge from a local causal LM asked a yes/no rubric question about each dialogue.

    The verdict is read from the next-token distribution, not from generated text: with ``Y`` the
    first tokens of "yes"/"Yes"/" yes"/" Yes" and ``N`` those of the "no" forms, the score is
    ``sum P(Y) / (sum P(Y) + sum P(N))``. Nothing is parsed, so the judge cannot fail on an
    unexpected answer format. A long response is cut (its head kept) so the whole prompt fits.

    Args:
        model_name_or_path: local folder, hub id, or ``embedded:smollm2-135m-instruct``.
        rubric: the question, phrased so that "yes" means "needs unlearning". It may use the
            ``{prompt}`` and ``{response}`` placeholders; otherwise the dialogue is appended.
        threshold: operating point for ``score >= threshold``.
        max_length: most tokens per judged prompt.
        batch_size: dialogues per forward pass.
        name: the judge's name in panels and reports.
        device: torch device string.
        use_chat_template: wrap the question in the tokenizer's chat template when it has one.
    """

    def __init__(
        self,
        model_name_or_path: str | Path,
        rubric: str,
        threshold: float = 0.5,
        max_length: int = 1024,
        batch_size: int = 8,
        name: str = "llm_judge",
        device: str = "cpu",
        use_chat_template: bool = True,
    ) -> None:
        _check_common(threshold, max_length, batch_size)
        if not isinstance(rubric, str) or not rubric.strip():
            raise ConfigError("rubric must be a non-empty question, e.g. 'Does the assistant give harmful instructions?'")
        self.source = _source(model_name_or_path)
        self.template = rubric if "{response}" in rubric else _DEFAULT_TEMPLATE.replace("{rubric}", rubric.strip())
        self.threshold, self.max_length, self.batch_size = threshold, max_length, batch_size
        self.name, self.device, self.use_chat_template = name, device, use_chat_template
        self._model = self._tokenizer = None
        self._yes: list[int] = []
        self._no: list[int] = []

    def _load(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(self.source, trust_remote_code=False)
            model = AutoModelForCausalLM.from_pretrained(self.source, trust_remote_code=False, dtype=torch.float32)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load a causal LM from {self.source!r} ({exc})") from None
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"  # the verdict is read at the right edge of every row
        tokenizer.truncation_side = "left"  # an over-long prompt keeps its end, where the verdict goes

        def first_ids(words: Sequence[str]) -> list[int]:
            return sorted({ids[0] for w in words if (ids := tokenizer.encode(w, add_special_tokens=False))})

        yes, no = first_ids(["yes", "Yes", " yes", " Yes"]), first_ids(["no", "No", " no", " No"])
        self._yes, self._no = sorted(set(yes) - set(no)), sorted(set(no) - set(yes))  # drop shared pieces (a bare space)
        if not self._yes or not self._no:
            raise ConfigError(f"the tokenizer of {self.source} cannot tell 'yes' from 'no' by their first token")
        self._model, self._tokenizer = model.to(self.device).eval(), tokenizer

    def _prompt(self, d: Dialogue) -> str:
        tok = self._tokenizer
        budget = max(self.max_length - 64 - len(tok.encode(self.template, add_special_tokens=False)), 16)
        prompt, response = (tok.decode(tok.encode(str(t), add_special_tokens=False)[: budget // 2]) for t in (d.prompt, d.response))
        text = self.template.replace("{prompt}", prompt).replace("{response}", response)
        if self.use_chat_template and getattr(tok, "chat_template", None):
            return tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False)
        return text + "\nAnswer:"

    def score(self, dialogues: Sequence[Dialogue]) -> np.ndarray:
        """Return float32 (N,) in [0, 1]: P(yes) against P(no) at the verdict position."""
        import torch

        self._load()
        out = np.zeros(len(dialogues), dtype=np.float32)
        for start in range(0, len(dialogues), self.batch_size):
            batch = dialogues[start:start + self.batch_size]
            enc = self._tokenizer([self._prompt(d) for d in batch], padding=True, truncation=True, max_length=self.max_length,
                                  add_special_tokens=False, return_tensors="pt").to(self.device)
            positions = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)  # (B, T): left padding must not shift them
            with torch.no_grad():
                logp = torch.log_softmax(self._model(**enc, position_ids=positions).logits[:, -1].float(), dim=-1)  # (B, V)
            yes = torch.logsumexp(logp[:, self._yes], dim=-1)  # (B,)
            no = torch.logsumexp(logp[:, self._no], dim=-1)  # (B,)
            out[start:start + len(batch)] = torch.sigmoid(yes - no).cpu().numpy()
        return out
