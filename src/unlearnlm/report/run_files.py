"""Read what a finished run (or evaluation) wrote: the inputs of every report."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from unlearnlm.errors import DataError


@dataclass
class RunFiles:
    """A run folder's figures, per-example rows, loss history and resolved config."""

    folder: Path
    summary: dict[str, Any]
    """``metrics.json``."""
    rows: list[dict[str, Any]]
    """``examples.jsonl``: one row per evaluated prompt."""
    history: list[dict[str, Any]]
    """``history.jsonl``: every loss term at every step (empty for an evaluation folder)."""
    config: dict[str, Any]
    """``config.yaml`` as a dict (empty when the folder has none)."""

    @property
    def name(self) -> str:
        return self.folder.name


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a broken line is an error naming the file and line."""
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}, line {i}: invalid JSON ({exc})") from None
    return rows


def read_run(folder: str | Path) -> RunFiles:
    """Read a run folder written by ``unlearnlm run`` or ``unlearnlm evaluate``.

    Raises:
        DataError: the folder has no ``metrics.json`` or ``examples.jsonl`` (not a finished run).
    """
    folder = Path(folder).expanduser()
    missing = [name for name in ("metrics.json", "examples.jsonl") if not (folder / name).is_file()]
    if missing:
        raise DataError(f"{folder} is not a finished run folder: {', '.join(missing)} missing "
                        "(point at the --output folder of `unlearnlm run` or `unlearnlm evaluate`)")
    history = folder / "history.jsonl"
    config = folder / "config.yaml"
    return RunFiles(
        folder=folder,
        summary=json.loads((folder / "metrics.json").read_text(encoding="utf-8")),
        rows=read_jsonl(folder / "examples.jsonl"),
        history=read_jsonl(history) if history.is_file() else [],
        config=(yaml.safe_load(config.read_text(encoding="utf-8")) or {}) if config.is_file() else {},
    )
