"""The GEA policy as an evaluation agent: batched constrained decoding with per-slot history."""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from gea.evaluation.agents import AgentAction, EvaluationAgent, StepInput
from gea.policy import PolicyInput
from gea.training.bundle import PolicyBundle, load_bundle
from gea.training.checkpoint import verify_checkpoint

logger = logging.getLogger(__name__)

DEFAULT_IMAGE_SIZE = 64


class PolicyAgent(EvaluationAgent):
    """Acts with `GEAPolicy.act` for every active environment at once.

    Each slot keeps the last ``history_length`` observations and the action token ids
    taken after them, and the prompt is built by the same function SFT trains on.
    """

    def __init__(
        self, bundle: PolicyBundle, greedy: bool = False, seed: int = 0, temperature: Optional[float] = None
    ) -> None:
        if greedy and temperature not in (None, 0.0):
            raise ValueError(f"Invalid decoding: greedy=True with temperature={temperature}. Pass only one of them.")
        self.policy = bundle.policy
        self.detokenizer = bundle.detokenizer
        # None keeps the checkpoint's own `GEAPolicyConfig.temperature`.
        self.temperature = 0.0 if greedy else temperature
        self.generator = torch.Generator().manual_seed(seed)
        self._frames: dict[int, list[list[np.ndarray]]] = {}
        self._actions: dict[int, list[list[int]]] = {}
        self.policy.eval()

    def begin_episode(self, step: StepInput) -> None:
        self._frames[step.slot] = []
        self._actions[step.slot] = []

    def prompt(self, step: StepInput) -> PolicyInput:
        """Build the prompt `act` would build for `step`, without adding the step to the slot's history."""
        history = self.policy.config.history_length
        frames = (self._frames[step.slot] + [step.observation.frames])[-history:]
        actions = self._actions[step.slot][-(len(frames) - 1):] if len(frames) > 1 else []
        return self.policy.build_input(step.adapter.prompt, step.observation.instruction, frames, actions)

    def act(self, steps: list[StepInput]) -> list[AgentAction]:
        history = self.policy.config.history_length
        inputs, constraints = [], []
        for step in steps:
            inputs.append(self.prompt(step))
            constraints.append(self.detokenizer.constraint(step.adapter.name))
            frames = self._frames[step.slot]
            frames.append(step.observation.frames)
            del frames[:-history]
        output = self.policy.act(inputs, constraints, temperature=self.temperature, generator=self.generator)

        results = []
        for step, token_ids in zip(steps, output.token_ids):
            self._actions[step.slot].append(token_ids)
            del self._actions[step.slot][:-history]
            decoded = self.detokenizer.decode(step.adapter.name, token_ids)
            results.append(AgentAction(decoded.action, decoded.valid))
        return results


def _make_policy_agent(checkpoint: str, greedy: bool, temperature: Optional[float]) -> PolicyAgent:
    return PolicyAgent(load_bundle(Path(checkpoint), lora_trainable=False), greedy=greedy, temperature=temperature)


def policy_agent_factory(
    checkpoint: Path, greedy: bool, image_size: Optional[int] = None, temperature: Optional[float] = None
):
    """Return a picklable agent factory for `checkpoint` and the image size to render at.

    `temperature` overrides the checkpoint's sampling temperature; `greedy` is temperature 0.
    """
    if temperature is not None and not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(
            f"temperature must be a number >= 0, got {temperature}. Use 0 (or --greedy) for greedy decoding."
        )
    if image_size is None:
        image_size = verify_checkpoint(checkpoint)["metadata"].get("image_size") or DEFAULT_IMAGE_SIZE
    return functools.partial(_make_policy_agent, str(checkpoint), greedy, temperature), int(image_size)
