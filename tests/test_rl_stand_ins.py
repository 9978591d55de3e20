"""Stand-ins shared by the RL tests: a small token policy and a binning de-tokenizer.

The policy replaces `gea.policy.GEAPolicy` behind `gea.rl.module.ActionTokenPolicy`:
a small CNN whose per-position logits do not depend on earlier tokens, so sampling
the positions independently is exact. It keeps the MuJoCo training and fault-tolerance
tests fast; `tests/test_ppo_*.py` run the real policy. Ray runs these factories in its worker
processes, which cannot import the tests folder, so this module is pickled by value.
"""

from __future__ import annotations

import sys

from ray import cloudpickle
import numpy as np
import torch
from torch import nn

import gea.rl  # noqa: F401  (keeps Ray on loopback before it is imported)
import gea_envs
from gea.rl.detokenizer import ContinuousCodeDetokenizer
from gea.rl.env import GeaEnvConfig
from gea.rl.module import PolicyBatch, TokenScores
from gea_tokenizers.binning import BinningConfig, BinningTokenizer

cloudpickle.register_pickle_by_value(sys.modules[__name__])

EMBODIMENTS = ("mujoco/InvertedPendulum-v5", "mujoco/Reacher-v5")
NUM_BINS = 16
PAD_TOKEN_ID = 0
FIRST_CODE_ID = 1
VOCAB_SIZE = FIRST_CODE_ID + NUM_BINS
IMAGE_SIZE = 16
MAX_PROPRIO_DIM = 10


def make_detokenizer(embodiments: tuple[str, ...] = EMBODIMENTS) -> ContinuousCodeDetokenizer:
    """Build a binning de-tokenizer whose bins span each embodiment's action bounds."""
    bounds = {}
    for name in embodiments:
        space = gea_envs.get_adapter(name).action_space
        bounds[name] = np.stack([np.asarray(space.low), np.asarray(space.high)]).astype(np.float32)
    tokenizer = BinningTokenizer.fit(bounds, BinningConfig(num_bins=NUM_BINS))
    return ContinuousCodeDetokenizer(tokenizer, FIRST_CODE_ID, PAD_TOKEN_ID, VOCAB_SIZE)


def make_env_config(embodiments: tuple[str, ...] = EMBODIMENTS, **overrides) -> GeaEnvConfig:
    settings = dict(
        envs=embodiments,
        detokenizer_factory=lambda: make_detokenizer(embodiments),
        image_size=IMAGE_SIZE,
        frame_stack=2,
        max_proprio_dim=MAX_PROPRIO_DIM,
    )
    settings.update(overrides)
    return GeaEnvConfig(**settings)


class StandInPolicy(nn.Module):
    """A small CNN policy over token ids with per-embodiment position masks and a value head."""

    def __init__(self, embodiments: tuple[str, ...], frames: int = 2) -> None:
        super().__init__()
        detokenizer = make_detokenizer(embodiments)
        self.max_tokens = detokenizer.max_action_tokens
        self.encoder = nn.Sequential(
            nn.Conv2d(3 * frames, 8, kernel_size=4, stride=4),
            nn.ReLU(),
            nn.Flatten(),
            nn.LazyLinear(32),
            nn.ReLU(),
        )
        self.embodiment_embedding = nn.Embedding(len(embodiments), 32)
        self.logits_head = nn.Linear(32, self.max_tokens * VOCAB_SIZE)
        self.value_head = nn.Linear(32, 1)
        # allowed[e, i, k]: token k may appear at position i of an action of embodiment e.
        allowed = torch.zeros(len(embodiments), self.max_tokens, VOCAB_SIZE, dtype=torch.bool)
        for index, name in enumerate(embodiments):
            width = detokenizer.tokenizer.tokens_for(name)
            allowed[index, :width, FIRST_CODE_ID:] = True
            allowed[index, width:, PAD_TOKEN_ID] = True
        self.register_buffer("allowed", allowed)
        self.forward_calls = 0

    def _features(self, batch: PolicyBatch) -> torch.Tensor:
        frames = batch.frames.float() / 255.0
        frames = frames.permute(0, 1, 4, 2, 3).flatten(1, 2)
        return self.encoder(frames) + self.embodiment_embedding(batch.embodiment_indices)

    def _log_probs(self, batch: PolicyBatch, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.logits_head(features).view(-1, self.max_tokens, VOCAB_SIZE)
        allowed = self.allowed[batch.embodiment_indices]
        return torch.log_softmax(logits.masked_fill(~allowed, -1e9), dim=-1), allowed

    def _scores(self, log_probs, allowed, token_ids, values) -> TokenScores:
        probabilities = log_probs.exp()
        return TokenScores(
            token_ids=token_ids,
            log_probs=log_probs.gather(-1, token_ids[..., None]).squeeze(-1),
            values=values,
            entropy=-(probabilities * log_probs).masked_fill(~allowed, 0.0).sum(dim=-1),
            log_allowed=allowed.sum(dim=-1).float().log(),
        )

    def sample_tokens(self, batch: PolicyBatch, greedy: bool) -> TokenScores:
        features = self._features(batch)
        log_probs, allowed = self._log_probs(batch, features)
        if greedy:
            token_ids = log_probs.argmax(dim=-1)
        else:
            token_ids = torch.distributions.Categorical(logits=log_probs).sample()
        return self._scores(log_probs, allowed, token_ids, self.value_head(features).squeeze(-1))

    def score_tokens(self, batch: PolicyBatch, token_ids: torch.Tensor) -> TokenScores:
        self.forward_calls += 1
        features = self._features(batch)
        log_probs, allowed = self._log_probs(batch, features)
        return self._scores(log_probs, allowed, token_ids.long(), self.value_head(features).squeeze(-1))

    def compute_values(self, batch: PolicyBatch) -> torch.Tensor:
        return self.value_head(self._features(batch)).squeeze(-1)


def make_policy(embodiments: tuple[str, ...] = EMBODIMENTS) -> StandInPolicy:
    policy = StandInPolicy(embodiments)
    # LazyLinear needs one forward pass before RLlib counts and optimizes parameters.
    dummy = PolicyBatch(
        frames=torch.zeros(1, 2, IMAGE_SIZE, IMAGE_SIZE, 3, dtype=torch.uint8),
        embodiment_indices=torch.zeros(1, dtype=torch.long),
        embodiments=embodiments,
        instructions=[""],
    )
    policy.compute_values(dummy)
    return policy


def test_stand_in_samples_valid_tokens():
    embodiments = EMBODIMENTS
    policy = make_policy(embodiments)
    detokenizer = make_detokenizer(embodiments)
    batch = PolicyBatch(
        frames=torch.randint(0, 255, (2, 2, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=torch.uint8),
        embodiment_indices=torch.tensor([0, 1]),
        embodiments=embodiments,
        instructions=["a", "b"],
    )
    sample = policy.sample_tokens(batch, greedy=False)
    for row, name in enumerate(embodiments):
        ids = [token for token in sample.token_ids[row].tolist() if token != PAD_TOKEN_ID]
        assert detokenizer.decode(name, ids).valid
