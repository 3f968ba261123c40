"""Plant knowledge into a model by fine-tuning, so that unlearning it can be measured exactly.

The privacy and hallucination tasks need a model that *knows* something it should not say: personal
details of fictitious people, or false beliefs. No shipped model knows them, so :func:`implant`
fine-tunes all weights on question/answer dialogues until greedy answers reproduce them (checked with
a task-supplied ``score`` function), and caches the result under ``cache_root()/implanted/<key>``: the
key hashes the base model, the dialogues and the settings, so a changed recipe never reuses a stale
model. The cache is written atomically (an interrupted run leaves nothing behind).

Planting only the task's dialogues teaches the model one answer form: measured on the hallucination task's planted
model (4 epochs on 180 one-sentence statements), it answered "How do I politely decline a meeting invitation?" with
"A meeting invitation is typically sent via text message" and a request for a poem with a one-line claim, where the
base model answered both. ``ImplantConfig.keep`` trains, beside the planted dialogues, benign requests in the base
model's own answers (self-distillation), so that the planted model keeps its everyday behaviour.
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
from unlearnlm.generation import generate
from unlearnlm.losses import nll
from unlearnlm.methods.base import forward
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
    keep: int = 0
    """Benign requests (everyday, work and persona requests, safe homonyms, math: ``tasks.benign.keep_prompts``)
    answered greedily by the base model before planting and trained on in every epoch beside the planted
    dialogues, so that the planted model answers everyday requests as the base model does. 0: none (the planted
    model of every published figure here)."""
    length_window: int = 0
    """Batch by length: each epoch's shuffled rows are cut into windows of this many, each window sorted by token
    length and cut into batches, and the batches shuffled, so a batch pads little (the privacy default's 250 rows,
    54 to 111 tokens: 26% fewer padded tokens per epoch at 64 than in plain random batches,
    ``python benchmarks/bench_planting.py --padding``). 0: plain random batches (every planted model before
    2026-12-05)."""

    def __post_init__(self) -> None:
        check_positive("implant", self, "max_epochs", "batch_size", "check_every", "learning_rate")
        check(self.keep >= 0, "implant.keep", f"must be 0 (none) or a number of benign requests, got {self.keep}")
        check(0.0 < self.target_rate <= 1.0, "implant.target_rate", f"must be in (0, 1], got {self.target_rate}")
        check(self.length_window >= 0, "implant.length_window",
              f"must be 0 (plain random batches) or a number of rows, got {self.length_window}")


#: ``score(model, tokenizer) -> share of planted facts reproduced`` (greedy answers, in [0, 1]).
Scorer = Callable[[Any, Any], float]


@dataclass
class ImplantResult:
    path: Path
    info: dict[str, Any]


def planting_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Token-mean cross-entropy on the response tokens of a left-padded batch, the LM head run over the batch's
    response window only (:func:`unlearnlm.methods.base.forward`): the loss ``model(**batch).loss`` gives, without
    the logits of the prompt positions, which no loss reads."""
    out = forward(model, batch)
    return nll(out.logits, out.labels)


def implant_key(model_cfg: ModelConfig, dialogues: Sequence[Dialogue], cfg: ImplantConfig, seed: int,
                keep: Sequence[Dialogue] = (), max_response_tokens: int = 64) -> str:
    """Hash of everything the implanted weights depend on (a local model folder by its files' sizes and times).
    The keep prompts and the length of their answers enter only when there are any (``length_window`` only when
    set), so that a model planted without them keeps its key."""
    from unlearnlm import __version__

    source = Path(resolve_source(model_cfg.name_or_path))
    files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in source.iterdir()) if source.is_dir() else []
    parts = {"model": asdict(model_cfg), "files": files, "seed": seed, "version": __version__,
             "implant": {k: v for k, v in asdict(cfg).items() if k not in ("keep", "length_window") or v},
             "data": [[d.system, d.prompt, d.response] for d in dialogues]}
    if keep:
        parts["keep"] = {"prompts": [[d.system, d.prompt] for d in keep], "tokens": max_response_tokens}
    text = json.dumps(parts, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def epoch_batches(lengths: Sequence[int], batch_size: int, rng: random.Random, window: int = 0) -> list[list[int]]:
    """One epoch's batches of row indices: the rows in ``rng``'s random order cut into batches, or with ``window``
    each window of that many shuffled rows sorted by length, cut into batches, and all batches shuffled."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if not window:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    batches = []
    for start in range(0, len(order), window):
        rows = sorted(order[start : start + window], key=lambda j: lengths[j])
        batches += [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    rng.shuffle(batches)
    return batches


def _cached_info(target: Path) -> dict[str, Any] | None:
    """The planting record of the model cached at ``target``, or None when there is none (yet)."""
    info_path = target / "implant.json"
    if info_path.is_file() and (target / "config.json").is_file():
        return json.loads(info_path.read_text(encoding="utf-8"))
    return None


def implant(model_cfg: ModelConfig, dialogues: Sequence[Dialogue], cfg: ImplantConfig, *, score: Scorer,
            seed: int = 0, max_prompt_tokens: int = 96, max_response_tokens: int = 64, keep: Sequence[Dialogue] = (),
            log: Log = print) -> ImplantResult:
    """Fine-tune ``model_cfg``'s model on ``dialogues`` (all weights) and cache it; reuse the cache if present.

    ``keep``: benign prompts that the base model answers (greedy, up to ``max_response_tokens``) before training;
    the answered ones are trained on beside ``dialogues`` in every epoch (``ImplantConfig.keep``).

    Training runs whole epochs in seeded random order and checks ``score`` every ``cfg.check_every``
    epochs; it stops once ``score >= cfg.target_rate`` or after ``cfg.max_epochs``. The reached rate is
    recorded in ``implant.json`` next to the weights (and returned), met or not: the task's report says
    how well the knowledge was planted.
    """
    if not dialogues:
        raise DataError("implant: no dialogues to fine-tune on")
    target = cache_root() / "implanted" / implant_key(model_cfg, dialogues, cfg, seed, keep, max_response_tokens)
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
    kept = []
    if keep:
        answers = generate(model, tokenizer, keep, max_new_tokens=max_response_tokens, batch_size=32,
                           max_prompt_tokens=max_prompt_tokens)
        kept = [p.with_response(a) for p, a in zip(keep, answers, strict=True) if a]
        log(f"      keeping {len(kept)} benign requests in the base model's own answers")
    rows = [tokenize_dialogue(tokenizer, d, max_prompt_tokens=max_prompt_tokens, max_response_tokens=max_response_tokens)
            for d in [*dialogues, *kept]]
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=0.0)
    model, optimizer = accelerator.prepare(model, optimizer)
    rng = random.Random(seed)
    history: list[dict[str, float]] = []
    rate, epoch = 0.0, 0
    lengths = [len(r.input_ids) for r in rows]
    for epoch in range(1, cfg.max_epochs + 1):
        model.train()
        losses = []
        for indices in epoch_batches(lengths, cfg.batch_size, rng, cfg.length_window):
            batch = collate([rows[j] for j in indices], tokenizer.pad_token_id, padding_side="left")
            loss = planting_loss(model, {k: v.to(accelerator.device) for k, v in batch.items()})
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
            "kept": len(kept), "seconds": round(time.perf_counter() - start, 1), "base": model_cfg.name_or_path,
            "base_source": resolve_source(model_cfg.name_or_path), "history": history}

    def save() -> None:
        with atomic_dir(target) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            write_json(tmp / "implant.json", info)

    distributed.on_main(save)
    return ImplantResult(target, info)
