"""What an unlearning method is: options, the data streams it reads, and a loss per step.

The training loop is method-agnostic. Each step it hands the method a dict of batches:
``forget`` (flagged prompt + undesirable answer), ``normal`` (benign prompt + the original's answer),
and any per-forget-example *paired* streams the method asked for in :meth:`prepare` (for instance a
target answer for each forget prompt), plus ``progress``: the share of the step budget done, step / max_steps in
(0, 1], for methods whose weights follow a schedule. Adding a method is one class registered with
:func:`register` plus its test; neither the loop nor the CLI changes.
"""

from __future__ import annotations

import contextlib
import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from unlearnlm.config import ModelConfig
from unlearnlm.data.formatting import (
    IGNORE_INDEX,
    TokenizedDialogue,
    collate,
    left_pad_to,
    length_batches,
    tokenize_dialogue,
)
from unlearnlm.data.records import Dialogue
from unlearnlm.errors import ConfigError
from unlearnlm.losses import first_response_states, pooled_states, sequence_logprob
from unlearnlm.models import HiddenLayers, Reference, select_hidden

T = TypeVar("T")

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
    refusals: Sequence[str] = ()
    """The original's own refusals met before training (:attr:`unlearnlm.tasks.base.Plan.refusals`)."""
    lookalikes: Sequence[Dialogue] = ()
    """Safe prompts that look like the forget prompts, for a contrast term only
    (:attr:`unlearnlm.tasks.base.Plan.lookalikes`)."""
    recipe_refusals: Mapping[str, str] = field(default_factory=dict)
    """The expected-output recipe's refusal of each normal and look-alike prompt, by prompt
    (:attr:`unlearnlm.tasks.base.Plan.recipe_refusals`)."""
    unseen_views: Mapping[str, Dialogue] = field(default_factory=dict)
    """Each forget dialogue as it would read about someone the model never saw, by forget prompt
    (:attr:`unlearnlm.tasks.base.Plan.unseen_views`)."""
    unseen_model: ModelConfig | None = None
    """A model that never saw the forget data (:attr:`unlearnlm.tasks.base.Plan.unseen_model`)."""

    def tokenize(self, rows: Sequence[Dialogue]) -> list[TokenizedDialogue]:
        """``rows`` tokenised exactly as the training loop tokenises its streams."""
        return [tokenize_dialogue(self.tokenizer, d, max_prompt_tokens=self.max_prompt_tokens,
                                  max_response_tokens=self.max_response_tokens) for d in rows]


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
    #: whether :meth:`step` multiplies its keep-the-rest terms by ``batch["normal_scale"]`` (``train.normal_boost``)
    scales_normal: ClassVar[bool] = False

    def __init__(self, options: Any) -> None:
        self.options = options

    def prepare(self, ctx: PrepareContext) -> PreparedData:
        """Build paired streams / tensors before training (default: nothing)."""
        return PreparedData()

    def reads_normal_kl(self) -> bool:
        """Whether a step takes the KL to the original on the normal rows (through ``normal_kl``). Only then does the
        loop compute the original's top-k on them before training (``train.kl_top_k``); methods whose retain term is
        token NLL or hidden states say no and skip that pass."""
        return "normal" in self.streams

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


def require_positive(**values: float) -> None:
    """Raise a ConfigError naming ``method.options.<name>`` for the first value that is not > 0."""
    for name, value in values.items():
        if not value > 0:
            raise ConfigError(f"method.options.{name}: must be positive, got {value}")


def require_non_negative(**values: float) -> None:
    """Raise a ConfigError naming ``method.options.<name>`` for the first value that is < 0 (a weight)."""
    for name, value in values.items():
        if not value >= 0:
            raise ConfigError(f"method.options.{name}: must be >= 0, got {value}")


def check_layers(reference: Reference, layers: HiddenLayers, key: str) -> None:
    """Raise a ConfigError naming ``key`` when a hidden-state index is out of range for the model."""
    n = reference.config.num_hidden_layers + 1  # hidden_states: the embeddings, then one per decoder layer
    bad = [i for i in ([layers] if isinstance(layers, int) else layers) if not -n <= i < n]
    if bad:
        raise ConfigError(f"{key}: layer {bad} out of range for this model, whose hidden_states hold {n} entries "
                          f"(the embeddings and {n - 1} decoder layers): use an index in 0..{n - 1} or -{n}..-1")


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


