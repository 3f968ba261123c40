"""Each loss on hand-made tensors; expected values worked out in the comments."""

import math

import pytest
import torch

from unlearnlm import losses
from unlearnlm.data.formatting import IGNORE_INDEX

# Two-token vocabulary, three positions; the response is tokens 1 and 2 (labels [ignore, 0, 1]).
LABELS = torch.tensor([[IGNORE_INDEX, 0, 1]])
UNIFORM = torch.zeros(1, 3, 2)  # p = (0.5, 0.5) everywhere
SKEWED = torch.tensor([[[math.log(3.0), 0.0]] * 3])  # q = (0.75, 0.25) everywhere


def test_nll_and_sequence_logprob_of_uniform_model():
    # Each response token has p = 0.5: NLL = log 2 per token, sequence log p = 2 log 0.5.
    assert losses.nll(UNIFORM, LABELS).item() == pytest.approx(math.log(2))
    assert losses.sequence_logprob(UNIFORM, LABELS).item() == pytest.approx(2 * math.log(0.5))


def test_nll_ignores_prompt_and_padding():
    # A wildly wrong logit on the prompt position (which predicts nothing trained) changes nothing.
    logits = UNIFORM.clone()
    logits[0, 2] = torch.tensor([50.0, -50.0])  # position 2 predicts no token: outside the shifted range
    assert losses.nll(logits, LABELS).item() == pytest.approx(math.log(2))


def test_unlikelihood_is_minus_log_one_minus_p():
    # -log(1 - 0.5) = log 2 per token.
    assert losses.unlikelihood(UNIFORM, LABELS).item() == pytest.approx(math.log(2))
    # Bounded below by 0 and vanishing as p(y) -> 0: a confident "other token" costs almost nothing.
    away = torch.tensor([[[-20.0, 20.0], [20.0, -20.0], [0.0, 0.0]]])  # p(target) ~ e^-40 where it counts
    assert losses.unlikelihood(away, LABELS).item() == pytest.approx(0.0, abs=1e-6)


def test_undial_adjusted_logits_worked_values():
    # β = ln 3 off the next answer token: position 0 predicts token 0, so (0, 0) -> (-ln 3, 0), a teacher of
    # (.25, .75); position 1 predicts token 1 -> (.75, .25); position 2 predicts nothing and is left alone.
    teacher = losses.adjusted_logits(UNIFORM, LABELS, math.log(3.0))
    ln3 = math.log(3.0)
    assert teacher[0].flatten().tolist() == pytest.approx([-ln3, 0.0, 0.0, -ln3, 0.0, 0.0])
    # KL(teacher || uniform model) per position: .25 ln .5 + .75 ln 1.5 = 0.130812, as in the forward-KL value below.
    assert losses.forward_kl(UNIFORM, teacher, LABELS).item() == pytest.approx(0.130812, abs=1e-5)
    assert losses.forward_kl(teacher, teacher, LABELS).item() == pytest.approx(0.0, abs=1e-6)
    assert torch.equal(losses.adjusted_logits(UNIFORM, torch.full_like(LABELS, IGNORE_INDEX), 5.0), UNIFORM)


def test_forward_kl_worked_value():
    # KL(q || p) with q = (.75, .25), p = (.5, .5): .75 ln 1.5 + .25 ln .5 = 0.130812
    assert losses.forward_kl(UNIFORM, SKEWED, LABELS).item() == pytest.approx(0.130812, abs=1e-5)
    assert losses.forward_kl(SKEWED, SKEWED, LABELS).item() == pytest.approx(0.0, abs=1e-7)


def test_bounded_divergence_is_a_hinge_on_kl():
    assert losses.bounded_divergence(SKEWED, SKEWED, LABELS, margin=0.5).item() == pytest.approx(0.5)
    assert losses.bounded_divergence(UNIFORM, SKEWED, LABELS, margin=0.5).item() == pytest.approx(0.5 - 0.130812, abs=1e-5)
    assert losses.bounded_divergence(UNIFORM, SKEWED, LABELS, margin=0.1).item() == pytest.approx(0.0)


