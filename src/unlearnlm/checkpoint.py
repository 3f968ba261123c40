"""Training checkpoints: what the loop needs to continue a killed run exactly where it stopped.

One file, ``checkpoint/state.pt`` in the run folder, replaced atomically (written beside it, then renamed over
it), so a run killed at any moment leaves the previous checkpoint or the new one, never a torn one. It holds the
trainable weights (LoRA adapters, or every weight under full fine-tuning) now and at the best check so far, the
optimizer, scheduler and fp16 loss-scaler state, the RNG states (python, numpy, torch, CUDA), the data streams'
positions, the loss history and the early-stopping checks. What comes before training is not saved: it is
deterministic and recomputed on resume (the before stage comes from its cache, ``reuse_before_stage``).

Under a launcher the main process writes the file alone; each process draws its own batch order, so the file keeps
every process's RNG states and data order (:func:`with_every_process`), and a resumed run needs as many processes.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unlearnlm import distributed
from unlearnlm.errors import ConfigError
from unlearnlm.outputs import atomic_file

STATE_FILE = "state.pt"
#: What differs between the processes of a launched run (each draws its own batch order), kept for each of them.
PER_PROCESS = ("rng", "stream_rng", "stream_order")
FORMAT = 1
"""Layout version: a checkpoint written with another layout is refused rather than misread."""


def rng_states() -> dict[str, Any]:
    """Every global random generator a training step may draw from (dropout, a method's sampling)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(), "numpy": (kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)),
            "torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_states(states: dict[str, Any]) -> None:
    """Put every generator back where :func:`rng_states` found it."""
    random.setstate(states["python"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    if states["cuda"]:
        torch.cuda.set_rng_state_all(states["cuda"])


def with_every_process(state: dict[str, Any]) -> dict[str, Any]:
    """This process's ``state`` plus, under a launcher, the other processes' own parts (:data:`PER_PROCESS`) under
    ``other_processes``; one process's state is returned as it is. Every process must call it (it gathers)."""
    shares = distributed.gather({name: state[name] for name in PER_PROCESS})
    return {**state, "other_processes": shares[1:]} if len(shares) > 1 else state


def for_process(state: dict[str, Any], index: int, count: int) -> dict[str, Any]:
    """The checkpoint as process ``index`` of ``count`` continues from it: with its own RNG states and data order."""
    others = state.get("other_processes", [])
    if len(others) + 1 != count:
        raise ConfigError(f"the checkpoint was written by {len(others) + 1} process(es) and this run has {count}: each "
                          f"process continues its own data order, so resume with --num_processes {len(others) + 1}")
    return state if index == 0 else {**state, **others[index - 1]}


def save(folder: Path, state: dict[str, Any]) -> None:
    """Write ``state`` as the folder's checkpoint, atomically."""
    with atomic_file(folder / STATE_FILE) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)


def load(folder: Path) -> dict[str, Any] | None:
    """The folder's checkpoint, or None when it has none (a run killed before its first checkpoint)."""
    path = folder / STATE_FILE
    if not path.is_file():
        return None
    again = f"start the run again: unlearnlm run {folder.parent}/config.yaml --output {folder.parent} --overwrite"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # weights_only: loading runs no code
    except Exception as exc:  # torch raises many types for a damaged file; every one means "unreadable"
        raise ConfigError(f"checkpoint {path} is damaged and cannot be read ({type(exc).__name__}); {again}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else None
        raise ConfigError(f"checkpoint {path} has layout {found}, not {FORMAT}: another version of unlearnlm wrote "
                          f"it; {again}")
    return state
