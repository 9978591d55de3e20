"""The action distribution over a fixed-length sequence of action tokens.

Its inputs are per-position logits of shape ``(..., max_action_tokens, K)`` in which
the tokens the embodiment's constraint forbids at that position are set to
`MASKED_LOGIT`. The log-probability of a sequence is the sum of its positions'
log-probabilities, which is exact for teacher-forced logits: the logits at position
``i`` were computed given the sequence's own tokens before ``i``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import gymnasium as gym
import torch
from ray.rllib.core.distribution.torch.torch_distribution import TorchDeterministic, TorchDistribution

# Finite rather than -inf: softmax still gives such a token probability 0, and terms
# like 0 * log p stay 0 instead of NaN in the entropy and KL.
MASKED_LOGIT = -1e9
_VALID_THRESHOLD = MASKED_LOGIT / 2


class TokenSequenceDistribution(TorchDistribution):
    """Categorical per position, summed over positions; samples are token ids.

    ``K`` indexes `vocabulary` (a sorted 1-D tensor of token ids) when the class comes
    from `for_vocabulary`, so a module can score a few hundred action tokens of a much
    larger language-model vocabulary. Without a vocabulary, index ``k`` is token id ``k``.

    `sample` draws the positions independently, which matches the policy only where
    the logits of a position do not depend on earlier tokens. The GEA module therefore
    samples autoregressively itself, so RLlib never calls this `sample` for it.
    """

    vocabulary: Optional[torch.Tensor] = None

    def __init__(self, logits: torch.Tensor) -> None:
        if logits.dim() < 2:
            raise ValueError(f"Expected logits of shape (..., positions, K), got shape {tuple(logits.shape)}.")
        self.logits = logits
        super().__init__(logits=logits)

    def _get_torch_distribution(self, logits: torch.Tensor) -> torch.distributions.Distribution:
        return torch.distributions.Categorical(logits=logits, validate_args=False)

    @classmethod
    def for_vocabulary(cls, vocabulary: Sequence[int]) -> type["TokenSequenceDistribution"]:
        """Return a subclass whose logit index ``k`` stands for token id ``vocabulary[k]``."""
        ids = torch.as_tensor(list(vocabulary), dtype=torch.long)
        if ids.dim() != 1 or ids.numel() == 0 or not bool(torch.all(ids[1:] > ids[:-1])):
            raise ValueError("The vocabulary must be a non-empty, strictly increasing sequence of token ids.")
        return type(f"{cls.__name__}OverVocabulary", (cls,), {"vocabulary": ids})

    @classmethod
    def from_logits(cls, logits: torch.Tensor, **kwargs) -> "TokenSequenceDistribution":
        return cls(logits=logits)

    @staticmethod
    def required_input_dim(space: gym.Space, **kwargs) -> int:
        if not isinstance(space, gym.spaces.MultiDiscrete):
            raise TypeError(f"TokenSequenceDistribution needs a MultiDiscrete action space, got {space}.")
        return int(space.nvec.sum())

    def _ids_to_indices(self, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return logit indices of `token_ids` and whether each id is in the vocabulary."""
        token_ids = token_ids.long()
        if self.vocabulary is None:
            known = (token_ids >= 0) & (token_ids < self.logits.shape[-1])
            return token_ids.clamp(0, self.logits.shape[-1] - 1), known
        vocabulary = self.vocabulary.to(token_ids.device)
        indices = torch.searchsorted(vocabulary, token_ids).clamp(max=vocabulary.numel() - 1)
        return indices, vocabulary[indices] == token_ids

    def _indices_to_ids(self, indices: torch.Tensor) -> torch.Tensor:
        if self.vocabulary is None:
            return indices
        return self.vocabulary.to(indices.device)[indices]

    def logp(self, value: torch.Tensor, **kwargs) -> torch.Tensor:
        """Sum of per-position log-probabilities of the token ids `value` (shape ``(..., positions)``)."""
        indices, known = self._ids_to_indices(value)
        position_logp = self._dist.log_prob(indices)
        # An id outside the vocabulary has probability 0, like a masked token.
        position_logp = torch.where(known, position_logp, torch.full_like(position_logp, MASKED_LOGIT))
        return position_logp.sum(dim=-1)

    def entropy(self) -> torch.Tensor:
        """Sum over positions of each position's entropy given the sequence's earlier tokens."""
        return self._dist.entropy().sum(dim=-1)

    def max_entropy(self) -> torch.Tensor:
        """Entropy of the uniform distribution over each position's allowed tokens, summed over positions."""
        allowed = (self.logits > _VALID_THRESHOLD).sum(dim=-1).clamp(min=1)
        return torch.log(allowed.to(self.logits.dtype)).sum(dim=-1)

    def normalized_entropy(self) -> torch.Tensor:
        """`entropy` divided by `max_entropy`, in [0, 1]; 0 where only one sequence is allowed.

        Dividing by the allowed-token count makes the entropy bonus comparable between
        embodiments whose actions have different lengths and token sets.
        """
        maximum = self.max_entropy()
        safe_maximum = torch.where(maximum > 0, maximum, torch.ones_like(maximum))
        return torch.where(maximum > 0, self.entropy() / safe_maximum, torch.zeros_like(maximum))

    def kl(self, other: "TokenSequenceDistribution") -> torch.Tensor:
        return torch.distributions.kl.kl_divergence(self._dist, other._dist).sum(dim=-1)

    def sample(self, *, sample_shape=None) -> torch.Tensor:
        indices = self._dist.sample(sample_shape if sample_shape is not None else torch.Size())
        return self._indices_to_ids(indices)

    def rsample(self, *, sample_shape=None):
        raise NotImplementedError("Token sequences are discrete and have no reparameterized sample.")

    def to_deterministic(self) -> TorchDeterministic:
        return TorchDeterministic(loc=self._indices_to_ids(torch.argmax(self.logits, dim=-1)))
