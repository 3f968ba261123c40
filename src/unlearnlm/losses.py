"""Loss functions: pure tensor math, no model calls.

Conventions: ``logits`` are (B, T, V) as returned by a causal LM for ``input_ids`` (B, T); ``labels``
are (B, T) with ``IGNORE_INDEX`` on prompt and padding. Position t predicts token t+1, so every
function shifts once, here, and nowhere else. Hidden states are (B, T, H) and are read at the same
positions as the logits (the states that *produce* response tokens), via ``response_mask``.
Averages are over response tokens of the whole batch, so long answers are not under-weighted.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from unlearnlm.data.formatting import IGNORE_INDEX

_EPS = 1e-6


def _shift(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Align logits with the tokens they predict: (B, T-1, V), targets (B, T-1), mask (B, T-1)."""
    logits = logits[:, :-1, :]  # (B, T-1, V)
    targets = labels[:, 1:]  # (B, T-1)
    mask = (targets != IGNORE_INDEX).to(logits.dtype)  # (B, T-1)
    return logits, targets.clamp_min(0), mask


def first_tokens(mask: torch.Tensor, k: int) -> torch.Tensor:
    """``mask`` (B, T) kept on each row's first ``k`` response positions only (``k`` = 0: unchanged).

    A refusal is decided in the first few tokens of an answer; a mean over every response token dilutes them.
    """
    if k <= 0:
        return mask
    return mask * (mask.cumsum(dim=-1) <= k).to(mask.dtype)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over positions where ``mask`` is 1 (0 when the mask is empty)."""
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each response token: ((B, T-1) log p, (B, T-1) mask)."""
    logits, targets, mask = _shift(logits, labels)
    logp = torch.log_softmax(logits.float(), dim=-1)  # (B, T-1, V)
    picked = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, T-1)
    return picked * mask, mask


def sequence_logprob(logits: torch.Tensor, labels: torch.Tensor, first: int = 0) -> torch.Tensor:
    """Summed log-probability of each response: (B,) (``first`` > 0: of each row's first ``first`` response tokens)."""
    picked, mask = token_logprobs(logits, labels)
    return (picked * first_tokens(mask, first)).sum(dim=-1)


def nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Token-mean cross-entropy on response tokens (the usual SFT loss)."""
    picked, mask = token_logprobs(logits, labels)
    return -picked.sum() / mask.sum().clamp_min(1.0)


def unlikelihood(logits: torch.Tensor, labels: torch.Tensor, first: int = 0) -> torch.Tensor:
    """Bounded probability-space push-away: mean of -log(1 - p(y_t)) over response tokens (``first`` > 0: over
    each row's first ``first`` response tokens only).

    Unlike gradient ascent (-log p → ∞ as p → 0 never stops pulling), this goes to 0 as p(y_t) → 0,
    so once a bad token is unlikely its gradient vanishes (Welleck et al., 2019, arXiv 1908.04319).
    Example: p = 0.5 for every token gives log 2 ≈ 0.693.
    """
    picked, mask = token_logprobs(logits, labels)
    p = picked.exp().clamp(max=1.0 - _EPS)  # (B, T-1); masked positions are exp(0) = 1 → clamped
    return _masked_mean(-torch.log1p(-p), first_tokens(mask, first))


def sequence_unlikelihood(logits: torch.Tensor, labels: torch.Tensor, first: int = 0) -> torch.Tensor:
    """Unlikelihood of each response as a whole: mean over rows of -log(1 - P(y)), P(y) the product of its tokens'
    probabilities (``first`` > 0: of each row's first ``first`` response tokens only).

    :func:`unlikelihood` pushes every token's probability down given the tokens before it, so a forced sentence's
    later tokens, likely once its start is given whatever the prompt, carry most of its gradient. Here a row costs
    what its whole opening's probability costs: about P(y) while the model would rarely say it, growing without
    bound as it becomes the model's answer. Example: two tokens at p = 0.5 give P = 0.25 and -log 0.75 ≈ 0.288.
    """
    logp = sequence_logprob(logits, labels, first)  # (B,) log P(y)
    # Kept below log(1 - eps) in value only: a certain opening still gets the gradient that makes it less likely.
    logp = logp - (logp - math.log1p(-_EPS)).clamp_min(0.0).detach()
    rows = (labels[:, 1:] != IGNORE_INDEX).any(dim=-1).to(logp.dtype)  # rows with no response token cost nothing
    return _masked_mean(-torch.log(-torch.expm1(logp)), rows)


def forward_kl(policy_logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor, first: int = 0) -> torch.Tensor:
    """KL(p_ref || p_θ) per response token, averaged: the normal loss that keeps standard abilities (``first`` > 0:
    over each row's first ``first`` response tokens only).

    Yao et al. (arXiv 2310.10683) keep the unlearned model close to the original on normal data with
    this forward KL. Identical distributions give exactly 0.
    """
    policy_logits, _, mask = _shift(policy_logits, labels)
    ref_logits = ref_logits[:, :-1, :]  # (B, T-1, V)
    logp = torch.log_softmax(policy_logits.float(), dim=-1)  # (B, T-1, V)
    logq = torch.log_softmax(ref_logits.float(), dim=-1)  # (B, T-1, V)
    kl = (logq.exp() * (logq - logp)).sum(dim=-1)  # (B, T-1)
    return _masked_mean(kl, first_tokens(mask, first))


def adjusted_logits(logits: torch.Tensor, labels: torch.Tensor, beta: float) -> torch.Tensor:
    """UNDIAL's teacher (Dong et al., arXiv 2402.10052): the original's ``logits`` with ``beta`` taken off, at every
    position that predicts a response token, the logit of the token the answer has next; other positions unchanged.

    Distilling the model toward softmax of these logits lowers the forget answer's own next token by about
    ``beta`` nats against every alternative, while the alternatives keep the original's ranking: a bounded target,
    not an unbounded ascent. Returns float (B, T, V) logits aligned with the input positions.
    """
    out = logits.float().clone()
    following = labels[:, 1:]  # (B, T-1): the token position t predicts
    drop = (following != IGNORE_INDEX).to(out.dtype) * beta  # (B, T-1)
    out[:, :-1].scatter_add_(-1, following.clamp_min(0).unsqueeze(-1), -drop.unsqueeze(-1))
    return out


def forward_kl_topk(
    policy_logits: torch.Tensor, ref_logp: torch.Tensor, ref_index: torch.Tensor, labels: torch.Tensor, first: int = 0
) -> torch.Tensor:
    """:func:`forward_kl` from the original's top-k log-probabilities only, the rest of its mass lumped together.

    With S the original's k most likely tokens at a position, q its distribution and p the model's:
    KL ≈ Σ_{v∈S} q_v (log q_v - log p_v) + q_R (log q_R - log p_R), where q_R = 1 - Σ_S q and p_R = 1 - Σ_S p.
    Lumping the tail can only lower KL (log-sum inequality), so this is a lower bound that is exact when S holds
    every token, and 0 whenever the model equals the original. It lets the original's outputs on normal data be
    computed once before training instead of at every step.

    Args:
        policy_logits: (B, T, V) the model's logits.
        ref_logp: (B, T, k) the original's log-probabilities of its top-k tokens at each position.
        ref_index: (B, T, k) those tokens' ids.
        labels: (B, T) response labels.
        first: > 0: average over each row's first ``first`` response tokens only.
    """
    policy_logits, _, mask = _shift(policy_logits, labels)  # (B, T-1, V), mask (B, T-1)
    logq = ref_logp[:, :-1].float()  # (B, T-1, k)
    logp = torch.log_softmax(policy_logits.float(), dim=-1).gather(-1, ref_index[:, :-1].long())  # (B, T-1, k)
    q = logq.exp()
    head = (q * (logq - logp)).sum(dim=-1)  # (B, T-1)
    q_rest = (1.0 - q.sum(dim=-1)).clamp(_EPS, 1.0)  # (B, T-1)
    p_rest = (1.0 - logp.exp().sum(dim=-1)).clamp(_EPS, 1.0)  # (B, T-1)
    tail = q_rest * (q_rest.log() - p_rest.log())  # (B, T-1)
    return _masked_mean(head + tail, first_tokens(mask, first))


def bounded_divergence(
    policy_logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor, margin: float
) -> torch.Tensor:
    """Push the output distribution away from the original's, up to ``margin`` nats of KL per token.

    mean_t relu(margin - KL(p_ref || p_θ)_t): equals ``margin`` at the start (θ = ref) and 0 once every
    bad position has moved ``margin`` nats away, so it cannot diverge the way gradient ascent does.
    """
    policy_logits, _, mask = _shift(policy_logits, labels)
    logp = torch.log_softmax(policy_logits.float(), dim=-1)  # (B, T-1, V)
    logq = torch.log_softmax(ref_logits[:, :-1, :].float(), dim=-1)  # (B, T-1, V)
    kl = (logq.exp() * (logq - logp)).sum(dim=-1)  # (B, T-1)
    return _masked_mean(F.relu(margin - kl), mask)


def bounded_nll(logits: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Gradient ascent that stops at ``margin``: mean over sequences of relu(margin - NLL per token).

    Each old answer's mean negative log-likelihood rises until it reaches ``margin`` nats, then its
    gradient is 0. Set the bound near the NLL the model gives answers it never saw, and what membership
    inference reads (the answer's loss) ends up where never-trained data sits, neither above nor below.
    """
    picked, mask = token_logprobs(logits, labels)  # (B, T-1)
    per_sequence = -picked.sum(dim=-1) / mask.sum(dim=-1).clamp_min(1.0)  # (B,)
    return F.relu(margin - per_sequence).mean()


def state_mask(labels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, T) mask of hidden-state positions that produce response tokens (labels shifted left)."""
    mask = torch.zeros(labels.shape, dtype=dtype, device=labels.device)  # (B, T)
    mask[:, :-1] = (labels[:, 1:] != IGNORE_INDEX).to(dtype)
    return mask


def representation_distance(
    hidden: torch.Tensor, ref_hidden: torch.Tensor, labels: torch.Tensor, margin: float
) -> torch.Tensor:
    """Hinge on the cosine distance between the model's and the original's response states.

    mean_t relu(margin - (1 - cos(h_t, h_ref_t))) over response positions. It is ``margin`` while the
    representations agree and 0 once each has turned at least ``margin`` away (cosine distance lies in
    [0, 2]), so the push is bounded: the paper's distance loss as a representation-space margin.
    """
    mask = state_mask(labels, hidden.dtype)  # (B, T)
    distance = 1.0 - F.cosine_similarity(hidden.float(), ref_hidden.float(), dim=-1, eps=_EPS)  # (B, T)
    return _masked_mean(F.relu(margin - distance), mask)


def pooled_states(hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean response-position hidden state of each dialogue: (B, H)."""
    mask = state_mask(labels, hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)  # (B, H)


def cluster_pull(hidden: torch.Tensor, labels: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Pull each dialogue's pooled response state toward its assigned cluster mean.

    Args:
        hidden: (B, T, H) states of the model being unlearned.
        labels: (B, T) response labels.
        centroids: (B, H) the cluster mean of expected outputs assigned to each row.

    Returns:
        mean_b (1 - cos(pool(h_b), c_b)), in [0, 2]; 0 when every pooled state points at its mean.
    """
    pooled = pooled_states(hidden.float(), labels)  # (B, H)
    return (1.0 - F.cosine_similarity(pooled, centroids.float(), dim=-1, eps=_EPS)).mean()


def anchor_distance(states: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """How far states moved from where the original held them, relative to the original's size.

    Args:
        states: (B, H) the model's states (e.g. at each row's last prompt token).
        anchors: (B, H) the original's states at the same positions.

    Returns:
        mean_b ||s_b - a_b||² / ||a_b||²: 0 where every state is the original's, 1 for a state moved by its own norm.
    """
    states, anchors = states.float(), anchors.float()
    return ((states - anchors).pow(2).sum(-1) / anchors.pow(2).sum(-1).clamp_min(_EPS)).mean()


def npo(policy_seq_logp: torch.Tensor, ref_seq_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """Negative Preference Optimization (Zhang et al., arXiv 2404.05868).

    -(2/β) · mean log σ(-β · (log π_θ(y|x) - log π_ref(y|x))). Equals (2/β)·log 2 at θ = ref and
    decays to 0 as the forget answers become unlikely, a bounded form of gradient ascent.
    """
    log_ratio = policy_seq_logp - ref_seq_logp  # (B,)
    return -(2.0 / beta) * F.logsigmoid(-beta * log_ratio).mean()


def simnpo(logits: torch.Tensor, labels: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """SimNPO (Fan et al., arXiv 2410.07163): NPO without a reference model, on the length-normalised log-likelihood.

    -(2/β) · mean log σ(-(β/|y|) · log π_θ(y|x) - γ) = (2/β) · mean log(1 + exp((β/|y|) · log π_θ(y|x) + γ)).
    Example: two-token vocabulary, p = 0.5 at every response token, so (1/|y|) log π = -log 2; with β = 2.5 and γ = 0
    the loss is 0.8 · log(1 + 2^-2.5) = 0.130223, and with γ = 1 it is 0.8 · log(1 + e^(1 - 2.5 log 2)) = 0.313919.
    It falls toward 0 as the forget answers become unlikely, and no sequence counts more for being long.
    """
    picked, mask = token_logprobs(logits, labels)  # (B, T-1)
    mean_logp = picked.sum(dim=-1) / mask.sum(dim=-1).clamp_min(1.0)  # (B,)
    return -(2.0 / beta) * F.logsigmoid(-beta * mean_logp - gamma).mean()


def uniform_kl(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Maximum-entropy forgetting (Yuan et al., arXiv 2410.08109): KL(p_θ || uniform) per response token, averaged.

    KL(p || U) = log V - H(p), so minimising it maximises the entropy of each next-token distribution: the model
    stops preferring any continuation of a forget prompt, the behaviour of a model that never saw the answer,
    instead of being pushed toward some other (possibly invented) answer. Example: p = (0.75, 0.25) gives
    log 2 + 0.75 log 0.75 + 0.25 log 0.25 = 0.130812; a uniform p gives 0.
    """
    logits, _, mask = _shift(logits, labels)  # (B, T-1, V), mask (B, T-1)
    logp = torch.log_softmax(logits.float(), dim=-1)  # (B, T-1, V)
    kl = (logp.exp() * logp).sum(dim=-1) + math.log(logits.shape[-1])  # (B, T-1): -H(p) + log V
    return _masked_mean(kl, mask)


def dpo(chosen_logp: torch.Tensor, rejected_logp: torch.Tensor, ref_chosen_logp: torch.Tensor,
        ref_rejected_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """Direct Preference Optimization (Rafailov et al., arXiv 2305.18290) as unlearning uses it (IdkDPO).

    -(2/β) · mean log σ(β · [(log π_θ(y_w|x) - log π_ref(y_w|x)) - (log π_θ(y_l|x) - log π_ref(y_l|x))]), all
    arguments (B,) summed sequence log-probabilities, y_w the preferred (refusal) and y_l the rejected (forget)
    answer. The 2/β factor is the unlearning literature's (TOFU's IdkDPO, open-unlearning), matching :func:`npo`;
    Rafailov et al. omit it (a constant factor). At θ = ref the loss is (2/β) · log 2, 13.862944 for β = 0.1.
    """
    margin = (chosen_logp - ref_chosen_logp) - (rejected_logp - ref_rejected_logp)  # (B,)
    return -(2.0 / beta) * F.logsigmoid(beta * margin).mean()


def answer_preservation(answer_logp: torch.Tensor, refusal_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """Answer preservation (Yuan et al., arXiv 2410.08109): on retain prompts, keep the answer above a refusal.

    -(1/β) · mean log σ(β · (log π_θ(y|x) - log π_θ(y_idk|x))), both arguments (B,) summed sequence
    log-probabilities of the same prompts. Training on refusals tends to spread refusing to every prompt; this
    term pushes a refusal's likelihood down and the real answer's up on prompts that must still be answered,
    and fades once the answer is well ahead. Equal log-probabilities give (1/β) · log 2 (6.931472 for β = 0.1);
    an answer 2 log 3 nats ahead gives 10 · log(1 + 3^-0.2) = 5.893086.
    """
    return -(1.0 / beta) * F.logsigmoid(beta * (answer_logp - refusal_logp)).mean()


def _per_position_mean(values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over response-producing positions of (B, T) values, or of (B, T, L) values averaged over layers."""
    if values.dim() == 3:
        values = values.mean(dim=-1)  # (B, T): every layer has the same positions
    return _masked_mean(values, state_mask(labels, values.dtype))


def state_mse(hidden: torch.Tensor, target: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean squared error between hidden states and a target, over response positions: RMU's two terms.

    ``hidden`` (B, T, H); ``target`` broadcasts to it: the original's states (B, T, H) to keep, or a steering vector
    (H,) to move toward (Li et al., arXiv 2403.03218). Each position contributes the mean over H of the squared
    difference. Example: states (1, 1) at both response positions against the target (3, 1) give (4 + 0) / 2 = 2.
    """
    per_position = (hidden.float() - target.float()).pow(2).mean(dim=-1)  # (B, T)
    return _per_position_mean(per_position, labels)


def rerouting(hidden: torch.Tensor, ref_hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Representation rerouting (Zou et al., arXiv 2406.04313): mean of ReLU(cos(h_θ, h_orig)) over response positions.

    ``hidden`` and ``ref_hidden`` are (B, T, H) or (B, T, L, H) over several layers (averaged over them). The loss
    is 1 while the states agree and 0 once each is orthogonal to, or points away from, the original's: it reroutes
    harmful states without asking them to become anything in particular. Example: (1, 0) against (1, 1) gives
    cos = 1/√2 = 0.707107; (1, -1) against (1, 1) gives 0, as does (-1, -1).
    """
    cos = F.cosine_similarity(hidden.float(), ref_hidden.float(), dim=-1, eps=_EPS)  # (B, T) or (B, T, L)
    return _per_position_mean(F.relu(cos), labels)


def state_distance(hidden: torch.Tensor, ref_hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean L2 distance ||h_θ - h_orig||₂ over response positions (and layers): circuit breakers' retain term.

    0 when the model's states equal the original's. Example: (1, 0) against (1, 1) at both positions gives 1;
    (4, 5) against (1, 1) gives 5.
    """
    distance = torch.linalg.vector_norm(hidden.float() - ref_hidden.float(), dim=-1)  # (B, T) or (B, T, L)
    return _per_position_mean(distance, labels)


def first_response_states(hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each row's state at the last prompt position, the one that produces the first response token: (B, ...) from
    (B, T, ...). Example: labels (ignore, 0, 1) pick position 0."""
    first = state_mask(labels, torch.float32).argmax(dim=1)  # (B,): the first state that produces a response token
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), first]


def pairwise_alignment(states: torch.Tensor) -> torch.Tensor:
    """Mean of 1 - cos(s_i, s_j) over pairs of rows i != j: 0 when every row points the same way. RepBend's cosine
    term (Yousefpour et al., arXiv 2504.01550) on the flagged prompts' states, which pulls them together.

    ``states`` (B, H), or (B, L, H) averaged over layers. Example: (1, 0), (0, 1), (1, 1) have cosines 0, 1/√2 and
    1/√2, so the loss is (1 + 2 · (1 - 1/√2)) / 3 = 0.528595. A single row has no pair: 0.
    """
    if states.shape[0] < 2:
        return states.new_zeros((), dtype=torch.float32)
    unit = F.normalize(states.float(), dim=-1, eps=_EPS)  # (B, [L,] H)
    unit = unit.unsqueeze(1) if unit.dim() == 2 else unit
    cos = torch.einsum("ilh,jlh->lij", unit, unit)  # (L, B, B)
    off_diagonal = ~torch.eye(states.shape[0], dtype=torch.bool, device=states.device)  # (B, B)
    return (1.0 - cos[:, off_diagonal]).mean()
