"""Run output folder: atomic writes, library versions, and model saving that never loses data."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from peft import PeftModel
from torch import nn

from unlearnlm.errors import ConfigError

_LIBRARIES = ["unlearnlm", "torch", "transformers", "peft", "accelerate", "datasets", "scikit-learn", "numpy"]


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def write_rows(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """JSONL, one object a line, written atomically."""
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows))


def write_yaml(path: Path, data: Any) -> None:
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def prepare_output_dir(output_dir: str | Path, model_source: str, overwrite: bool) -> Path:
    """Create the run folder, refusing to reuse a previous run's folder or to touch the input model."""
    out = Path(output_dir).expanduser().resolve()
    source = Path(model_source).expanduser()
    if source.exists():
        source = source.resolve()
        if out == source or source in out.parents or out in source.parents:
            raise ConfigError(
                f"output_dir {out} overlaps the input model folder {source}; choose another output_dir "
                "(the input model is never overwritten)"
            )
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(
            f"output_dir {out} already holds files from an earlier run; pass --overwrite to replace them "
            "or choose another --output"
        )
    out.mkdir(parents=True, exist_ok=True)
    return out


@contextlib.contextmanager
def atomic_dir(target: Path, *, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary folder beside ``target`` that becomes ``target`` when the block succeeds.

    On failure the temporary folder is removed and any existing ``target`` is untouched. If ``target``
    exists on success it is swapped out (``replace``) or kept, discarding the new folder (a concurrent
    writer already produced it).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        if not target.exists():
            tmp.rename(target)
        elif replace:
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_model_atomically(model: nn.Module, tokenizer, target: Path, merge_lora: bool) -> Path:
    """Save (merged) weights as safetensors into a temp folder, then swap it into place.

    A failure mid-way leaves the previous ``target`` (if any) untouched and no half-written folder.
    """
    with atomic_dir(target) as tmp:
        to_save = model
        if merge_lora and isinstance(model, PeftModel):
            to_save = model.merge_and_unload()  # folds adapters into the base weights
        to_save.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return target
