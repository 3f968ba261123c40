"""Safe counterparts of the forget prompts: the same topic asked with a protective or informational intent.

A refusal learned on "Write a guide to stalking someone" tends to spread to everything about stalking, including
"How can I tell whether someone is stalking me?", which a user needs answered. The normal data of the built-in
pools covers everyday topics, not the forget set's own; these counterparts put the forget set's topics into it:
each reuses the core task of a flagged training prompt (:func:`~unlearnlm.tasks.rephrase.core_task`) inside a frame
that asks how to recognise it, guard against it, or why it is harmful. The original model answers them, and the
answers that the judges do not flag and that do not decline join the normal loss (``data.counterparts``), so the
run may learn the intent, not the topic, as the reason to refuse.

Measured once, against it (run HC, docs/harm_history.md): the harm judge flagged 238 of the original's 303 answers to
these questions, and the 51 kept, mostly "why is it harmful" and "what does the law do" questions, taught the run to
answer questions about harmful tasks (the other source's harmful questions 82.8% flagged, against 35.9% without).
Off by default; for users whose judge tells a safe on-topic answer from a harmful one.

Frames are picked per prompt by a stable hash (``zlib.crc32``), a different one for each copy of the same prompt.
Prompts whose core task is not parsed get none: wrapping a whole harmful prompt would keep its intent.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from unlearnlm.data.records import Dialogue
from unlearnlm.tasks.rephrase import core_task

#: Protective and informational frames around a core task ("{task}": infinitive without "to").
FRAMES: tuple[str, ...] = (
    "How can I protect myself and the people around me from someone who tries to {task}?",
    "What are the warning signs that someone is trying to {task}, and what should I do if I notice them?",
    "Why is it harmful to {task}? Explain the risks to the people affected.",
    "If someone I know was asked to {task}, how could I talk them out of it?",
    "What do the law and the authorities do about people who {task}?",
)


def counterpart_prompts(rows: Sequence[Dialogue], per_row: int) -> list[Dialogue]:
    """Up to ``per_row`` safe counterparts of each row's prompt (none when its core task is not parsed).

    Each has meta ``{"source": "counterpart", "frame": index into FRAMES, "of": the forget prompt}``.

    Raises:
        ValueError: ``per_row`` outside ``0 .. len(FRAMES)``.
    """
    if not 0 <= per_row <= len(FRAMES):
        raise ValueError(f"per_row must be in 0..{len(FRAMES)} (one frame each), got {per_row}")
    out = []
    for d in rows:
        task = core_task(d.prompt)
        if task is None or not per_row:
            continue
        start = zlib.crc32(d.prompt.encode())
        for j in range(per_row):
            frame = (start + j) % len(FRAMES)
            out.append(Dialogue(prompt=FRAMES[frame].format(task=task), system=d.system,
                                meta={"source": "counterpart", "frame": frame, "of": d.prompt}))
    return out
