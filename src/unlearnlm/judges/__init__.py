"""Judges: the evaluative model that pinpoints dialogues to unlearn."""

from unlearnlm.judges.base import Judge, flag

__all__ = ["Judge", "flag"]