def test_representation_distance_hinge():
    # States at positions 0 and 1 produce response tokens; position 2 does not.
    ref = torch.tensor([[[1.0, 1.0], [1.0, 1.0], [5.0, -3.0]]])
    same = ref.clone()
    assert losses.representation_distance(same, ref, LABELS, margin=0.5).item() == pytest.approx(0.5)
    # [1, 0] vs [1, 1]: cos = 1/sqrt 2, distance 0.292893 -> hinge 0.5 - 0.292893 = 0.207107
    turned = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]]])
    assert losses.representation_distance(turned, ref, LABELS, margin=0.5).item() == pytest.approx(0.207107, abs=1e-5)
    # Orthogonal: distance 1 >= margin, no push left.
    ortho = torch.tensor([[[1.0, -1.0], [1.0, -1.0], [0.0, 0.0]]])
    assert losses.representation_distance(ortho, ref, LABELS, margin=0.5).item() == pytest.approx(0.0)


def test_cluster_pull_uses_pooled_response_states():
    # pooled = mean([1, 0], [0, 1]) = [.5, .5]; centroid [1, 0]: 1 - cos = 1 - 1/sqrt 2 = 0.292893
    hidden = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [100.0, 100.0]]])
    centroid = torch.tensor([[1.0, 0.0]])
    assert losses.cluster_pull(hidden, LABELS, centroid).item() == pytest.approx(0.292893, abs=1e-5)
    assert losses.cluster_pull(hidden, LABELS, torch.tensor([[3.0, 3.0]])).item() == pytest.approx(0.0, abs=1e-6)


def test_npo_at_reference_and_when_unlearned():
    same = torch.tensor([-5.0, -7.0])
    assert losses.npo(same, same, beta=0.1).item() == pytest.approx(20 * math.log(2), rel=1e-5)  # (2/β) log 2
    assert losses.npo(same - 500, same, beta=0.1).item() == pytest.approx(0.0, abs=1e-6)


def test_gradients_flow_only_through_the_policy():
    logits = UNIFORM.clone().requires_grad_(True)
    ref = SKEWED.clone().requires_grad_(True)
    losses.forward_kl(logits, ref.detach(), LABELS).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_bounded_nll_stops_at_the_margin():
    # Uniform model: NLL = log 2 ≈ 0.693 per token. Below the bound the loss is the gap, above it is 0.
    assert losses.bounded_nll(UNIFORM, LABELS, 1.0).item() == pytest.approx(1.0 - math.log(2))
    assert losses.bounded_nll(UNIFORM, LABELS, 0.5).item() == 0.0
    # SKEWED: targets 0 then 1 have p = 0.75 and 0.25: NLL = (log(4/3) + log 4) / 2 per token.
    expected = 2.0 - (math.log(4 / 3) + math.log(4)) / 2
    assert losses.bounded_nll(SKEWED, LABELS, 2.0).item() == pytest.approx(expected)


def test_forward_kl_topk_is_exact_with_every_token_and_a_lower_bound_with_fewer():
    torch.manual_seed(0)
    policy, ref = torch.randn(2, 5, 7), torch.randn(2, 5, 7)  # (B, T, V)
    labels = torch.tensor([[-100, -100, 3, 4, 5], [-100, 1, 2, 3, -100]])
    exact = losses.forward_kl(policy, ref, labels)
    full = torch.log_softmax(ref, -1).topk(7, dim=-1)
    torch.testing.assert_close(losses.forward_kl_topk(policy, full.values, full.indices, labels), exact)
    top2 = torch.log_softmax(ref, -1).topk(2, dim=-1)
    approx = losses.forward_kl_topk(policy, top2.values, top2.indices, labels)
    assert 0 < approx < exact
    same = losses.forward_kl_topk(ref, top2.values, top2.indices, labels)  # model == original
    assert same == pytest.approx(0.0, abs=1e-5)


