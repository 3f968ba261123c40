"""A scanning task whose verdicts depend on the generated answers, for runs launched in processes of their own.

The launched processes cannot see a test's monkeypatching, so the task is named by its import path
(``data.task: answer_task:AnswerTask``, with ``tests/`` on ``PYTHONPATH``). It is the custom task with one change: the
judge reads the answer, so which prompts are flagged depends on every process's share of the generation and judging
coming back in the right order.
"""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np

from unlearnlm.judges.panel import JudgePanel
from unlearnlm.tasks.base import Plan
from unlearnlm.tasks.custom import CustomTask


class AnswerJudge:
    """Flags weapon prompts whose prompt and answer hash to an even number together: about half of them, and another
    half if an answer is swapped with another prompt's or changed by a single character."""

    name = "answer"
    threshold = 0.5

    def score(self, dialogues):
        return np.array([1.0 if "weapon" in d.prompt and zlib.crc32((d.prompt + d.response).encode()) % 2 == 0 else 0.0
                         for d in dialogues])


class AnswerTask(CustomTask):
    """The custom task judged by :class:`AnswerJudge`, whose stop rule keeps the weights of the last check.

    The start counts as worse than any check (flagged rate 2), so with one check, at the last step, every run hands
    back its trained weights: a run on two processes can then be told apart from one on a single process.
    """

    def panel(self) -> JudgePanel:
        return JudgePanel([AnswerJudge()])

    def prepare(self, model, tokenizer, panel: JudgePanel, log) -> Plan:
        return dataclasses.replace(super().prepare(model, tokenizer, panel, log), initial_flagged=2.0)
