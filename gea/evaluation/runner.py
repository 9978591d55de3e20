"""Run evaluation episodes in lockstep batches inside one worker process."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from gea.evaluation.agents import EvaluationAgent, StepInput
from gea.evaluation.stats import EpisodeResult
from gea_envs import EmbodimentAdapter, EpisodeOutcome, get_adapter

logger = logging.getLogger(__name__)


@dataclass
class _Slot:
    index: int
    adapter: EmbodimentAdapter
    seed: int
    env: object
    step_input: StepInput
    length: int = 0
    episode_return: float = 0.0
    goal_reached: bool = False
    terminated: bool = False
    valid_decodes: int = 0
    video: Optional[list[np.ndarray]] = None


@dataclass
class WorkerOutput:
    results: list[EpisodeResult] = field(default_factory=list)
    videos: dict[tuple[str, int], list[np.ndarray]] = field(default_factory=dict)


def _open_slot(
    index: int,
    embodiment: str,
    seed: int,
    image_size: int,
    record_video: bool,
    agent: EvaluationAgent,
    idle_envs: dict[str, list],
) -> _Slot:
    adapter = get_adapter(embodiment)
    # Reuse a finished episode's environment: `reset(seed=...)` fully determines an episode
    # (checked by the adapter contract test), and some simulators take seconds to start.
    pool = idle_envs.get(embodiment)
    env = pool.pop() if pool else adapter.make_env(seed=seed, image_size=image_size)
    raw_obs, info = env.reset(seed=seed)
    step = StepInput(index, adapter, env, raw_obs, info, adapter.observe(env, raw_obs, info))
    agent.begin_episode(step)
    slot = _Slot(index, adapter, seed, env, step, video=[] if record_video else None)
    if slot.video is not None:
        slot.video.append(step.observation.frames[0])
    return slot


def run_episodes(
    agent: EvaluationAgent,
    jobs: list[tuple[str, int]],
    image_size: int,
    batch_size: int,
    video_jobs: frozenset[tuple[str, int]] = frozenset(),
    on_episode: Optional[Callable[[EpisodeResult], None]] = None,
    max_episode_steps: Optional[int] = None,
) -> WorkerOutput:
    """Play every ``(embodiment, seed)`` job with `agent`, `batch_size` environments at a time.

    `max_episode_steps` caps each adapter's own step limit (an episode that has not
    reached its goal by then fails).
    """
    runner = _LockstepRunner(agent, image_size, video_jobs, on_episode, max_episode_steps)
    try:
        runner.run(list(reversed(jobs)), batch_size)
    finally:
        runner.close()
    return runner.output


class _LockstepRunner:
    """Keeps up to `batch_size` episodes running and requests all their actions from the agent in one call."""

    def __init__(self, agent, image_size, video_jobs, on_episode, max_episode_steps) -> None:
        self.agent = agent
        self.image_size = image_size
        self.video_jobs = video_jobs
        self.on_episode = on_episode
        self.max_episode_steps = max_episode_steps
        self.output = WorkerOutput()
        self.slots: dict[int, _Slot] = {}
        self.idle_envs: dict[str, list] = {}

    def run(self, queue: list[tuple[str, int]], batch_size: int) -> None:
        free = list(range(batch_size))
        while queue or self.slots:
            while queue and free:
                embodiment, seed = queue.pop()
                index = free.pop()
                record_video = (embodiment, seed) in self.video_jobs
                self.slots[index] = _open_slot(
                    index, embodiment, seed, self.image_size, record_video, self.agent, self.idle_envs
                )

            active = sorted(self.slots.values(), key=lambda s: s.index)
            actions = self.agent.act([slot.step_input for slot in active])
            for slot, agent_action in zip(active, actions):
                if _step_slot(slot, agent_action.action, agent_action.valid, self.max_episode_steps):
                    self._finish(slot)
                    free.append(slot.index)

    def _finish(self, slot: _Slot) -> None:
        result = _close_slot(slot)
        self.output.results.append(result)
        if slot.video is not None:
            self.output.videos[(result.embodiment, result.seed)] = slot.video
        if self.on_episode is not None:
            self.on_episode(result)
        self.idle_envs.setdefault(result.embodiment, []).append(slot.env)
        del self.slots[slot.index]

    def close(self) -> None:
        for slot in self.slots.values():
            slot.env.close()
        for envs in self.idle_envs.values():
            for env in envs:
                env.close()


def _step_slot(slot: _Slot, action, valid: bool, max_episode_steps: Optional[int]) -> bool:
    """Advance one slot by one step; return whether its episode ended."""
    adapter = slot.adapter
    step_limit = adapter.max_episode_steps if max_episode_steps is None else min(max_episode_steps, adapter.max_episode_steps)
    raw_obs, reward, terminated, truncated, info = slot.env.step(adapter.to_env_action(action))
    slot.length += 1
    slot.episode_return += float(reward)
    slot.valid_decodes += int(valid)
    slot.goal_reached = slot.goal_reached or adapter.goal_reached(float(reward), bool(terminated), info)
    done = bool(terminated or truncated or slot.length >= step_limit)
    if not done:
        slot.step_input = StepInput(slot.index, adapter, slot.env, raw_obs, info, adapter.observe(slot.env, raw_obs, info))
        if slot.video is not None:
            slot.video.append(slot.step_input.observation.frames[0])
    slot.terminated = bool(terminated)
    return done


def _close_slot(slot: _Slot) -> EpisodeResult:
    outcome = EpisodeOutcome(slot.episode_return, slot.length, slot.goal_reached, truncated=not slot.terminated)
    return EpisodeResult(
        embodiment=slot.adapter.name,
        seed=slot.seed,
        success=slot.adapter.is_success(outcome),
        length=slot.length,
        episode_return=slot.episode_return,
        valid_decodes=slot.valid_decodes,
        decodes=slot.length,
    )