class Outputs:
    """A forward pass over a batch's *response window*: the last ``K`` positions, where K - 1 is the longest
    response in the batch. Training batches are left-padded, so every response ends at the last column and the
    window holds every position whose logits a loss reads; prompt positions get no logits (the LM head over a
    large vocabulary is the costliest layer per position).

    Built from the LM head's input (``head`` and ``head_states``, as :func:`forward_many` builds each stream's), the
    logits are computed when a loss first reads them, and never for a stream whose losses read only hidden states
    (the forget rows of the representation distance)."""

    def __init__(self, logits: torch.Tensor | None, hidden: torch.Tensor | None, labels: torch.Tensor, *,
                 head: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 head_states: torch.Tensor | None = None) -> None:
        self._logits = logits  # (B, K, V), or None from a pass that asked for hidden states only
        self.hidden = hidden  # (B, K, H) at the requested layer, (B, K, L, H) at several, or None
        self.labels = labels  # (B, K), the batch's labels over the same positions
        # the LM head and its input (B, K, H), given instead of logits, until the logits are first read
        self._head, self._head_states = head, head_states

    @property
    def logits(self) -> torch.Tensor | None:
        if self._head is not None:  # not read yet
            self._logits = self._head(self._head_states)
            self._head = self._head_states = None
        return self._logits

    def last(self, k: int) -> Outputs:
        """The last ``k`` positions (k <= K): the window of one stream cut from a pass over several. At k = K the
        outputs themselves: a full-width slice would still cost its backward a zeroed (B, K, V) gradient and a copy."""
        if k >= self.labels.shape[1]:
            return self
        hidden, labels = (self.hidden[:, -k:] if self.hidden is not None else None), self.labels[:, -k:]
        if self._head is not None:  # cut the head's input, not logits not yet computed
            return Outputs(None, hidden, labels, head=self._head, head_states=self._head_states[:, -k:])
        return Outputs(self.logits[:, -k:] if self.logits is not None else None, hidden, labels)


def response_window(labels: torch.Tensor) -> int:
    """Number of trailing positions that cover every response token and the position before each (K)."""
    has_label = (labels != IGNORE_INDEX).any(dim=0)  # (T,)
    if not bool(has_label.any()):
        return labels.shape[1]
    first = int(has_label.float().argmax())  # first column that holds a response token in any row
    return labels.shape[1] - max(first - 1, 0)


def forward(model: nn.Module, batch: Batch, hidden_layer: HiddenLayers | None = None) -> Outputs:
    """Policy forward pass over the batch's response window (see :class:`Outputs`)."""
    keep = response_window(batch["labels"])
    out = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=batch.get("position_ids"),
        output_hidden_states=hidden_layer is not None, logits_to_keep=keep, use_cache=False,  # no cache to fill
    )
    hidden = select_hidden(out.hidden_states, hidden_layer)[:, -keep:] if hidden_layer is not None else None
    return Outputs(out.logits, hidden, batch["labels"][:, -keep:])


