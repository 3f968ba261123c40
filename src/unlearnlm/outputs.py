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

_LIBRARIES = ["unlearnlm", "torch", "transformers", "peft", "accelerate", "datasets", "scikit-learn", "numpy", "lm_eval"]


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds it replaces ``path`` in one rename.

    A reader (or a run resumed after a kill) sees the old file or the whole new one, never a part; on failure the
    temporary file is removed and ``path`` is untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and an atomic rename."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


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


#: Written last: a run folder holding it has finished.
FINISHED_MARKER = "metrics.json"
#: Where training writes its checkpoint (:mod:`unlearnlm.checkpoint`); removed when the run finishes.
CHECKPOINT_DIR = "checkpoint"
#: Written first, before any heavy work: a folder holding it and no finished marker stopped early.
CONFIG_FILE = "config.yaml"
#: A trained run's checks, for a run that is not evaluated (``TrainedRun.discard``; ``compare_methods.py`` tries).
TRAINING_FILE = "training.json"
#: What ``--overwrite`` removes before a new run starts: the results and the training state of the earlier one.
EARLIER_RESULTS = (FINISHED_MARKER, "model", CHECKPOINT_DIR)


def _check_overlap(out: Path, model_source: str) -> None:
    source = Path(model_source).expanduser()
    if source.exists():
        source = source.resolve()
        if out == source or source in out.parents or out in source.parents:
            raise ConfigError(
                f"output_dir {out} overlaps the input model folder {source}; choose another output_dir "
                "(the input model is never overwritten)"
            )


def _check_writable(out: Path) -> None:
    """Create ``out`` and write a probe file into it, so a read-only place fails now, not after training."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output_dir {out} is a file, not a folder; choose a folder path for --output")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise ConfigError(f"output_dir {out} is not writable ({exc.strerror}); choose a folder you can write to "
                          "with --output") from None


def _earlier_run(out: Path, overwrite: bool) -> None:
    """Refuse a folder that holds a finished or resumable run, or other files, unless ``overwrite``.

    A folder holding only what a run writes before training (its config, the scan's files) belongs to a run that
    stopped early (bad data, a model that does not load, a diverged loss without a checkpoint) and is reused, so the
    corrected command needs no ``--overwrite``.
    """
    if not out.is_dir() or overwrite:
        return
    names = {p.name for p in out.iterdir() if not p.name.startswith(".")}  # dot files: temp files of atomic writes
    if FINISHED_MARKER in names:
        raise ConfigError(f"output_dir {out} holds a finished run ({FINISHED_MARKER}); pass --overwrite to replace "
                          "it or choose another --output")
    if CHECKPOINT_DIR in names:
        raise ConfigError(f"output_dir {out} holds an interrupted run with a checkpoint; continue it with "
                          f"`unlearnlm run --resume {out}`, or pass --overwrite to start again")
    if names and CONFIG_FILE not in names:
        raise ConfigError(f"output_dir {out} already holds files that are not a run's ({sorted(names)[:5]}); choose "
                          "an empty or new folder with --output, or pass --overwrite to write into it")


def prepare_output_dir(output_dir: str | Path, model_source: str, overwrite: bool) -> Path:
    """Create the run folder, refusing to reuse a previous run's folder or to touch the input model.

    With ``overwrite`` the earlier run's results and checkpoint are removed first, so the folder never mixes a
    finished run's ``metrics.json`` with a new run's files, and ``--resume`` never picks up an older run's state.
    """
    out = Path(output_dir).expanduser().resolve()
    _check_overlap(out, model_source)
    _earlier_run(out, overwrite)
    _check_writable(out)
    if overwrite:
        for name in EARLIER_RESULTS:
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    return out


def resume_output_dir(output_dir: str | Path) -> Path:
    """The folder of a run to continue: it must hold the run's config and must not have finished."""
    out = Path(output_dir).expanduser().resolve()
    if not (out / CONFIG_FILE).is_file():
        raise ConfigError(f"--resume {out}: no {CONFIG_FILE} there, so it is not the folder of a run; give the "
                          "--output folder of the run to continue")
    if (out / FINISHED_MARKER).exists():
        raise ConfigError(f"--resume {out}: that run has finished ({FINISHED_MARKER}); nothing to continue")
    _check_writable(out)
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
