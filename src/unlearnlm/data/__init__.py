"""Dialogue records, readers and chat formatting."""

from unlearnlm.data.readers import DatasetSpec, read_csv, read_dialogues, read_jsonl, write_jsonl
from unlearnlm.data.records import Dialogue

__all__ = ["DatasetSpec", "Dialogue", "read_csv", "read_dialogues", "read_jsonl", "write_jsonl"]
