"""The action distribution of GEA's RL module: the scores of one token sequence per row.

A policy over a large language-model vocabulary scores an action token by token under
the embodiment's prefix constraint. Storing the masked logits of every position
would cost ``max_action_tokens * vocab_size`` floats per step, so the distribution
carries only what PPO needs, for the sequence it was scored on: per position the
token id, its log-probability, the entropy of that position's masked distribution and
the log of how many tokens the constraint allowed there. Its inputs have shape
``(..., max_action_tokens, 4)`` in that column order; positions past the end of an
action hold log-probability 0, entropy 0 and log-count 0.

The log-probability of the sequence is the sum of its per-token masked
log-probabilities, which is exact because the scores were computed with the sequence's
own earlier tokens (teacher forcing). The module samples autoregressively itself, so
this class has no `sample`.
"""

from __future__ import annotations

from typing import Optional

import gymnasium as gym
import torch
from ray.rllib.core.distribution.distribution import Distribution

TOKEN_COLUMN = 0
LOGP_COLUMN = 1
ENTROPY_COLUMN = 2
LOG_ALLOWED_COLUMN = 3
NUM_COLUMNS = 4


def pack_scores(
    token_ids: torch.Tensor, log_probs: torch.Tensor, entropy: torch.Tensor, log_allowed: torch.Tensor
) -> torch.Tensor:
    """Stack four ``(..., max_action_tokens)`` tensors into the distribution's inputs.

    Token ids travel as float32, which represents every id below 2**24 exactly.
    """
    if int(token_ids.max()) >= 2**24:
        raise ValueError(f"Token id {int(token_ids.max())} cannot be stored exactly as float32; ids must be below 2**24.")
    columns = [token_ids.to(log_probs.dtype), log_probs, entropy.to(log_probs.dtype), log_allowed.to(log_probs.dtype)]
    return torch.stack(columns, dim=-1)


def approximate_kl(old_logp: torch.Tensor, new_logp: torch.Tensor) -> torch.Tensor:
    """Estimate KL(old || new) per sample from log-probabilities of actions drawn from `old`.

    The estimator ``(r - 1) - log r`` with ``r = new / old`` is non-negative and, since
    ``E_old[r] = 1``, unbiased; it needs no full distributions.
    """
    log_ratio = new_logp - old_logp
    return torch.expm1(log_ratio) - log_ratio


class TokenSequenceDistribution(Distribution):
    """Per-row scores of one action token sequence; see the module docstring for the layout."""

    def __init__(self, inputs: torch.Tensor) -> None:
        if inputs.dim() < 2 or inputs.shape[-1] != NUM_COLUMNS:
            raise ValueError(
                f"Expected inputs of shape (..., positions, {NUM_COLUMNS}) from pack_scores, got {tuple(inputs.shape)}."
            )
        self.inputs = inputs
        self.token_ids = inputs[..., TOKEN_COLUMN].round().long()

    @classmethod
    def from_logits(cls, logits: torch.Tensor, **kwargs) -> "TokenSequenceDistribution":
        """Build from the packed scores (RLlib passes every module's distribution inputs by this name)."""
        return cls(logits)

    @staticmethod
    def required_input_dim(space: gym.Space, **kwargs) -> int:
        if not isinstance(space, gym.spaces.MultiDiscrete):
            raise TypeError(f"TokenSequenceDistribution needs a MultiDiscrete action space, got {space}.")
        return int(space.nvec.size) * NUM_COLUMNS

    def logp(self, value: torch.Tensor, **kwargs) -> torch.Tensor:
        """Sum of per-position log-probabilities of `value`, which must be the scored sequence."""
        if value.shape != self.token_ids.shape or not torch.equal(value.long(), self.token_ids.to(value.device)):
            raise ValueError(
                "TokenSequenceDistribution only knows the log-probability of the token ids it was scored on; "
                "score the requested ids with the module's forward_train first."
            )
        return self.inputs[..., LOGP_COLUMN].sum(dim=-1)

    def entropy(self, **kwargs) -> torch.Tensor:
        """Sum over positions of each position's entropy given the sequence's earlier tokens."""
        return self.inputs[..., ENTROPY_COLUMN].sum(dim=-1)

    def max_entropy(self) -> torch.Tensor:
        """Entropy of the uniform distribution over each position's allowed tokens, summed over positions."""
        return self.inputs[..., LOG_ALLOWED_COLUMN].sum(dim=-1)

    def normalized_entropy(self) -> torch.Tensor:
        """`entropy` divided by `max_entropy`, in [0, 1]; 0 where only one sequence is allowed.

        Dividing by the allowed-token count makes the entropy bonus comparable between
        embodiments whose actions have different lengths and token sets.
        """
        maximum = self.max_entropy()
        safe_maximum = torch.where(maximum > 0, maximum, torch.ones_like(maximum))
        return torch.where(maximum > 0, self.entropy() / safe_maximum, torch.zeros_like(maximum))

    def kl(self, other: "Distribution", **kwargs) -> torch.Tensor:
        raise NotImplementedError(
            "The exact KL needs every token's probability, which this distribution does not keep; "
            "use gea.rl.distribution.approximate_kl on the two log-probabilities of the sampled actions."
        )

    def sample(self, *, sample_shape: Optional[tuple] = None, **kwargs) -> torch.Tensor:
        raise NotImplementedError("GEA's module samples action tokens autoregressively itself; this class cannot sample.")

    def rsample(self, *, sample_shape: Optional[tuple] = None, **kwargs) -> torch.Tensor:
        raise NotImplementedError("Token sequences are discrete and have no reparameterized sample.")