def test_forward_kl_topk_worked_value():
    # V = 3, one scored position. q = (0.5, 0.3, 0.2), p = (0.2, 0.2, 0.6); top-1 of q is token 0.
    # head = 0.5·ln(0.5/0.2) = 0.458145; tail = 0.5·ln(0.5/0.8) = -0.235002; total 0.223143.
    q, p = torch.tensor([0.5, 0.3, 0.2]).log(), torch.tensor([0.2, 0.2, 0.6]).log()
    policy = torch.stack([p, p]).unsqueeze(0)  # (1, 2, 3): position 0 predicts token 1
    ref_logp, ref_index = torch.stack([q[:1], q[:1]]).unsqueeze(0), torch.zeros(1, 2, 1, dtype=torch.long)
    labels = torch.tensor([[-100, 2]])
    value = losses.forward_kl_topk(policy, ref_logp, ref_index, labels)
    assert value == pytest.approx(0.5 * math.log(0.5 / 0.2) + 0.5 * math.log(0.5 / 0.8), abs=1e-5)


def test_simnpo_worked_values():
    # Uniform model: (1/|y|) log π = -log 2. β = 2.5: 0.8·log(1 + 2^-2.5) = 0.130223;
    # γ = 1: 0.8·log(1 + e^(1 - 2.5 log 2)) = 0.313919.
    assert losses.simnpo(UNIFORM, LABELS, beta=2.5, gamma=0.0).item() == pytest.approx(0.130223, abs=1e-5)
    assert losses.simnpo(UNIFORM, LABELS, beta=2.5, gamma=1.0).item() == pytest.approx(0.313919, abs=1e-5)
    # Length-normalised: a row with twice the response tokens at the same per-token p costs the same.
    long_logits, long_labels = torch.zeros(1, 5, 2), torch.tensor([[IGNORE_INDEX, 0, 1, 0, 1]])
    assert losses.simnpo(long_logits, long_labels, 2.5, 0.0).item() == pytest.approx(0.130223, abs=1e-5)
    # Confidently unlikely answers: (β/|y|) log π -> -∞, the loss -> 0.
    away = torch.tensor([[[-20.0, 20.0], [20.0, -20.0], [0.0, 0.0]]])
    assert losses.simnpo(away, LABELS, 2.5, 0.0).item() == pytest.approx(0.0, abs=1e-6)


def test_uniform_kl_is_log_v_minus_entropy():
    # q = (.75, .25): log 2 + .75 log .75 + .25 log .25 = 0.130812; the uniform distribution is the minimum, 0.
    assert losses.uniform_kl(SKEWED, LABELS).item() == pytest.approx(0.130812, abs=1e-5)
    assert losses.uniform_kl(UNIFORM, LABELS).item() == pytest.approx(0.0, abs=1e-7)
    # Only response positions count: a one-hot prompt position (KL = log 2) changes nothing.
    logits = UNIFORM.clone()
    logits[0, 2] = torch.tensor([50.0, -50.0])
    assert losses.uniform_kl(logits, LABELS).item() == pytest.approx(0.0, abs=1e-7)


def test_dpo_at_reference_and_when_the_refusal_wins():
    same = torch.tensor([-5.0, -7.0])
    assert losses.dpo(same, same, same, same, beta=0.1).item() == pytest.approx(20 * math.log(2), rel=1e-5)
    # Refusal 300 nats more likely and forget answer 300 nats less likely than under the original: margin 600.
    assert losses.dpo(same + 300, same - 300, same, same, beta=0.1).item() == pytest.approx(0.0, abs=1e-5)
    # Margin -10 with β = 0.1: 20·log(1 + e) = 26.266... (the wrong way round costs more than log 2).
    worse = losses.dpo(same - 10, same, same, same, beta=0.1).item()
    assert worse == pytest.approx(20 * math.log(1 + math.e), rel=1e-5)


