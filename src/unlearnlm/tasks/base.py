"""What a task is: the data, judges and measures of one unlearning scenario, behind one interface.

The pipeline (:mod:`unlearnlm.pipeline`) runs the paper's flow for any task: *(plant) → scan with the
evaluative model → answer the evaluation sets with the original → expected outputs → unlearn → evaluate
→ report*. A task supplies only what differs between scenarios:

* its own settings (``Options``, read from ``data.<task>``) and its defaults for the generic ones;
* optionally, knowledge to plant first (:meth:`Task.original`: the model that counts as the original);
* the judge panel (:meth:`Task.panel`);
* the before stage (:meth:`Task.prepare`): what is scanned, the forget set it yields, the expected outputs,
  the normal data, the early-stopping prompts and collateral-damage measure, and every evaluation set with
  its role and the original's answers, all in one :class:`Plan`;
* the sets that ``unlearnlm evaluate`` compares on without a scan (:meth:`Task.evaluation_sets`), and a
  finished run's own sets rebuilt from its files (:meth:`Task.evaluated_sets`);
* optional probes and extra report entries (:meth:`Task.probe`, :meth:`Task.add_metrics`,
  :meth:`Task.summary_entries`).

Adding a task is one module with a :class:`Task` subclass registered by :func:`register_task`, plus its
test; neither the pipeline nor the CLI changes. A task that is not registered can still be named by its
import path, ``data.task: package.module:Class``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from unlearnlm import distributed
from unlearnlm.config import GenerationConfig, ModelConfig, RunConfig, build
from unlearnlm.data.records import Dialogue
from unlearnlm.errors import ConfigError
from unlearnlm.evaluate import EvalSet
from unlearnlm.judges.panel import JudgePanel
from unlearnlm.outputs import atomic_write_text
from unlearnlm.scanning import Collateral, Membership

Log = Callable[[str], None]


@dataclass
class Plan:
    """What a task hands the pipeline once the original model has answered (the "before" stage)."""

    forget: list[Dialogue]
    """Flagged dialogues to train on: a prompt and the original's undesirable answer."""
    expected: list[Dialogue]
    """Preferable answers (the positive targets of the method)."""
    expected_info: dict[str, Any]
    """Where the expected outputs came from, for ``metrics.json``."""
    normal: list[Dialogue]
    """Normal data: dialogues the normal loss keeps the model close to the original on."""
    stop_prompts: list[Dialogue]
    """Forget prompts the early-stopping check re-asks and judges."""
    stop_normal: list[Dialogue]
    """Normal dialogues the early-stopping check measures KL to the original on."""
    collateral_prompts: list[Dialogue]
    """Prompts whose greedy answers the collateral-damage measure reads at every check."""
    collateral: Collateral
    """Collateral damage bounded by ``train.max_over_refusal`` (the harm task: share of benign prompts refused)."""
    labels: tuple[str, str]
    """How the log names the check's flagged rate and collateral measure."""
    initial_flagged: float
    """Flagged rate of ``stop_prompts`` before training: the step-0 check of the stop rule."""
    sets: list[EvalSet]
    """Every evaluation set, with its role (trained on / early stopping / held-out / other source / benign)
    and the original's answers."""
    normal_sets: dict[str, list[Dialogue]]
    """Dialogues whose perplexity and KL to the original are reported, by name."""
    scan: dict[str, int]
    """Counts for the report: scanned, flagged, train, val, test."""
    files: dict[str, list[Dialogue]]
    """Per-example files the run writes (``flagged.jsonl`` ...), by file name."""
    stop_membership: Membership | None = None
    """Where the task measures it (privacy): the highest membership-inference AUC of the forget data against data
    never trained on and never reported (a stop split), read at every check and bounded by
    ``train.max_membership_auc``."""
    stop_belief: Membership | None = None
    """Where the task measures it (hallucination): a truth preference on statements never trained on and never
    reported (a stop split), read before training and at every check; how far it moved is bounded by
    ``train.max_belief_drift``."""
    stop_texts: list[Dialogue] = field(default_factory=list)
    """Human-written dialogues never trained on or reported, whose perplexity the early-stopping check reads and
    ``train.max_perplexity_increase`` bounds (empty: not read)."""
    stop_judged_as: list[Dialogue] | None = None
    """What the judges read in place of each of ``stop_prompts`` (a reworded prompt is judged against the prompt it
    rewords, as the rephrased evaluation set is); None: the prompts themselves."""
    lookalikes: list[Dialogue] = field(default_factory=list)
    """Safe prompts that look like the forget prompts (``data.lookalike_prompts``), for a method's contrast term only:
    none is an early-stopping or evaluation prompt."""
    reserve: list[Dialogue] = field(default_factory=list)
    """Benign dialogues (the original's answers) outside the normal data, trained on only once refusal mining finds
    the model refusing them (``data.reserve_size``, ``train.mine_refusals``); none is an early-stopping or evaluation
    prompt."""
    refusals: list[str] = field(default_factory=list)
    """The original's own refusals met in the before stage (its answers to scanned prompts that the refusal detector
    marks): refusal wording the model already has, which a method may keep off normal prompts."""
    recipe_refusals: dict[str, str] = field(default_factory=dict)
    """For normal and look-alike prompts, by prompt, the refusal in the expected outputs' own form that a model
    trained toward them is most likely to give that prompt, which a method may make unlikely there (the scanned
    tasks: what their ``fitting`` or ``topical`` recipe writes for it, for every normal and look-alike prompt, i.e.
    a harm refusal, or for ``custom`` one of the user's answers; privacy: a refusal naming the retained person, for
    the retained questions; empty otherwise)."""
    unseen_views: dict[str, Dialogue] = field(default_factory=dict)
    """For forget prompts, by prompt, the same dialogue as it would read about someone the model never saw, the
    secret values marked as loss spans, for a method that makes the values as likely as a stranger's (privacy: the
    person's name swapped for a never-planted person's; empty elsewhere)."""
    unseen_model: ModelConfig | None = None
    """A model that never saw the forget data, for a method's teacher of unseen data (the knowledge tasks: the model
    before the task planted its knowledge; None elsewhere)."""


