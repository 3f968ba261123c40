"""Several processes running one ``unlearnlm run`` (``accelerate launch``, ``torchrun``): who does what.

Under a launcher every process runs the whole pipeline, in step with the others. These helpers make that useful
and safe:

* generation and judging share their work out and gather it back in order (:func:`map_shared`), so every process
  holds the same full lists and takes the same decisions from them;
* files are written by the main process alone (:func:`on_main`); the others wait for it and get its result, or its
  error, so a failed write stops every process instead of leaving the others waiting forever;
* what must agree across processes does: the early-stopping check is the main process's (:func:`from_main`), a
  training step's logged losses are the mean over processes (:func:`mean_over_processes`);
* training is DDP through the one :class:`~accelerate.Accelerator` state of the process (:func:`accelerator`).

Without a launcher (one process) no process group is made and every helper is a plain call, so a single-process run
computes exactly what it computed before these helpers existed.

The rule for callers: a helper that communicates must be reached by every process, in the same order. Code that only
the main process runs (the function given to :func:`on_main`) must not call one; if it does, it raises rather than
waits forever.
"""

from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # torch and accelerate load on first use: a judge-only command never needs them
    from accelerate import Accelerator, PartialState

T = TypeVar("T")
R = TypeVar("R")

#: Environment variables in which launchers (torchrun, accelerate, MPI) give the number of processes.
_WORLD_SIZE_VARS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
_main_only = False
"""True while :func:`on_main` runs its function on the main process: no other process is listening then."""


def launched() -> bool:
    """Whether this process is one of several: a launcher's environment, or a process group the caller made."""
    torch = sys.modules.get("torch")  # not imported yet: then no process group can exist either
    if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size() > 1
    return any(int(os.environ.get(name, "1")) > 1 for name in _WORLD_SIZE_VARS)


def _has_gpu() -> bool:
    import torch

    accel = getattr(torch, "accelerator", None)  # torch >= 2.6: CUDA, XPU ... alike
    if accel is None:
        return torch.cuda.is_available()
    return bool(accel.is_available()) and accel.current_accelerator().type != "mps"  # MPS has no process groups


def process_state() -> PartialState:
    """accelerate's state of this process, which makes the process group on first use.

    On a machine without a GPU the group is made on the CPU (gloo): accelerate itself would fall back to one process
    there unless ``ACCELERATE_USE_CPU`` is set, and then every process would run the whole pipeline alone.
    """
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not _has_gpu())


def num_processes() -> int:
    return process_state().num_processes if launched() else 1


def process_index() -> int:
    return process_state().process_index if launched() else 0


def is_main() -> bool:
    """Whether this process writes the files and prints the progress (the only process when not launched)."""
    return process_index() == 0


def _communicating(what: str) -> bool:
    """Whether ``what`` has to talk to the other processes; raises where they are not listening."""
    if num_processes() == 1:
        return False
    if _main_only:
        raise RuntimeError(f"{what} needs every process, but it was called from code that only the main process "
                           "runs (inside distributed.on_main); call it before or after that block")
    return True


def map_shared(fn: Callable[[list[T]], list[R]], items: Sequence[T]) -> list[R]:
    """``fn(items)`` with the work shared out: process r computes items r, r + N, r + 2N ... of N processes, and
    every process gets every result, in the order of ``items``.

    ``fn`` maps a list to one result per item and is called once per process (not at all on a process with no
    share). Strided rather than contiguous shares: callers pass work sorted by cost (generation batches by prompt
    length), so each process gets an even mix.
    """
    items = list(items)
    if not _communicating("map_shared"):
        return fn(items)
    rank, n = process_index(), num_processes()
    mine = items[rank::n]
    results = list(fn(mine)) if mine else []
    if len(results) != len(mine):
        raise ValueError(f"map_shared: fn returned {len(results)} results for {len(mine)} items")
    from accelerate.utils import gather_object

    shares = gather_object([results])  # one list per process, in process order
    out: list[Any] = [None] * len(items)
    for r, share in enumerate(shares):
        out[r::n] = share
    return out