def test_answer_preservation_worked_values():
    answer = torch.tensor([-4.0])
    assert losses.answer_preservation(answer, answer, beta=0.1).item() == pytest.approx(10 * math.log(2), rel=1e-5)
    # The answer 2 log 3 nats ahead of the refusal: 10·log(1 + 3^-0.2) = 5.893086.
    ahead = losses.answer_preservation(answer, answer - 2 * math.log(3), beta=0.1).item()
    assert ahead == pytest.approx(5.893086, abs=1e-5)


def test_state_mse_to_the_original_and_to_a_steering_vector():
    # Positions 0 and 1 produce response tokens; position 2 (any value) does not count.
    hidden = torch.tensor([[[1.0, 1.0], [1.0, 1.0], [50.0, -50.0]]])
    assert losses.state_mse(hidden, torch.tensor([3.0, 1.0]), LABELS).item() == pytest.approx(2.0)  # (4 + 0) / 2
    assert losses.state_mse(hidden, hidden.clone(), LABELS).item() == 0.0


def test_rerouting_is_relu_of_cosine():
    ref = torch.tensor([[[1.0, 1.0], [1.0, 1.0], [5.0, -3.0]]])
    assert losses.rerouting(ref.clone(), ref, LABELS).item() == pytest.approx(1.0)
    turned = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]]])
    assert losses.rerouting(turned, ref, LABELS).item() == pytest.approx(1 / math.sqrt(2), abs=1e-6)
    orthogonal_then_opposite = torch.tensor([[[1.0, -1.0], [-1.0, -1.0], [0.0, 0.0]]])
    assert losses.rerouting(orthogonal_then_opposite, ref, LABELS).item() == pytest.approx(0.0, abs=1e-6)
    # Two layers (B, T, L, H): the mean over layers, here of 1 (unchanged) and 1/√2 (turned).
    two = losses.rerouting(torch.stack([ref, turned], dim=2), torch.stack([ref, ref], dim=2), LABELS)
    assert two.item() == pytest.approx((1 + 1 / math.sqrt(2)) / 2, abs=1e-6)


def test_state_distance_is_mean_l2():
    ref = torch.tensor([[[1.0, 1.0], [1.0, 1.0], [0.0, 0.0]]])
    assert losses.state_distance(ref.clone(), ref, LABELS).item() == 0.0
    moved = torch.tensor([[[1.0, 0.0], [4.0, 5.0], [9.0, 9.0]]])  # distances 1 and 5; position 2 ignored
    assert losses.state_distance(moved, ref, LABELS).item() == pytest.approx(3.0)
    # Its gradient at the original is 0, not NaN (the norm's subgradient at 0).
    at_ref = ref.clone().requires_grad_(True)
    losses.state_distance(at_ref, ref, LABELS).backward()
    assert torch.equal(at_ref.grad, torch.zeros_like(ref))


def test_first_response_states_pick_the_last_prompt_position():
    hidden = torch.arange(12.0).reshape(2, 3, 2)  # (B, T, H)
    labels = torch.tensor([[IGNORE_INDEX, 0, 1], [IGNORE_INDEX, IGNORE_INDEX, 1]])
    # Row 0's first response token is at 1, produced by position 0; row 1's at 2, produced by position 1.
    assert torch.equal(losses.first_response_states(hidden, labels), torch.tensor([[0.0, 1.0], [8.0, 9.0]]))


def test_pairwise_alignment_worked_value():
    states = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    expected = (1 + 2 * (1 - 1 / math.sqrt(2))) / 3  # 0.528595
    assert losses.pairwise_alignment(states).item() == pytest.approx(expected, abs=1e-6)
    assert losses.pairwise_alignment(torch.tensor([[2.0, 1.0], [4.0, 2.0]])).item() == pytest.approx(0.0, abs=1e-6)
    # Two layers (B, L, H): the mean of the two layers' values.
    two = torch.stack([states, states.flip(-1)[[0, 0, 0]]], dim=1)  # layer 1: every row (0, 1), aligned
    assert losses.pairwise_alignment(two).item() == pytest.approx(expected / 2, abs=1e-6)
    assert losses.pairwise_alignment(states[:1]).item() == 0.0


