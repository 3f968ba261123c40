"""Dialogue records, readers and chat formatting."""

from unlearnlm.data.records import Dialogue

__all__ = ["Dialogue"]
