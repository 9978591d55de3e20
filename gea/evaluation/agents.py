"""Agents the evaluation harness drives: anything that acts for a batch of environments."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import gymnasium as gym

from gea_envs import EmbodimentAdapter, ExpertPolicy, Observation
from gea_envs.spaces import Action


@dataclass
class StepInput:
    """One environment slot's state at a step, given to `EvaluationAgent.act`."""

    slot: int
    adapter: EmbodimentAdapter
    env: gym.Env
    raw_obs: Any
    info: dict
    observation: Observation


@dataclass(frozen=True)
class AgentAction:
    """An action and whether it came from a valid decode (a fallback action has ``valid=False``)."""

    action: Action
    valid: bool = True


class EvaluationAgent(abc.ABC):
    """Acts in several environments at once; slots are reused across episodes."""

    def begin_episode(self, step: StepInput) -> None:
        """Reset per-slot state (such as observation history) at the start of an episode."""

    @abc.abstractmethod
    def act(self, steps: list[StepInput]) -> list[AgentAction]:
        """Return one action per input, in order."""


class ExpertAgent(EvaluationAgent):
    """Each embodiment's own expert, so the harness can be checked against directly measured expert success."""

    def __init__(self) -> None:
        self._experts: dict[int, ExpertPolicy] = {}

    def begin_episode(self, step: StepInput) -> None:
        expert = step.adapter.make_expert(step.env)
        expert.reset(step.env, step.raw_obs, step.info)
        self._experts[step.slot] = expert

    def act(self, steps: list[StepInput]) -> list[AgentAction]:
        return [AgentAction(self._experts[s.slot].act(s.env, s.raw_obs, s.info)) for s in steps]
