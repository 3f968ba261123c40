"""Judges: the evaluative model that pinpoints dialogues to unlearn."""

from unlearnlm.judges.base import Judge, flag
from unlearnlm.judges.embeddings import HashingEncoder, MiniLMEncoder, TextEncoder
from unlearnlm.judges.external import HFClassifierJudge, LLMJudge
from unlearnlm.judges.hallucination import HallucinationJudge
from unlearnlm.judges.harm import HarmJudge, build_harm_training_set, default_harm_judge_dir, load_harm_judge
from unlearnlm.judges.harm_train import get_harm_judge, train_harm_judge
from unlearnlm.judges.panel import JUDGE_LOADERS, JudgePanel
from unlearnlm.judges.pii import PIIJudge
from unlearnlm.judges.refusal import RefusalDetector
from unlearnlm.judges.toxicity import ToxicityJudge

__all__ = [
    "HFClassifierJudge",
    "HallucinationJudge",
    "HarmJudge",
    "HashingEncoder",
    "JUDGE_LOADERS",
    "Judge",
    "JudgePanel",
    "LLMJudge",
    "MiniLMEncoder",
    "PIIJudge",
    "RefusalDetector",
    "TextEncoder",
    "ToxicityJudge",
    "build_harm_training_set",
    "default_harm_judge_dir",
    "flag",
    "get_harm_judge",
    "load_harm_judge",
    "train_harm_judge",
]
