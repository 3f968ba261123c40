"""Cluster the expected outputs in the frozen original's representation space.

The paper's positive loss pulls each forget prompt's output toward "the cluster mean of expected
outputs". Here: represent every expected answer by the original model's mean response-position hidden
state (:func:`unlearnlm.methods.base.original_states`), k-means them, and assign each forget prompt to the
cluster of its nearest expected prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans

from unlearnlm.data.formatting import length_batches, render_prompt
from unlearnlm.data.records import Dialogue
from unlearnlm.models import Reference


@torch.no_grad()
def prompt_states(
    reference: Reference, tokenizer, dialogues: Sequence[Dialogue], *, layer: int, max_prompt_tokens: int,
    batch_size: int, device: torch.device,
) -> torch.Tensor:
    """Hidden state at the last prompt token (the one that decides the answer's first token): (N, H). Prompts are
    batched by length, so that a batch pads little; the rows come back in the order of ``dialogues``."""
    every = [tokenizer(render_prompt(tokenizer, d), add_special_tokens=False)["input_ids"][-max_prompt_tokens:]
             for d in dialogues]
    states: list[torch.Tensor | None] = [None] * len(every)
    for picked in length_batches([len(x) for x in every], batch_size):
        ids = [every[i] for i in picked]
        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)  # (B, T)
        mask = torch.zeros_like(input_ids)
        for row, x in enumerate(ids):  # right padding: the last real token sits at len - 1
            input_ids[row, : len(x)] = torch.tensor(x)
            mask[row, : len(x)] = 1
        _, hidden = reference(input_ids.to(device), mask.to(device), hidden_layer=layer, logits_to_keep=1)  # (B, T, H)
        for row, i in enumerate(picked):
            states[i] = hidden[row, len(ids[row]) - 1].float()  # (H,): the row's last real token
    return torch.stack(states)


@dataclass
class Clusters:
    """k-means result on expected outputs."""

    labels: np.ndarray  # (N_expected,) cluster of each expected output
    centroids: torch.Tensor  # (K, H) cluster means (of unit-normalised states)
    medoids: list[int]  # index of the expected output nearest each centroid


def cluster_outputs(states: torch.Tensor, k: int, seed: int) -> Clusters:
    """k-means (cosine geometry: states are unit-normalised first), K clamped to the distinct sample count."""
    if len(states) == 0:
        raise ValueError("cannot cluster zero expected outputs")
    unit = F.normalize(states.float(), dim=-1).cpu().numpy()  # (N, H)
    distinct = len(np.unique(unit.round(6), axis=0))  # duplicates cannot seed separate clusters
    k = max(1, min(k, distinct))
    km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(unit)
    centroids = torch.from_numpy(km.cluster_centers_).float()  # (K, H)
    medoids = []
    for c in range(k):
        members = np.flatnonzero(km.labels_ == c)
        distances = np.linalg.norm(unit[members] - km.cluster_centers_[c], axis=1)
        medoids.append(int(members[np.argmin(distances)]))
    return Clusters(labels=km.labels_, centroids=centroids, medoids=medoids)


def assign_nearest(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """For each query row, the index of the key row with the highest cosine similarity: (N_q,)."""
    sims = F.normalize(queries.float(), dim=-1) @ F.normalize(keys.float(), dim=-1).T  # (N_q, N_k)
    return sims.argmax(dim=-1)


def match_nearest(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Pair each query row with a key row by cosine similarity, most similar pairs first, each key used at most
    ``ceil(N_q / N_k)`` times: (N_q,) key indices.

    Unlike :func:`assign_nearest`, a few "hub" keys cannot take every query: the matching spreads over the keys
    while keeping each query near its partner (greedy on the sorted similarities).
    """
    sims = F.normalize(queries.float(), dim=-1) @ F.normalize(keys.float(), dim=-1).T  # (N_q, N_k)
    n_q, n_k = sims.shape
    cap = -(-n_q // n_k)
    partner = torch.full((n_q,), -1, dtype=torch.long)
    uses = torch.zeros(n_k, dtype=torch.long)
    matched = 0
    for flat in sims.flatten().argsort(descending=True).tolist():
        q, k = divmod(flat, n_k)
        if partner[q] < 0 and uses[k] < cap:
            partner[q] = k
            uses[k] += 1
            matched += 1
            if matched == n_q:  # every query has its partner: the rest of the pairs cannot change anything
                break
    return partner
