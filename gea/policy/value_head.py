"""The PPO value head: an MLP on the language model's state before the action and the frames' features."""

from __future__ import annotations

import torch
from torch import nn

VALUE_HEAD_WEIGHTS = "value_head.safetensors"


class ValueHead(nn.Module):
    """An MLP that estimates the return from the last prompt position's hidden state and mean visual features.

    The input is the concatenation of the language model's final hidden state at the
    position before the action tokens (``hidden_size``) and the projector outputs of the
    sample's frames averaged over patches and frames (``hidden_size``).
    """

    def __init__(self, hidden_size: int, value_hidden_size: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(2 * hidden_size, value_hidden_size),
            nn.GELU(),
            nn.Linear(value_hidden_size, 1),
        )
        # A small last layer starts estimates near 0 without cutting the gradient to the first
        # layer, which an all-zero last layer would.
        nn.init.normal_(self.net[-1].weight, std=0.01)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, last_hidden: torch.Tensor, visual_features: torch.Tensor) -> torch.Tensor:
        """Return values of shape ``(batch,)`` from two ``(batch, hidden_size)`` inputs."""
        inputs = torch.cat([last_hidden, visual_features], dim=-1).to(self.net[0].weight.dtype)
        return self.net(inputs).squeeze(-1)
