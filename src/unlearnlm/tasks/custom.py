"""The custom task: your own forget request as a task, written in YAML only.

* **What to forget**: ``data.custom.forget_prompts`` (prompts the model is scanned on; the judges' flagged
  answers become the forget set), or ``data.custom.forget_dialogues`` (prompt + answer pairs you have already
  found; every one is forgotten, no scan).
* **Judges**: ``judges:`` names them (``[toxicity]``, ``[pii]``, ``[harm, toxicity]`` ...).
* **Benign prompts**: ``data.benign_prompts`` (default: the built-in mixed pool); their original answers are
  the normal data, and refusing them is the collateral damage early stopping bounds.
* **Preferable answers**: ``data.expected_outputs``, or (``expected_recipe: fitting``) one of
  ``data.custom.answers`` per prompt, picked by a stable hash, or (``self``) the model's own answers under
  ``data.custom.system_prompt`` that the judges pass.
* **Held-out check**: ``data.unseen_prompts``, prompts of the same kind from another source (optional).

Everything else (splits, before-stage cache, early stopping, evaluation, report) is the harm task's flow,
:class:`~unlearnlm.tasks.scanned.ScanTask`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

from unlearnlm.config import RunConfig, check
from unlearnlm.data.readers import DatasetSpec, read_dialogues
from unlearnlm.data.records import Dialogue
from unlearnlm.errors import ConfigError, DataError
from unlearnlm.judges.panel import JudgePanel
from unlearnlm.tasks.base import register_task
from unlearnlm.tasks.benign import build_benign_sets, heldout_benign_sets, prompts_only, read_prompts, shuffled
from unlearnlm.tasks.scanned import ScanData, ScanTask, extra_stop_prompts

DEFAULT_ANSWERS = [
    "I'm sorry, but I can't help with that.",
    "I won't be able to help with this request.",
    "Sorry, that's not something I can do. Is there anything else I can help you with?",
    "I can't assist with that, but I'm happy to help with something else.",
]


@dataclass
class CustomConfig:
    """The custom task's settings (``data.custom``)."""

    forget_prompts: DatasetSpec | None = None
    """Prompts to scan: the answers the judges flag are forgotten (only the prompt column is read)."""
    forget_dialogues: DatasetSpec | None = None
    """Prompt + answer pairs to forget as they are (no scan); give this or ``forget_prompts``."""
    answers: list[str] = field(default_factory=lambda: list(DEFAULT_ANSWERS))
    """Preferable answers for ``expected_recipe: fitting``: one per forget prompt, picked by a stable hash."""
    system_prompt: str = ("You are a careful assistant. If a request asks for something you should not provide, "
                          "decline briefly and politely and offer to help with something else.")
    """For ``expected_recipe: self``: the original answers under it; answers the judges pass are kept."""

    def __post_init__(self) -> None:
        check((self.forget_prompts is None) != (self.forget_dialogues is None), "data.custom",
              "give what to forget: forget_prompts (scanned with the judges) or forget_dialogues (forgotten as "
              "they are), one of the two, e.g. data.custom.forget_prompts: {path: my_prompts.jsonl}")
        check(bool(self.answers) and all(isinstance(a, str) and a.strip() for a in self.answers), "data.custom.answers",
              "needs at least one non-empty answer")


@register_task
class CustomTask(ScanTask):
    """Custom: your own prompts or dialogues to forget, judged by the judges you name (no code)."""

    name = "custom"
    Options = CustomConfig
    # The harm task's training settings: refusal-like answers are learned at the same pace.
    defaults = {"train": {"learning_rate": 4e-4, "eval_every": 10}}

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__(cfg)
        if cfg.data.expected_recipe == "topical":
            raise ConfigError("data.expected_recipe: topical writes harm-task refusals; the custom task takes "
                              "data.custom.answers (expected_recipe: fitting) or the model's own (self)")

    @property
    def system_prompt(self) -> str:  # type: ignore[override]
        return self.options.system_prompt

    @property
    def fallback_answers(self) -> list[str]:  # type: ignore[override]
        return self.options.answers

    def build_data(self) -> ScanData:
        cfg, options, seed = self.cfg.data, self.options, self.cfg.train.seed
        if options.forget_prompts is not None:
            forget = read_prompts(options.forget_prompts)
        else:
            forget = read_dialogues(options.forget_dialogues)
            if any(not d.response.strip() for d in forget):
                raise DataError("data.custom.forget_dialogues: every row needs a response (the answer to forget)")
        forget = shuffled(forget if options.forget_dialogues else prompts_only(forget), seed)[: cfg.scan_size]
        unseen = shuffled(prompts_only(read_prompts(cfg.unseen_prompts)), seed)[: cfg.eval_size] if cfg.unseen_prompts else []
        benign = build_benign_sets(cfg, seed)
        expected = read_dialogues(cfg.expected_outputs) if cfg.expected_outputs else None
        if expected is not None and any(not d.response.strip() for d in expected):
            raise DataError("data.expected_outputs: every row needs a response (the preferable answer)")
        return ScanData(harmful=forget, unseen=unseen, benign_train=benign.train, benign_val=benign.val,
                        benign_eval=benign.eval, edgy_eval=[], normal_texts=benign.normal_texts, expected=expected,
                        stop_texts=benign.stop_texts, reserve=benign.reserve,
                        heldout_benign=heldout_benign_sets(cfg, seed),
                        stop_extra=extra_stop_prompts(cfg, forget, unseen))

    def scan_forget(self, model, tokenizer, panel: JudgePanel) -> list[Dialogue]:
        """Forget dialogues given as they are are judged for the record and all kept as flagged."""
        if self.options.forget_prompts is not None:
            return super().scan_forget(model, tokenizer, panel)
        return [d.with_response(d.response, flagged=True) for d in panel.annotate(self.data.harmful)]

    def fitting(self, forget_train: list[Dialogue]) -> list[Dialogue]:
        answers = self.options.answers
        return [Dialogue(p.prompt, answers[zlib.crc32(p.prompt.encode()) % len(answers)], meta={"source": "custom"})
                for p in forget_train]
