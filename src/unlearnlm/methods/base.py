"""What an unlearning method is: options, the data streams it reads, and a loss per step.

The training loop is method-agnostic. Each step it hands the method a dict of batches:
``forget`` (flagged prompt + undesirable answer), ``normal`` (benign prompt + the original's answer),
and any per-forget-example *paired* streams the method asked for in :meth:`prepare` (for instance a
target answer for each forget prompt). Adding a method is one class registered with
:func:`register` plus its test; neither the loop nor the CLI changes.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from unlearnlm.data.records import Dialogue
from unlearnlm.errors import ConfigError
from unlearnlm.models import Reference

Batch = dict[str, torch.Tensor]


@dataclass
class PreparedData:
    """Per-forget-example extras a method builds before training, aligned with the forget list.

    Attributes:
        pairs: stream name -> one dialogue per forget example (tokenised and batched by the loop).
        tensors: name -> tensor whose first dimension indexes forget examples (gathered per batch).
        info: anything worth reporting (cluster sizes, medoid answers ...).
    """

    pairs: dict[str, list[Dialogue]] = field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class PrepareContext:
    """What :meth:`UnlearningMethod.prepare` may use."""

    forget: Sequence[Dialogue]
    normal: Sequence[Dialogue]
    expected: Sequence[Dialogue]
    reference: Reference
    tokenizer: Any
    max_prompt_tokens: int
    max_response_tokens: int
    batch_size: int
    seed: int
    device: torch.device


@dataclass
class StepOutput:
    """A step's loss and the value of every term, for logging."""

    loss: torch.Tensor
    terms: dict[str, float]


class UnlearningMethod(ABC):
    """Base class: subclasses set ``name``, ``Options`` and ``streams`` and implement :meth:`step`."""

    name: ClassVar[str]
    Options: ClassVar[type]
    streams: ClassVar[tuple[str, ...]] = ("forget",)
    #: hidden-state layer the loop should return with the policy forward (None: logits only)
    hidden_layer: int | None = None

    def __init__(self, options: Any) -> None:
        self.options = options

    def prepare(self, ctx: PrepareContext) -> PreparedData:
        """Build paired streams / tensors before training (default: nothing)."""
        return PreparedData()

    @abstractmethod
    def step(self, model: nn.Module, reference: Reference, batch: dict[str, Any]) -> StepOutput:
        """Compute the loss for one step from ``batch[stream]`` dicts of (B, T) tensors."""


METHODS: dict[str, type[UnlearningMethod]] = {}


def register(cls: type[UnlearningMethod]) -> type[UnlearningMethod]:
    """Class decorator: make a method available by its ``name`` in configs and the CLI."""
    if cls.name in METHODS:
        raise ValueError(f"method {cls.name!r} is registered twice")
    METHODS[cls.name] = cls
    return cls


def create_method(name: str, options: dict[str, Any] | None = None) -> UnlearningMethod:
    """Instantiate a registered method, validating its options against its ``Options`` dataclass."""
    if name not in METHODS:
        raise ConfigError(f"method.name: unknown method {name!r}; registered methods: {sorted(METHODS)}")
    cls = METHODS[name]
    options = dict(options or {})
    valid = {f.name for f in dataclasses.fields(cls.Options)}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ConfigError(f"method.options: {unknown} not valid for {name!r}; valid options: {sorted(valid)}")
    from unlearnlm.config import build  # local import: config imports nothing from methods

    return cls(build(cls.Options, options, where=f"method.options[{name}]"))


def forward(model: nn.Module, batch: Batch, hidden_layer: int | None = None):
    """Policy forward pass: (logits (B, T, V), hidden states (B, T, H) at ``hidden_layer`` or None)."""
    out = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
        output_hidden_states=hidden_layer is not None,
    )
    hidden = out.hidden_states[hidden_layer] if hidden_layer is not None else None
    return out.logits, hidden
