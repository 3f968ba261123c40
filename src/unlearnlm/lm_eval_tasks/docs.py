"""Loads ``truth_pairs.jsonl`` for ``unlearnlm_truth.yaml`` (its ``custom_dataset``).

lm_eval imports this file by path, next to the YAML; reading the JSONL relative to this file makes the task work
wherever the package is installed (a ``dataset_path: json`` task would need an absolute ``data_files`` path).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets


def load(**_: Any) -> datasets.DatasetDict:
    """The pairs as a one-split dataset; lm_eval passes the task metadata as keyword arguments, unused here."""
    path = Path(__file__).with_name("truth_pairs.jsonl")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
