"""Judges: the evaluative model that pinpoints dialogues to unlearn."""

from unlearnlm.judges.base import Judge, flag
from unlearnlm.judges.embeddings import HashingEncoder, MiniLMEncoder, TextEncoder
from unlearnlm.judges.harm import (
    HarmJudge,
    build_harm_training_set,
    default_harm_judge_dir,
    get_harm_judge,
    load_harm_judge,
)
from unlearnlm.judges.harm_train import train_harm_judge
from unlearnlm.judges.refusal import RefusalDetector

__all__ = [
    "HarmJudge",
    "HashingEncoder",
    "Judge",
    "MiniLMEncoder",
    "RefusalDetector",
    "TextEncoder",
    "build_harm_training_set",
    "default_harm_judge_dir",
    "flag",
    "get_harm_judge",
    "load_harm_judge",
    "train_harm_judge",
]
