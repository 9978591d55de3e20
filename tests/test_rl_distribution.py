"""TokenSequenceDistribution: packed per-token scores of one action per row."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from gea.rl.distribution import TokenSequenceDistribution, approximate_kl, pack_scores


def scored_batch() -> tuple[torch.Tensor, torch.Tensor]:
    # Row 0: a two-token action, then padding (id 9). Row 1: three tokens.
    token_ids = torch.tensor([[4, 5, 9], [1, 2, 3]])
    log_probs = torch.tensor([[-0.5, -1.0, 0.0], [-0.1, -0.2, -0.3]])
    entropy = torch.tensor([[0.6, 0.3, 0.0], [1.0, 0.5, 0.0]])
    log_allowed = torch.tensor([[math.log(2), math.log(4), 0.0], [math.log(3), math.log(3), 0.0]])
    return token_ids, pack_scores(token_ids, log_probs, entropy, log_allowed)


def test_logp_sums_positions():
    token_ids, inputs = scored_batch()
    logp = TokenSequenceDistribution.from_logits(inputs).logp(token_ids)
    assert logp.tolist() == pytest.approx([-1.5, -0.6])


def test_logp_rejects_other_tokens():
    token_ids, inputs = scored_batch()
    other = token_ids.clone()
    other[0, 0] = 7
    with pytest.raises(ValueError, match="scored on"):
        TokenSequenceDistribution.from_logits(inputs).logp(other)


def test_entropy_and_normalized_entropy():
    _, inputs = scored_batch()
    distribution = TokenSequenceDistribution.from_logits(inputs)
    assert distribution.entropy().tolist() == pytest.approx([0.9, 1.5])
    expected = [0.9 / (math.log(2) + math.log(4)), 1.5 / (2 * math.log(3))]
    assert distribution.normalized_entropy().tolist() == pytest.approx(expected)


def test_normalized_entropy_zero_when_forced():
    token_ids = torch.tensor([[3, 1]])
    zeros = torch.zeros(1, 2)
    distribution = TokenSequenceDistribution.from_logits(pack_scores(token_ids, zeros, zeros, zeros))
    assert distribution.normalized_entropy().item() == 0.0


def test_gradient_flows_to_log_probs():
    token_ids, inputs = scored_batch()
    inputs.requires_grad_(True)
    TokenSequenceDistribution.from_logits(inputs).logp(token_ids).sum().backward()
    assert inputs.grad[..., 1].eq(1.0).all()
    assert inputs.grad[..., 0].eq(0.0).all()


def test_approximate_kl_matches_exact_kl():
    # Sampled from `old`, the estimator's mean converges to KL(old || new).
    old = torch.tensor([0.7, 0.2, 0.1])
    new = torch.tensor([0.5, 0.3, 0.2])
    samples = torch.multinomial(old, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    estimate = approximate_kl(old.log()[samples], new.log()[samples]).mean().item()
    exact = float((old * (old / new).log()).sum())
    assert estimate == pytest.approx(exact, abs=2e-3)
    assert (approximate_kl(old.log(), new.log()) >= 0).all()


def test_input_dim_and_shape_checks():
    space = gym.spaces.MultiDiscrete(np.full(3, 10))
    assert TokenSequenceDistribution.required_input_dim(space) == 12
    with pytest.raises(ValueError, match="pack_scores"):
        TokenSequenceDistribution(torch.zeros(2, 3, 5))
    with pytest.raises(NotImplementedError):
        TokenSequenceDistribution(scored_batch()[1]).sample()
