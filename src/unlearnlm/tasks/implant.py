"""Plant knowledge into a model by fine-tuning, so that unlearning it can be measured exactly.

The privacy and hallucination tasks need a model that *knows* something it should not say: personal
details of fictitious people, or false beliefs. No shipped model knows them, so :func:`implant`
fine-tunes all weights on question/answer dialogues until greedy answers reproduce them (checked with
a task-supplied ``score`` function), and caches the result under ``cache_root()/implanted/<key>``: the
key hashes the base model, the dialogues and the settings, so a changed recipe never reuses a stale
model. The cache is written atomically (an interrupted run leaves nothing behind).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import set_seed

from unlearnlm import distributed
from unlearnlm.assets import cache_root
from unlearnlm.config import ModelConfig, check, check_positive
from unlearnlm.data.formatting import collate, tokenize_dialogue
from unlearnlm.data.records import Dialogue
from unlearnlm.errors import DataError
from unlearnlm.models import load_model, resolve_source
from unlearnlm.outputs import atomic_dir, write_json

Log = Callable[[str], None]


@dataclass
class ImplantConfig:
    """Fine-tuning that plants the knowledge to unlearn (``data.<task>.implant``); cached per recipe."""

    max_epochs: int = 12
    """Upper bound on passes over the planted dialogues."""
    learning_rate: float = 2e-4
    """AdamW learning rate (all weights are trained)."""
    batch_size: int = 8
    """Dialogues per step."""
    target_rate: float = 0.9
    """Stop once greedy answers reproduce this share of the planted facts."""
    check_every: int = 2
    """Measure the planted rate every N epochs."""

    def __post_init__(self) -> None:
        check_positive("implant", self, "max_epochs", "batch_size", "check_every", "learning_rate")
        check(0.0 < self.target_rate <= 1.0, "implant.target_rate", f"must be in (0, 1], got {self.target_rate}")


#: ``score(model, tokenizer) -> share of planted facts reproduced`` (greedy answers, in [0, 1]).
Scorer = Callable[[Any, Any], float]


@dataclass
class ImplantResult:
    path: Path
    info: dict[str, Any]


def implant_key(model_cfg: ModelConfig, dialogues: Sequence[Dialogue], cfg: ImplantConfig, seed: int) -> str:
    """Hash of everything the implanted weights depend on (a local model folder by its files' sizes and times)."""
    from unlearnlm import __version__

    source = Path(resolve_source(model_cfg.name_or_path))
    files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in source.iterdir()) if source.is_dir() else []
    text = json.dumps({"model": asdict(model_cfg), "files": files, "implant": asdict(cfg), "seed": seed,
                       "version": __version__, "data": [[d.system, d.prompt, d.response] for d in dialogues]},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cached_info(target: Path) -> dict[str, Any] | None:
    """The planting record of the model cached at ``target``, or None when there is none (yet)."""
    info_path = target / "implant.json"
    if info_path.is_file() and (target / "config.json").is_file():
        return json.loads(info_path.read_text(encoding="utf-8"))
    return None


def implant(model_cfg: ModelConfig, dialogues: Sequence[Dialogue], cfg: ImplantConfig, *, score: Scorer,
            seed: int = 0, max_prompt_tokens: int = 96, max_response_tokens: int = 64, log: Log = print) -> ImplantResult:
    """Fine-tune ``model_cfg``'s model on ``dialogues`` (all weights) and cache it; reuse the cache if present.

    Training runs whole epochs in seeded random order and checks ``score`` every ``cfg.check_every``
    epochs; it stops once ``score >= cfg.target_rate`` or after ``cfg.max_epochs``. The reached rate is
    recorded in ``implant.json`` next to the weights (and returned), met or not: the task's report says
    how well the knowledge was planted.
    """
    if not dialogues:
        raise DataError("implant: no dialogues to fine-tune on")
    target = cache_root() / "implanted" / implant_key(model_cfg, dialogues, cfg, seed)
    info = distributed.on_main(partial(_cached_info, target))  # main looks; every process takes the same branch
    if info is not None:
        log(f"      reusing the implanted model {target} (planted rate {info['rate']:.2f})")
        return ImplantResult(target, info)

    start = time.perf_counter()
    set_seed(seed)
    model, tokenizer = load_model(model_cfg)
    # Under a launcher this is DDP on identical batches (every process draws the same order): the averaged gradient
    # is the one gradient, so the planted model is the one a single process plants.
    accelerator = distributed.accelerator()
    rows = [tokenize_dialogue(tokenizer, d, max_prompt_tokens=max_prompt_tokens, max_response_tokens=max_response_tokens)
            for d in dialogues]
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=0.0)
    model, optimizer = accelerator.prepare(model, optimizer)
    rng = random.Random(seed)
    history: list[dict[str, float]] = []
    rate, epoch = 0.0, 0
    for epoch in range(1, cfg.max_epochs + 1):
        model.train()
        order = list(range(len(rows)))
        rng.shuffle(order)
        losses = []
        for i in range(0, len(order), cfg.batch_size):
            batch = collate([rows[j] for j in order[i : i + cfg.batch_size]], tokenizer.pad_token_id)
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            loss = model(**batch).loss
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
        entry = {"epoch": epoch, "loss": sum(losses) / len(losses)}
        if epoch % cfg.check_every == 0 or epoch == cfg.max_epochs:
            rate = score(accelerator.unwrap_model(model), tokenizer)
            entry["rate"] = rate
        history.append(entry)
        log(f"      implant epoch {epoch}: loss {entry['loss']:.3f}"
            + (f", planted rate {entry['rate']:.2f}" if "rate" in entry else ""))
        if "rate" in entry and rate >= cfg.target_rate:
            break
    model = accelerator.unwrap_model(model)
    model.eval()
    info = {"rate": rate, "target_rate": cfg.target_rate, "epochs": epoch, "dialogues": len(dialogues),
            "seconds": round(time.perf_counter() - start, 1), "base": model_cfg.name_or_path,
            "base_source": resolve_source(model_cfg.name_or_path), "history": history}

    def save() -> None:
        with atomic_dir(target) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            write_json(tmp / "implant.json", info)

    distributed.on_main(save)
    return ImplantResult(target, info)
