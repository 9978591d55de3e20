"""TokenSequenceDistribution: masked per-position logits over action tokens."""

from __future__ import annotations

import math

import pytest
import torch

from gea.rl.distribution import MASKED_LOGIT, TokenSequenceDistribution


def masked_logits() -> torch.Tensor:
    # Two rows, two positions, four tokens. Row 0 allows tokens {1, 2} then only token 0;
    # row 1 allows all four at position 0 and tokens {2, 3} at position 1.
    logits = torch.tensor(
        [
            [[0.0, 1.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0]],
            [[0.5, -0.5, 1.5, 0.0], [0.0, 0.0, 1.0, -1.0]],
        ]
    )
    allowed = torch.tensor(
        [
            [[False, True, True, False], [True, False, False, False]],
            [[True, True, True, True], [False, False, True, True]],
        ]
    )
    return torch.where(allowed, logits, torch.full_like(logits, MASKED_LOGIT))


def test_logp_sums_positions():
    logits = masked_logits()
    distribution = TokenSequenceDistribution.from_logits(logits)
    actions = torch.tensor([[2, 0], [0, 3]])
    expected_row0 = math.log(math.exp(2) / (math.exp(1) + math.exp(2))) + 0.0
    row1_first = torch.log_softmax(logits[1, 0], dim=-1)[0]
    row1_second = math.log(math.exp(-1) / (math.exp(1) + math.exp(-1)))
    logp = distribution.logp(actions)
    assert logp[0].item() == pytest.approx(expected_row0, abs=1e-5)
    assert logp[1].item() == pytest.approx(row1_first.item() + row1_second, abs=1e-5)


def test_masked_token_has_no_probability():
    distribution = TokenSequenceDistribution.from_logits(masked_logits())
    assert distribution.logp(torch.tensor([[3, 0], [0, 2]]))[0].item() < -1e8


def test_entropy_ignores_masked_tokens():
    distribution = TokenSequenceDistribution.from_logits(masked_logits())
    entropy = distribution.entropy()
    probabilities = torch.softmax(torch.tensor([1.0, 2.0]), dim=-1)
    expected_row0 = -(probabilities * probabilities.log()).sum().item()
    assert torch.isfinite(entropy).all()
    assert entropy[0].item() == pytest.approx(expected_row0, abs=1e-5)


def test_normalized_entropy_uniform_is_one():
    uniform = torch.zeros(1, 3, 5)
    uniform[0, 2, 1:] = MASKED_LOGIT  # the last position allows one token only
    normalized = TokenSequenceDistribution.from_logits(uniform).normalized_entropy()
    assert normalized.item() == pytest.approx(1.0, abs=1e-5)


def test_normalized_entropy_zero_when_forced():
    forced = torch.full((1, 2, 3), MASKED_LOGIT)
    forced[0, :, 0] = 0.0
    assert TokenSequenceDistribution.from_logits(forced).normalized_entropy().item() == 0.0


def test_vocabulary_maps_indices_to_ids():
    distribution_class = TokenSequenceDistribution.for_vocabulary([7, 100, 2000])
    logits = torch.tensor([[[MASKED_LOGIT, 0.0, MASKED_LOGIT]]])
    distribution = distribution_class.from_logits(logits)
    assert distribution.sample().tolist() == [[100]]
    assert distribution.to_deterministic().sample().tolist() == [[100]]
    assert distribution.logp(torch.tensor([[100]])).item() == pytest.approx(0.0, abs=1e-6)
    assert distribution.logp(torch.tensor([[101]])).item() < -1e8


def test_vocabulary_must_be_increasing():
    with pytest.raises(ValueError, match="strictly increasing"):
        TokenSequenceDistribution.for_vocabulary([5, 3])


def test_kl_zero_for_same_logits():
    distribution = TokenSequenceDistribution.from_logits(masked_logits())
    assert torch.allclose(distribution.kl(distribution), torch.zeros(2), atol=1e-6)
