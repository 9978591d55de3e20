"""Measure RLlib sampling throughput of the GEA environment with 1 and 2 env runners.

Two modules sample the same `GeaEmbodimentEnv` (a real adapter, token-id actions):

- ``gea``: `GeaTorchRLModule` around a small CNN token policy that samples under the
  embodiment's per-position token constraint (the GEA seam, without a language model);
- ``rllib-default``: RLlib's default PPO module (`DefaultPPOTorchRLModule`, an MLP over
  the flattened observation).

Each configuration's env runners sample concurrently for ``--steps`` steps each after
one warm-up call; the script prints a markdown table and writes it to ``--out``.

Usage::

    nice -n 10 python experiments/rllib_throughput_benchmark.py --env mujoco/Reacher-v5
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import gea.rl  # noqa: F401  (sets the loopback environment before Ray is imported)
import gea_envs
from gea.rl.algorithm import PPOSettings, build_ppo_config
from gea.rl.detokenizer import ContinuousCodeDetokenizer
from gea.rl.env import GeaEnvConfig
from gea.rl.module import PolicyBatch, TokenScores
from gea.rl.ray_init import init_ray

logger = logging.getLogger(__name__)

NUM_BINS = 16
PAD_TOKEN_ID = 0
FIRST_CODE_ID = 1
IMAGE_SIZE = 32
FRAME_STACK = 2
MAX_PROPRIO_DIM = 16


def make_detokenizer(embodiment: str) -> ContinuousCodeDetokenizer:
    from gea_tokenizers.binning import BinningConfig, BinningTokenizer

    space = gea_envs.get_adapter(embodiment).action_space
    bounds = {embodiment: np.stack([np.asarray(space.low), np.asarray(space.high)]).astype(np.float32)}
    tokenizer = BinningTokenizer.fit(bounds, BinningConfig(num_bins=NUM_BINS))
    return ContinuousCodeDetokenizer(tokenizer, FIRST_CODE_ID, PAD_TOKEN_ID, FIRST_CODE_ID + NUM_BINS)


class CnnTokenPolicy(nn.Module):
    """A small CNN emitting per-position token logits, masked to the embodiment's codes."""

    def __init__(self, embodiment: str) -> None:
        super().__init__()
        detokenizer = make_detokenizer(embodiment)
        self.max_tokens = detokenizer.max_action_tokens
        self.vocab_size = detokenizer.vocab_size
        self.encoder = nn.Sequential(
            nn.Conv2d(3 * FRAME_STACK, 16, kernel_size=4, stride=4),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(16 * (IMAGE_SIZE // 4) ** 2, 64),
            nn.ReLU(),
        )
        self.logits_head = nn.Linear(64, self.max_tokens * self.vocab_size)
        self.value_head = nn.Linear(64, 1)
        allowed = torch.zeros(self.max_tokens, self.vocab_size, dtype=torch.bool)
        width = detokenizer.tokenizer.tokens_for(embodiment)
        allowed[:width, FIRST_CODE_ID:] = True
        allowed[width:, PAD_TOKEN_ID] = True
        self.register_buffer("allowed", allowed)

    def _features(self, batch: PolicyBatch) -> torch.Tensor:
        frames = batch.frames.float().div(255.0).permute(0, 1, 4, 2, 3).flatten(1, 2)
        return self.encoder(frames)

    def _scores(self, features: torch.Tensor, token_ids: torch.Tensor = None, greedy: bool = False) -> TokenScores:
        logits = self.logits_head(features).view(-1, self.max_tokens, self.vocab_size)
        log_probs = torch.log_softmax(logits.masked_fill(~self.allowed, -1e9), dim=-1)
        if token_ids is None:
            token_ids = log_probs.argmax(-1) if greedy else torch.distributions.Categorical(logits=log_probs).sample()
        entropy = -(log_probs.exp() * log_probs).masked_fill(~self.allowed, 0.0).sum(-1)
        return TokenScores(
            token_ids=token_ids,
            log_probs=log_probs.gather(-1, token_ids[..., None]).squeeze(-1),
            values=self.value_head(features).squeeze(-1),
            entropy=entropy,
            log_allowed=self.allowed.sum(-1).float().log().expand_as(entropy),
        )

    def sample_tokens(self, batch: PolicyBatch, greedy: bool) -> TokenScores:
        return self._scores(self._features(batch), greedy=greedy)

    def score_tokens(self, batch: PolicyBatch, token_ids: torch.Tensor) -> TokenScores:
        return self._scores(self._features(batch), token_ids.long())

    def compute_values(self, batch: PolicyBatch) -> torch.Tensor:
        return self.value_head(self._features(batch)).squeeze(-1)


def build_config(embodiment: str, module: str, num_env_runners: int):
    env_config = GeaEnvConfig(
        envs=(embodiment,),
        detokenizer_factory=lambda: make_detokenizer(embodiment),
        image_size=IMAGE_SIZE,
        frame_stack=FRAME_STACK,
        max_proprio_dim=MAX_PROPRIO_DIM,
    )
    settings = PPOSettings(num_env_runners=num_env_runners, sft_coeff=0.0)
    config = build_ppo_config(settings, env_config, lambda: CnnTokenPolicy(embodiment))
    if module == "rllib-default":
        from ray.rllib.connectors.env_to_module import FlattenObservations
        from ray.rllib.core.rl_module.rl_module import RLModuleSpec

        config.rl_module(rl_module_spec=RLModuleSpec())
        # RLlib then takes the spaces from an env and the flattening connector's output.
        config.environment(observation_space=None, action_space=None)
        config.env_runners(env_to_module_connector=lambda env, spaces=None, device=None: FlattenObservations())
    return config


def measure(embodiment: str, module: str, num_env_runners: int, steps: int) -> float:
    """Return environment steps per second of `num_env_runners` runners sampling concurrently."""
    algorithm = build_config(embodiment, module, num_env_runners).build_algo()
    try:
        group = algorithm.env_runner_group
        group.foreach_env_runner(lambda runner: runner.sample(num_timesteps=64, explore=True), local_env_runner=False)
        start = time.perf_counter()
        episodes = group.foreach_env_runner(
            lambda runner: sum(len(episode) for episode in runner.sample(num_timesteps=steps, explore=True)),
            local_env_runner=False,
        )
        elapsed = time.perf_counter() - start
    finally:
        algorithm.stop()
    return sum(episodes) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="mujoco/Reacher-v5", help="Registered adapter name to sample.")
    parser.add_argument("--steps", type=int, default=1500, help="Environment steps each env runner samples.")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("rllib.md"), help="Markdown page to write.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    load_before = os.getloadavg()[0]
    init_ray(num_cpus=2)
    rates: dict[tuple[str, int], float] = {}
    try:
        for module in ("gea", "rllib-default"):
            for runners in (1, 2):
                rates[(module, runners)] = measure(args.env, module, runners, args.steps)
                print(f"{module} with {runners} runner(s): {rates[(module, runners)]:.0f} steps/s", flush=True)
    finally:
        import ray

        ray.shutdown()

    rows = [
        "| module | 1 runner (steps/s) | 2 runners (steps/s) | 2 / 1 |",
        "|---|---|---|---|",
    ]
    for module in ("gea", "rllib-default"):
        one, two = rates[(module, 1)], rates[(module, 2)]
        rows.append(f"| {module} | {one:.0f} | {two:.0f} | {two / one:.2f} |")
    ratio_one = rates[("gea", 1)] / rates[("rllib-default", 1)]
    ratio_two = rates[("gea", 2)] / rates[("rllib-default", 2)]
    table = "\n".join(rows)
    summary = (
        f"GEA module / RLlib default module: {ratio_one:.2f} with 1 runner, {ratio_two:.2f} with 2 runners."
    )
    print(table)
    print(summary)
    write_page(args, table, summary, (load_before, os.getloadavg()[0]))


def write_page(args: argparse.Namespace, table: str, summary: str, load: tuple[float, float]) -> None:
    cpu = platform.processor() or platform.machine()
    args.out.write_text(
        "# RLlib sampling throughput\n\n"
        f"Environment `{args.env}` through `gea.rl.env.GeaEmbodimentEnv` ({IMAGE_SIZE} px frames, "
        f"{FRAME_STACK} stacked, token-id actions decoded by a {NUM_BINS}-bin de-tokenizer). "
        f"Each env runner samples {args.steps} steps with one sub-environment after a 64-step warm-up; "
        "all runners of a row sample at the same time, measured in one run of\n"
        "`python experiments/rllib_throughput_benchmark.py`"
        f" on {cpu} with {os.cpu_count()} cores, Ray limited to 2 CPUs. The 1-minute load average was "
        f"{load[0]:.1f} before and {load[1]:.1f} after the run; with a load above the core count the\n"
        "runners compete with other jobs and the ratios mostly measure that contention.\n\n"
        f"{table}\n\n{summary}\n\n"
        "`gea` is `GeaTorchRLModule` around a small CNN token policy (no language model), so these\n"
        "figures measure the environment, connector and Ray overhead, not GEA's policy cost.\n"
    )


if __name__ == "__main__":
    main()