def test_first_tokens_keeps_each_rows_opening():
    # Row 0's response starts at column 1, row 1's at column 3 (left padding): first 2 of each survive.
    mask = torch.tensor([[0.0, 1, 1, 1, 1], [0, 0, 0, 1, 1]])
    assert losses.first_tokens(mask, 2).tolist() == [[0, 1, 1, 0, 0], [0, 0, 0, 1, 1]]
    assert losses.first_tokens(mask, 0) is mask


def test_opening_losses_average_the_first_positions_only():
    # Per-token KL on SKEWED vs UNIFORM is 0.130812 everywhere; make the second response token's KL 0 by giving the
    # policy the reference's logits there, so the opening (first token) mean stays 0.130812 and the full mean halves.
    policy = UNIFORM.clone()
    policy[0, 1] = SKEWED[0, 1]  # position 1 predicts the second response token
    assert losses.forward_kl(policy, SKEWED, LABELS).item() == pytest.approx(0.130812 / 2, abs=1e-5)
    assert losses.forward_kl(policy, SKEWED, LABELS, first=1).item() == pytest.approx(0.130812, abs=1e-5)
    top = torch.log_softmax(SKEWED, -1).topk(2, dim=-1)
    assert losses.forward_kl_topk(policy, top.values, top.indices, LABELS, first=1).item() == pytest.approx(
        0.130812, abs=1e-5)
    # Unlikelihood: the first token has p = 0.75 under SKEWED (-log 0.25), the second p = 0.25 (-log 0.75).
    assert losses.unlikelihood(SKEWED, LABELS, first=1).item() == pytest.approx(math.log(4))
    assert losses.unlikelihood(SKEWED, LABELS).item() == pytest.approx((math.log(4) + math.log(4 / 3)) / 2)


def test_sequence_unlikelihood_prices_the_opening_as_a_whole():
    # Two response tokens at p = 0.5: P = 0.25, -log(1 - 0.25) = log(4/3); only the first: -log(1 - 0.5) = log 2.
    assert losses.sequence_unlikelihood(UNIFORM, LABELS).item() == pytest.approx(math.log(4 / 3))
    assert losses.sequence_unlikelihood(UNIFORM, LABELS, first=1).item() == pytest.approx(math.log(2))
    # SKEWED: the first token p = 0.75, the second 0.25: P = 0.1875; per token it would be (log 4 + log 4/3) / 2.
    assert losses.sequence_unlikelihood(SKEWED, LABELS).item() == pytest.approx(-math.log(1 - 0.1875))
    # Rows are averaged; a row with no response token (all ignored) costs nothing and does not count.
    two = torch.cat([UNIFORM, SKEWED])
    labels = torch.cat([LABELS, torch.full_like(LABELS, IGNORE_INDEX)])
    assert losses.sequence_unlikelihood(two, labels).item() == pytest.approx(math.log(4 / 3))
    # A certain opening is clamped, not infinite, and its gradient pushes the opening's probability down.
    sure = torch.tensor([[[8.0, -8.0], [-8.0, 8.0], [0.0, 0.0]]], requires_grad=True)  # 1 - P(y) ~ 2e-7 < eps
    loss = losses.sequence_unlikelihood(sure, LABELS)
    loss.backward()
    assert loss.item() == pytest.approx(-math.log(1e-6), rel=1e-3)  # the clamp
    assert sure.grad[0, 0, 0] > 0  # raising the logit of the forced token would raise the loss


def test_anchor_distance_is_the_squared_move_relative_to_the_originals_norm():
    # Row 1: moved by (0, -1) from (1, 1): 1 / 2. Row 2: moved by (0, 1) from (0, 1): 1 / 1. Mean 0.75.
    states, anchors = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    assert losses.anchor_distance(states, anchors).item() == pytest.approx(0.75)
    assert losses.anchor_distance(anchors, anchors).item() == 0.0