class Task(ABC):
    """Base class: subclasses set ``name`` (and ``Options`` when they have settings) and implement
    :meth:`prepare` and :meth:`evaluation_sets`; every other hook has a default.

    A task object lives for one run or one ``unlearnlm evaluate`` and may keep what it measured
    (probes) until :meth:`summary_entries` reports it.
    """

    name: ClassVar[str]
    Options: ClassVar[type | None] = None
    """Dataclass of the task's own settings, built from ``data.<task>`` (None: the task has none)."""
    defaults: ClassVar[dict[str, Any]] = {}
    """Config values this task runs best with, applied under the user's own (a nested dict like the YAML)."""
    method_defaults: ClassVar[dict[str, dict[str, Any]]] = {}
    """Method options per method name, applied under the user's when that method is the one named."""
    knowledge_unit: ClassVar[str | None] = None
    """The ``meta`` key naming the piece of knowledge a question asks for (a person, a statement pair): questions
    that share it ask for the same knowledge in other words. None: each prompt stands alone. The relearning probe
    (:mod:`unlearnlm.attacks`) relearns some units and measures the others, so it never measures what it taught."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        options = cfg.data.options
        if self.Options is not None and not isinstance(options, self.Options):  # a RunConfig built by hand
            options = self.build_options(options, f"data.{cfg.data.task}")
        self.options = options

    @classmethod
    def build_options(cls, raw: Any, key: str) -> Any:
        """The task's settings from their YAML section (``raw``; None: all defaults), errors naming ``key``."""
        if cls.Options is None:
            if raw:
                raise ConfigError(f"{key}: the {cls.name} task has no settings of its own, got {raw!r}")
            return None
        return build(cls.Options, raw, where=key)

    @classmethod
    def config_defaults(cls, method: str) -> dict[str, Any]:
        """:attr:`defaults`, plus the option defaults of ``method`` if the task has some."""
        tree = {key: dict(value) if isinstance(value, dict) else value for key, value in cls.defaults.items()}
        if method in cls.method_defaults:
            tree["method"] = {"options": dict(cls.method_defaults[method])}
        return tree

    def original(self, log: Log) -> ModelConfig:
        """The model that counts as the original (a task that plants knowledge returns the planted model)."""
        return self.cfg.model

    def panel(self) -> JudgePanel:
        """The evaluative model: by default the judges named in ``judges:``."""
        return JudgePanel.from_names(self.cfg.judges)

    @abstractmethod
    def prepare(self, model, tokenizer, panel: JudgePanel, log: Log) -> Plan:
        """Scan with ``panel`` and answer every set with the original ``model``: the whole before stage."""

    @abstractmethod
    def evaluation_sets(self) -> list[tuple[str, str, list[Dialogue], str]]:
        """``(name, kind, prompts, role)`` of the sets ``unlearnlm evaluate`` compares on (no scan needed);
        ``kind`` is ``harmful`` (lower flagged rate is better) or ``benign``. One should be named ``benign``:
        the original's answers to it are the normal data measured there."""

    def evaluated_sets(self, files: dict[str, list[Dialogue]], before: dict[str, list[str]]) -> list[EvalSet]:
        """The sets a finished run compared on, rebuilt without a model (``unlearnlm evaluate RUN``).

        ``files`` holds the per-example files the run wrote (:attr:`Plan.files`, by file name) and ``before`` the
        original's answers by set name (from its ``examples.jsonl``). Default: :meth:`evaluation_sets`, which is
        every set of a task whose sets do not depend on a scan.
        """
        return [EvalSet(name, kind, prompts, before[name], role) for name, kind, prompts, role in self.evaluation_sets()]

    @abstractmethod
    def normal_texts(self) -> list[Dialogue]:
        """Human-written dialogues for the perplexity check (never trained on)."""

    def probe(self, model, tokenizer, stage: str) -> None:
        """Log-probability probes of ``model`` at ``stage`` (``original`` or ``after``); default: none."""

    def probe_copy(self, model, tokenizer, exclude: Collection[str] = ()) -> dict[str, Any]:
        """The same probes of an attacked copy, leaving out the questions about the :attr:`knowledge_unit` values in
        ``exclude``, recorded nowhere; default: none."""
        return {}

    def add_metrics(self, sets: list[EvalSet], after: dict[str, list[str]], metrics: dict[str, Any]) -> None:
        """Add task-specific figures to each set's ``before``/``after`` metrics in place; default: none."""

    def summary_entries(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Extra entries of ``metrics.json`` (probes, per-rule rates ...), given the per-example rows."""
        return {}


TASKS: dict[str, type[Task]] = {}


def generation_key(cfg: GenerationConfig) -> dict[str, Any]:
    """The generation settings as a before-stage cache key holds them: the precision as resolved on this machine,
    left out at fp32 so that caches written before it existed stay valid."""
    generation = dataclasses.asdict(cfg)
    generation["mixed_precision"] = distributed.resolve_precision(cfg.mixed_precision)
    if generation["mixed_precision"] == "no":
        del generation["mixed_precision"]
    return generation


#: ``data`` settings that act on training only (never on the original's answers or the planted model): out of every
#: cache key.
TRAINING_ONLY_DATA = ("lookalike_prompts", "lookalike_pool", "counterparts", "refusal_variety", "frame_openings")
#: ``data`` settings added after caches were first written, with their "off" value: out of the key while off.
ADDED_LATER_DATA = {"edgy_share": None, "edgy_verbs": False, "reserve_size": 0, "pyrit_benign": "scan"}


def data_key(data: Any) -> dict[str, Any]:
    """The ``data`` section for a cache key: without the task's options, and without settings added since caches
    were first written while they are unset, so that those caches stay valid."""
    key = dataclasses.asdict(dataclasses.replace(data, options=None))
    for name, off in ADDED_LATER_DATA.items():
        if key.get(name, off) == off:
            key.pop(name, None)
    for name in TRAINING_ONLY_DATA:
        key.pop(name, None)
    return key


def stage_hash(parts: dict[str, Any]) -> str:
    """16 hex digits of the SHA-256 of ``parts`` as sorted JSON (dataclasses as dicts, anything else as text)."""
    text = json.dumps({k: (dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v) for k, v in parts.items()},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_stage(path: Path) -> dict[str, Any] | None:
    """A cached before stage (JSON), or None when ``path`` is not a file. Read by the main process and sent to the
    others, so that every process takes the same branch."""
    return distributed.on_main(lambda: json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None)


def write_stage(path: Path, stage: dict[str, Any]) -> None:
    """Cache a before stage as JSON, written atomically by the main process."""
    text = json.dumps(stage, ensure_ascii=False)
    distributed.on_main(lambda: atomic_write_text(path, text))


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make a task available by its ``name`` in configs and the CLI."""
    if cls.name in TASKS:
        raise ValueError(f"task {cls.name!r} is registered twice")
    TASKS[cls.name] = cls
    return cls


def task_class(name: str) -> type[Task]:
    """The task registered as ``name``, or the class at the import path ``package.module:Class``."""
    if name in TASKS:
        return TASKS[name]
    if ":" not in name:
        raise ConfigError(f"data.task: {name!r} is not a registered task; registered: {sorted(TASKS)} "
                          "(or give the import path of your own, package.module:Class)")
    module_name, _, attr = name.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"data.task: cannot load {name!r} ({exc}); check the module is importable") from None
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise ConfigError(f"data.task: {name!r} is not a subclass of unlearnlm.tasks.base.Task")
    return cls


def create_task(cfg: RunConfig) -> Task:
    """The task named by ``cfg.data.task``, built on ``cfg``."""
    return task_class(cfg.data.task)(cfg)
