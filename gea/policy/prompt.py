"""The policy prompt: one builder shared by SFT, PPO and evaluation.

A prompt for step ``t`` with history length ``c`` reads::

    Agent: <agent>
    Action space: <action space>
    Simulator: <simulator>
    Camera: <camera>
    Instruction: <instruction>
    Observation: <image>...<image>
    Action: <action tokens of step t-c+1>
    ...
    Observation: <image>...<image>
    Action: |

and ends where the tokens of action ``t`` begin. Each frame is a run of
``tokens_per_frame`` image placeholder ids that the model replaces by the frame's
embeddings. The prompt is built at the token-id level: action token ids are inserted
as ids, because the ids an action tokenizer assigns in a pretrained vocabulary need
not survive a decode-encode round trip through text.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from transformers import PreTrainedTokenizerBase

from gea_envs import EmbodimentPrompt

HEADER_TEMPLATE = "Agent: {agent}\nAction space: {action_space}\nSimulator: {simulator}\nCamera: {camera}\nInstruction: {instruction}\n"
OBSERVATION_TEXT = "Observation: "
ACTION_TEXT = "\nAction: "
STEP_END_TEXT = "\n"


@dataclass
class PolicyInput:
    """One sample for the policy: prompt token ids and the frames its image placeholders stand for.

    `frames` are HxWx3 uint8 images in the order their placeholder runs appear in
    `input_ids`.
    """

    input_ids: list[int]
    frames: list[np.ndarray]


class PromptBuilder:
    """Build `PolicyInput` prompts for one tokenizer and one per-frame token cost."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        image_token_id: int,
        tokens_per_frame: int,
        history_length: int,
    ) -> None:
        if tokens_per_frame < 1:
            raise ValueError(f"tokens_per_frame must be positive, got {tokens_per_frame}.")
        if history_length < 1:
            raise ValueError(f"history_length must be at least 1, got {history_length}.")
        self.tokenizer = tokenizer
        self.image_token_id = image_token_id
        self.tokens_per_frame = tokens_per_frame
        self.history_length = history_length
        self._observation_ids = self._encode(OBSERVATION_TEXT)
        self._action_ids = self._encode(ACTION_TEXT)
        self._step_end_ids = self._encode(STEP_END_TEXT)
        # Rollouts rebuild the same header every step, so the cache keeps tokenization off that path.
        self._cached_header_ids = functools.lru_cache(maxsize=4096)(self._tokenize_header)

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def header_ids(self, prompt: EmbodimentPrompt, instruction: str) -> list[int]:
        """Return the token ids of the embodiment description and instruction."""
        return list(self._cached_header_ids(prompt, instruction))

    def _tokenize_header(self, prompt: EmbodimentPrompt, instruction: str) -> tuple[int, ...]:
        text = HEADER_TEMPLATE.format(
            agent=prompt.agent,
            action_space=prompt.action_space,
            simulator=prompt.simulator,
            camera=prompt.camera,
            instruction=instruction,
        )
        return tuple(self._encode(text))

    def build(
        self,
        prompt: EmbodimentPrompt,
        instruction: str,
        frames_history: Sequence[Sequence[np.ndarray]],
        action_ids_history: Sequence[Sequence[int]],
    ) -> PolicyInput:
        """Build the prompt that precedes the next action.

        Args:
            prompt: the embodiment's fixed prompt text (`EmbodimentAdapter.prompt`).
            instruction: the episode's instruction.
            frames_history: the frames of each observation so far, oldest first; the last
                entry is the current observation. Only the last ``history_length`` are used.
            action_ids_history: the action token ids taken after each observation but the
                current one, so exactly one fewer entry than `frames_history`.
        """
        if not frames_history:
            raise ValueError("frames_history is empty; pass at least the current observation's frames.")
        if len(action_ids_history) != len(frames_history) - 1:
            raise ValueError(
                f"Expected one action per observation before the current one: got {len(frames_history)} "
                f"observations and {len(action_ids_history)} actions (should be {len(frames_history) - 1})."
            )
        start = max(0, len(frames_history) - self.history_length)
        input_ids = self.header_ids(prompt, instruction)
        frames: list[np.ndarray] = []
        for step in range(start, len(frames_history)):
            step_frames = list(frames_history[step])
            if not step_frames:
                raise ValueError(f"Observation {step} has no frames; every observation needs at least one.")
            input_ids += self._observation_ids
            input_ids += [self.image_token_id] * (self.tokens_per_frame * len(step_frames))
            input_ids += self._action_ids
            frames += step_frames
            if step < len(frames_history) - 1:
                input_ids += [int(token) for token in action_ids_history[step]]
                input_ids += self._step_end_ids
        return PolicyInput(input_ids=input_ids, frames=frames)