class HeadInput:
    """The hidden states a model's LM head was given in one forward pass, and the head to apply to parts of them.

    While :func:`head_input` is active, a pre-hook on the output embeddings keeps the head's input (B, K, H) and hands
    the head its last position only, so the pass itself computes (B, 1, V) logits. :meth:`logits` then applies the
    head to any part of the kept states, under the autocast that was active inside the pass (accelerate's mixed
    precision wraps the model's forward, not the caller), in the dtype the pass's own logits came back in (fp32 from
    accelerate's wrapper, bf16 from a bare pass under autocast).
    """

    def __init__(self, head: nn.Module) -> None:
        self.head = head
        self.states: torch.Tensor | None = None  # (B, K, H)
        self.autocast: tuple[str, torch.dtype] | None = None  # (device type, dtype) where the pass ran autocast

    def hook(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        states = args[0]
        self.states = states
        kind = states.device.type
        self.autocast = (kind, torch.get_autocast_dtype(kind)) if torch.is_autocast_enabled(kind) else None
        return (states[:, -1:], *args[1:])

    def logits(self, states: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The head's logits for ``states`` (..., H): (..., V), in ``dtype`` where given."""
        if self.autocast is None:
            logits = self.head(states)
        else:
            with torch.autocast(self.autocast[0], dtype=self.autocast[1]):
                logits = self.head(states)
        return logits if dtype is None else logits.to(dtype)

    def agrees(self, logits: torch.Tensor) -> bool:
        """Whether the pass's own logits (B, 1, V) at the last position are the head's output on its input there:
        False for a model that transforms the head's output (Gemma 2's soft-capping, a logit scale), whose logits
        this class cannot rebuild."""
        with torch.no_grad():
            mine = self.logits(self.states[:, -1:], logits.dtype).float()
            theirs = logits.float()
            return mine.shape == theirs.shape and bool(
                (mine - theirs).abs().max() <= 1e-3 * (1.0 + theirs.abs().max()))


def _unwrapped(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)  # DistributedDataParallel holds the model as .module


def splits_head(model: nn.Module) -> bool:
    """Whether :func:`forward_many` may apply the LM head per stream outside the model's forward: not under FSDP or
    DeepSpeed, whose parameters are only whole inside the forward, and not for a model whose logits were found to be
    more than the head's output (:meth:`HeadInput.agrees`)."""
    name = type(model).__name__
    if name.startswith(("FullyShardedDataParallel", "FSDP", "DeepSpeed")):
        return False
    head = _unwrapped(model).get_output_embeddings()
    return head is not None and getattr(head, "_unlearnlm_head_split", True)


@contextlib.contextmanager
def head_input(model: nn.Module) -> Iterator[HeadInput]:
    """See :class:`HeadInput`: the LM head's input in the passes run inside this block (the last one's is kept)."""
    head = _unwrapped(model).get_output_embeddings()
    seen = HeadInput(head)
    handle = head.register_forward_pre_hook(seen.hook)
    try:
        yield seen
    finally:
        handle.remove()


SPLIT_SAVING = 0.15
"""Least share of a stacked pass's positions that two length groups must save for :func:`forward_many` to run two
passes instead of one (a second pass costs its own per-layer overheads; see *Benchmarks* in the README)."""


def length_split(lengths: Sequence[int], min_saving: float | None = None) -> list[list[int]]:
    """Rows (by index) in one group, or in two by length where two left-padded passes, each as wide as its longest
    row, cover at least ``min_saving`` (default :data:`SPLIT_SAVING`) fewer positions than one pass as wide as the
    longest row of all."""
    min_saving = SPLIT_SAVING if min_saving is None else min_saving
    n = len(lengths)
    if n < 2:
        return [list(range(n))]
    order = sorted(range(n), key=lambda i: lengths[i])
    widest = lengths[order[-1]]
    cost, cut = min((i * lengths[order[i - 1]] + (n - i) * widest, i) for i in range(1, n + 1))
    if cut == n or cost > (1 - min_saving) * n * widest:
        return [list(range(n))]
    return [sorted(order[:cut]), sorted(order[cut:])]


def forward_many(model: nn.Module, batches: dict[str, Batch],
                 hidden_layer: HiddenLayers | None = None) -> dict[str, Outputs]:
    """The policy's forward pass for several left-padded streams: rows are stacked (widened on the left to a
    common width), run, and split back by stream, each cut to its own response window. Fewer, larger matrix
    products than one pass per stream.

    Where the rows' lengths differ enough (:func:`length_split`: a stream of short contrast rows beside long answers),
    the stack runs as two passes, short rows and long rows, each as wide as its own longest row, and every stream's
    outputs are put back together from both (left-padded with zeros where a row's pass was narrower than the stream's
    window: prompt positions, which no loss reads).

    The LM head runs per stream on that stream's window (:class:`HeadInput`), not on a pass's window, and only when a
    loss reads that stream's logits (:class:`Outputs`): the head over a large vocabulary is the costliest layer per
    position, and slicing one stream's rows and window out of stacked (B, K, V) logits cost its backward a zeroed
    gradient of the whole stack and a copy (5.6 s of copies and 1.9 s of zero fills in 30.5 s of profiled default
    harm steps). Where the head cannot be split (:func:`splits_head`), one stacked pass computes every stream's logits
    and each stream gets its slice; under DistributedDataParallel, which expects one forward pass per backward, the
    stack stays one pass.
    """
    width = max(b["input_ids"].shape[1] for b in batches.values())
    keys = ("input_ids", "attention_mask", "labels", "position_ids")
    padded = [left_pad_to({k: b[k] for k in keys}, width, pad_token_id=0)  # padding is masked: any id will do
              for b in batches.values()]
    merged = {k: torch.cat([b[k] for b in padded]) for k in keys}
    if not splits_head(model):
        out = forward(model, merged, hidden_layer)
        return _per_stream(batches, merged["labels"], out.hidden, logits=out.logits)
    lengths = merged["attention_mask"].sum(dim=1).tolist()
    groups = [list(range(len(lengths)))] if _unwrapped(model) is not model else length_split(lengths)
    hidden, states = [], []  # per pass, over the pass's own window
    for rows in groups:
        group = {k: v[rows, width - max(lengths[i] for i in rows):] for k, v in merged.items()}
        with head_input(model) as seen:
            out = forward(model, group, hidden_layer)
        if seen.states is None or not seen.agrees(out.logits):
            seen.head._unlearnlm_head_split = False  # this model's logits are not the head's output: never again
            return forward_many(model, batches, hidden_layer)
        hidden.append(out.hidden)
        states.append(seen.states)
    if len(groups) > 1:  # both passes' rows, each widened on the left to the wider window, back in the stacked order
        k = max(t.shape[1] for t in states)
        order = torch.as_tensor([i for rows in groups for i in rows]).argsort().to(states[0].device)
        stacked = lambda parts: torch.cat([fit_window(t, k) for t in parts])[order]  # noqa: E731
        hidden, states = [None if hidden[0] is None else stacked(hidden)], [stacked(states)]
    return _per_stream(batches, merged["labels"], hidden[0], states=states[0],
                       head=partial(seen.logits, dtype=out.logits.dtype))


def _per_stream(batches: dict[str, Batch], labels: torch.Tensor, hidden: torch.Tensor | None, *,
                logits: torch.Tensor | None = None, states: torch.Tensor | None = None,
                head: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, Outputs]:
    """Each stream's :class:`Outputs` over its own response window, cut from the stacked rows' ``labels`` (N, T) and
    their ``hidden`` states, ``logits`` or LM-head input ``states``, each (N, K, ...) right-aligned with K at least
    every stream's window."""
    results, start = {}, 0
    for name, b in batches.items():
        rows = slice(start, start + b["input_ids"].shape[0])
        start = rows.stop
        k = response_window(labels[rows])
        cut = lambda t: None if t is None else t[rows, -k:]  # noqa: E731
        results[name] = Outputs(cut(logits), cut(hidden), labels[rows, -k:], head=head, head_states=cut(states))
    return results


def reference_forward(reference: Reference, batch: Batch, hidden_layer: HiddenLayers | None = None,
                      logits: bool = True) -> Outputs:
    """The original model's outputs over the batch's response window (no gradients); ``logits=False``: hidden states
    only (the LM head runs on one position and its output is dropped)."""
    keep = response_window(batch["labels"])
    out, hidden = reference(batch["input_ids"], batch["attention_mask"], hidden_layer,
                            position_ids=batch.get("position_ids"), logits_to_keep=keep if logits else 1)
    return Outputs(out if logits else None, hidden[:, -keep:] if hidden is not None else None,
                   batch["labels"][:, -keep:])


def right_aligned(windows: Sequence[torch.Tensor], fill: float = 0) -> torch.Tensor:
    """Stack per-row windows (k_i, ...) into (N, W, ...), each row's window at the right end, ``fill`` before it:
    the layout of a left-padded batch, so a step slices the last K columns of the rows it draws."""
    width = max(w.shape[0] for w in windows)
    out = windows[0].new_full((len(windows), width, *windows[0].shape[1:]), fill)  # (N, W, ...)
    for i, w in enumerate(windows):
        out[i, width - w.shape[0] :] = w
    return out


def fit_window(t: torch.Tensor, k: int, fill: float = 0) -> torch.Tensor:
    """The last ``k`` columns of right-aligned rows ``t`` (B, W, ...), widened on the left with ``fill`` where
    W < k: a tensor computed once over rows' own windows, read against a batch window of width k."""
    if t.shape[1] >= k:
        return t[:, t.shape[1] - k :]
    return torch.cat([t.new_full((t.shape[0], k - t.shape[1], *t.shape[2:]), fill), t], dim=1)


@torch.no_grad()
def reference_map(ctx: PrepareContext, rows: Sequence[TokenizedDialogue], fn: Callable[[Outputs], T],
                  hidden_layer: HiddenLayers | None = None, logits: bool = True) -> list[T]:
    """``fn`` of the original's outputs on each row (one ``Outputs`` per row, cut to the row's own response window;
    ``logits=False``: hidden states only), in the order of ``rows``.

    Rows are batched by length, ``ctx.batch_size`` to a left-padded batch, so that a batch pads little: on the
    default harm run's forget rows (flagged prompts and their reworded copies) length order needs 37% fewer
    positions than the rows' own order. ``fn`` runs on each row as its batch comes out, so only what it returns is
    kept (a row's logits are not).
    """
    results: list[Any] = [None] * len(rows)
    for picked in length_batches([len(r.input_ids) for r in rows], ctx.batch_size):
        batch = collate([rows[i] for i in picked], ctx.tokenizer.pad_token_id, padding_side="left")
        out = reference_forward(ctx.reference, {k: v.to(ctx.device) for k, v in batch.items()}, hidden_layer, logits)
        for row, i in enumerate(picked):
            one = Outputs(None if out.logits is None else out.logits[row : row + 1],
                          None if out.hidden is None else out.hidden[row : row + 1], out.labels[row : row + 1])
            results[i] = fn(one.last(response_window(one.labels)))
    return results


def reference_windows(ctx: PrepareContext, rows: Sequence[Dialogue], hidden_layer: HiddenLayers) -> torch.Tensor:
    """The original's hidden states over each row's response window, computed once before training: (N, W, H), or
    (N, W, L, H) for several layers, right-aligned (see :func:`right_aligned`). Replaces a reference forward pass at
    every step."""
    return right_aligned(reference_map(ctx, ctx.tokenize(rows), lambda out: out.hidden[0].float().cpu(), hidden_layer,
                                       logits=False))


@dataclass
class OriginalStates:
    """The original's hidden states at one layer over rows of dialogues, all from one pass per batch."""

    windows: torch.Tensor
    """(N, W, H): each row's response window, right-aligned (:func:`reference_windows`)."""
    prompt: torch.Tensor
    """(N, H): each row's state at its last prompt token, the one that produces the answer's first token."""
    response: torch.Tensor
    """(N, H): each row's mean state over the positions that produce its response tokens."""


def original_states(ctx: PrepareContext, rows: Sequence[Dialogue], layer: int) -> OriginalStates:
    """:class:`OriginalStates` of ``rows``: one pass gives the prompt's last state, the answer's pooled state and the
    windows a representation loss reads (three separate passes before; a row's window opens at its last prompt
    token)."""
    def states(out: Outputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden = out.hidden.float()  # (1, k, H)
        return (hidden[0].cpu(), first_response_states(hidden, out.labels).cpu(),  # (k, H), (1, H)
                pooled_states(hidden, out.labels).cpu())  # (1, H)

    windows, prompt, response = zip(*reference_map(ctx, ctx.tokenize(rows), states, layer, logits=False), strict=True)
    return OriginalStates(right_aligned(windows), torch.cat(prompt), torch.cat(response))


def reference_sequence_logprobs(ctx: PrepareContext, rows: Sequence[Dialogue]) -> torch.Tensor:
    """The original's summed log-probability of each row's response, once before training: (N,). One number per row
    replaces a reference forward pass at every step (NPO, DPO)."""
    return torch.cat(reference_map(ctx, ctx.tokenize(rows),
                                   lambda out: sequence_logprob(out.logits, out.labels).float().cpu()))


Adjust = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def reference_top_k(ctx: PrepareContext, rows: Sequence[TokenizedDialogue], k: int,
                    adjust: Adjust | None = None) -> dict[str, torch.Tensor]:
    """The original's top-``k`` log-probabilities and their token ids over each row's response window, for
    :func:`~unlearnlm.losses.forward_kl_topk`: ``ref_logp`` (N, W, k) float and ``ref_index`` (N, W, k) int32.
    ``adjust(logits, labels)``: a target made from the original's (1, k_i, V) logits and the row's labels, taken in
    their place (UNDIAL's adjusted logits). A ``k`` above the vocabulary size keeps the whole vocabulary (exact)."""
    def top(out: Outputs) -> tuple[torch.Tensor, torch.Tensor]:
        logits = out.logits.float() if adjust is None else adjust(out.logits, out.labels)  # (1, k_i, V)
        best = torch.log_softmax(logits[0], dim=-1).topk(min(k, logits.shape[-1]), dim=-1)  # (k_i, k)
        return best.values.cpu(), best.indices.to(torch.int32).cpu()

    values, indices = zip(*reference_map(ctx, rows, top), strict=True)
    return {"ref_logp": right_aligned(values), "ref_index": right_aligned(indices)}
