"""Choosing a method's setting fairly: several tries of one method, one kept, by the early-stopping split only.

A method whose published layer, coefficient or learning rate does not suit the model at hand is not measured by
one run at that setting. ``benchmarks/compare_methods.py --tries KEY=V1,V2`` runs every method once per value
(the same tries for every method) and keeps, per method, the try whose kept checkpoint ranks best by the stop
rule's own order (:func:`unlearnlm.train.rank`: the early-stopping flagged rate, then membership AUC, then KL;
each kept checkpoint is already within the run's KL and over-refusal bounds). Held-out figures never enter the
choice, so the chosen try's held-out figures stay held-out.

A method whose sensitive setting is its own (RMU's layer and steering coefficient, circuit breakers' layers) tunes that
setting instead of the common one: ``--tries rmu:method.options.steering_coeff=2,6.5,20`` replaces the unprefixed
specs for ``rmu`` only. Every compared method must still get the same number of tries (:func:`method_grids`), so
no method is favoured by a larger search.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from unlearnlm.errors import ConfigError
from unlearnlm.train import Check, rank


def tries_grid(specs: Sequence[str]) -> list[list[str]]:
    """``["train.learning_rate=1e-4,4e-4", "method.options.layer=4,8"]`` → every combination as ``--set``
    overrides, the first spec's values varying slowest. No specs: one try with no overrides."""
    axes = []
    for spec in specs:
        key, eq, values = spec.partition("=")
        options = [v.strip() for v in values.split(",")]
        if not eq or not key.strip() or not all(options) or "[" in values:
            raise ConfigError(f"--tries {spec!r} must look like section.key=V1,V2 (plain values, no lists), "
                              "e.g. train.learning_rate=1e-4,4e-4")
        axes.append([f"{key.strip()}={v}" for v in options])
    return [list(combo) for combo in itertools.product(*axes)]


def _owner(spec: str) -> str | None:
    """The method a ``METHOD:section.key=...`` spec belongs to, or None for a spec every method shares."""
    key = spec.partition("=")[0]
    return key.partition(":")[0].strip() if ":" in key else None


def method_grids(specs: Sequence[str], methods: Sequence[str]) -> dict[str, list[list[str]]]:
    """Per method, its tries as ``--set`` overrides: the specs prefixed with its name (``rmu:method.options.layer=4,8``)
    where there are any, else the unprefixed ones (:func:`tries_grid`). Raises :class:`ConfigError` when a prefix
    names a method not compared, or when the methods would get different numbers of tries."""
    strays = sorted({o for o in map(_owner, specs) if o is not None and o not in methods})
    if strays:
        raise ConfigError(f"--tries names {', '.join(strays)}, which is not among the compared methods "
                          f"({', '.join(methods)}); add it to --methods or drop its tries")
    common = [s for s in specs if _owner(s) is None]
    grids = {}
    for name in methods:
        own = [s.partition(":")[2] for s in specs if _owner(s) == name]
        grids[name] = tries_grid(own or common)
    sizes = {name: len(grid) for name, grid in grids.items()}
    if len(set(sizes.values())) > 1:
        counts = ", ".join(f"{name} {n}" for name, n in sizes.items())
        raise ConfigError(f"--tries gives the methods different numbers of tries ({counts}); give each method as "
                          "many values as the others, so that no method is chosen from a larger search")
    return grids


def kept_check(summary: dict[str, Any]) -> Check:
    """The check a finished run kept (its ``metrics.json`` summary): the one at its best step."""
    training = summary["training"]
    for check in training["checks"]:
        if check["step"] == training["best_step"]:
            return Check(**check)
    raise ValueError(f"run of {summary.get('method')!r} has no check at its best step {training['best_step']}")


def best_try(summaries: Sequence[dict[str, Any]]) -> int:
    """Index of the run whose kept check ranks best (the first of equals)."""
    if not summaries:
        raise ValueError("no runs to choose from")
    return min(range(len(summaries)), key=lambda i: (rank(kept_check(summaries[i])), i))