def _sendable(exc: Exception) -> Exception:
    """``exc`` itself when it can travel to the other processes, else a plain error with its message."""
    try:
        pickle.dumps(exc)
        return exc
    except Exception:  # an exception holding a lock, a file handle ...: its text is what the others need
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on the main process only; every process returns its result, or raises its error.

    For writing files (the run folder, caches): the others wait here, so once the call returns what main wrote is
    there for every process to read; and an error on main (a full disk, a read-only folder) stops every process with
    the same message. ``fn``'s result must be picklable (a path, a dict): it is sent to the others.
    """
    global _main_only
    if not _communicating("on_main"):
        return fn()
    outcome: tuple[bool, Any] | None = None
    if is_main():
        _main_only = True
        try:
            outcome = (True, fn())
        except Exception as exc:
            outcome = (False, _sendable(exc))
            error = exc
        finally:
            _main_only = False
    from accelerate.utils import broadcast_object_list

    ok, value = broadcast_object_list([outcome])[0]
    if ok:
        return value
    raise error if is_main() else value


def from_main(value: T) -> T:
    """The main process's ``value`` on every process: for decisions that must agree (stop training now?) even where
    the processes' own figures could differ in the last bit (GPUs of different make)."""
    if not _communicating("from_main"):
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value])[0]


def gather(value: T) -> list[T]:
    """Every process's ``value``, in process order (one process: ``[value]``)."""
    if not _communicating("gather"):
        return [value]
    from accelerate.utils import gather_object

    return gather_object([value])


def mean_over_processes(values: dict[str, float]) -> dict[str, float]:
    """Each entry's mean over processes: a DDP step's loss terms, which each process computed on its own batch.

    A NaN on any process makes the mean NaN, so every process sees it and they stop together.
    """
    if not _communicating("mean_over_processes"):
        return values
    from accelerate.utils import gather_object

    shares = gather_object([values])
    return {name: sum(share[name] for share in shares) / len(shares) for name in values}


def main_progress(log: Callable[[str], None]) -> Callable[[str], None]:
    """Progress on the main process only: ``log`` there; elsewhere a silent log, and transformers' own progress bars
    (loading weights ...) turned off, so the console shows one copy of the progress."""
    if is_main():
        return log
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    return lambda _message: None


def bf16_supported() -> bool:
    """Whether this process's device computes bf16 faster than fp32: a CUDA GPU that supports bf16, else a CPU with
    AMX tiles (Sapphire Rapids and later). AVX512-BF16 alone is not enough: on such a CPU (2 cores, no AMX) a 2048²
    bf16 matmul ran at 164 GFLOP/s against 311 in fp32, greedy generation at 0.7× and a ``distance_cluster`` step
    at 0.65× their fp32 speed (README, *Benchmarks*); without either, bf16 is emulated and slower still."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return cpu_has_amx()


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles, as torch sees them."""
    import torch

    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private, so looked up with care
    try:
        return bool(amx()) if amx is not None else False
    except RuntimeError:
        return False


def resolve_precision(mixed_precision: str) -> str:
    """``train.mixed_precision`` as accelerate takes it: ``auto`` is ``bf16`` where :func:`bf16_supported`, else
    ``no``; other values pass through."""
    if mixed_precision != "auto":
        return mixed_precision
    return "bf16" if bf16_supported() else "no"


def accelerator(*, mixed_precision: str = "no", gradient_accumulation_steps: int = 1) -> Accelerator:
    """An :class:`~accelerate.Accelerator` on the process's one state: the process group made once (by
    :func:`process_state`, on the CPU when there is no GPU) and reused by every caller.

    accelerate keeps one state per process and refuses a second ``Accelerator`` with another mixed precision (the
    knowledge tasks plant in fp32, then ``unlearn`` may train in bf16; tests train under both). Only the
    precision-dependent part is then made again; the process group and the device stay.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    if launched():
        process_state()
    mixed_precision = resolve_precision(mixed_precision)
    # AcceleratorState has no public way to ask whether it is set up: an empty shared dict means it is not.
    if AcceleratorState._shared_state and AcceleratorState._shared_state.get("_mixed_precision") != mixed_precision:
        AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(gradient_accumulation_steps=gradient_accumulation_steps, mixed_precision=mixed_precision)


def finish() -> None:
    """Take the process group down at the end of a launched command, whether it succeeded or failed.

    Without this gloo aborts the process at exit ("terminate called without an active exception"), so a finished run
    exits non-zero. No barrier first: after an error on one process the others may never arrive, and the launcher
    stops them only once this one has exited.
    """
    torch = sys.modules.get("torch")
    if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
