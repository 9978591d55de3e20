"""Split a BabyAI policy's steps by whether the target is in view, to find where episodes are lost.

Without a checkpoint, the script measures scripted mixtures on a GoTo level. On a share of
the steps where an object matching the instruction is in the agent's 7x7 view, minigrid's
`BabyAIBot` acts (in advising mode, given the action actually taken). On every other step a
uniformly random turn-left, turn-right or move-forward acts. The mixtures bound how well a
policy must act on in-view steps to reach a success rate.

With ``--checkpoint``, the script runs that GEA policy (sampling at its own temperature) and
reports, separately for in-view and out-of-view steps, how often its action equals the
bot's suggestion and the probability it gives the bot's action.

Run from the repository root:

    python experiments/babyai_in_view.py --episodes 300
    python experiments/babyai_in_view.py --checkpoint runs/sft_babyai --episodes 60
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX
from minigrid.utils.baby_ai_bot import BabyAIBot
from tqdm import tqdm

from gea_envs import get_adapter

logger = logging.getLogger(__name__)

# BabyAI's turn left, turn right and move forward: the moves the random walk draws from.
MOVES = 3
OBJECT_TYPES = ("key", "ball", "box")
BOT_SHARES = (0.0, 0.3, 0.5, 0.7, 1.0)
# Above the seeds `gea collect` uses by default (0, 1, ...) and below the `v1` evaluation
# seeds (from 1,000,000), so no episode repeats a training or evaluation episode.
SEED_OFFSET = 100_000


@dataclass
class StepCounts:
    """Per-step agreement with the bot, for in-view or out-of-view steps."""

    agreements: list[bool] = field(default_factory=list)
    bot_probabilities: list[float] = field(default_factory=list)


def target_in_view(env) -> bool:
    """Return whether a cell of the agent's view contains an object matching the instruction."""
    unwrapped = env.unwrapped
    description = unwrapped.instrs.desc
    view = unwrapped.gen_obs()["image"]  # (7, 7, 3): column, row, (type, colour, state)
    types = [description.type] if description.type else list(OBJECT_TYPES)
    matches = np.isin(view[..., 0], [OBJECT_TO_IDX[name] for name in types])
    if description.color:
        matches &= view[..., 1] == COLOR_TO_IDX[description.color]
    return bool(matches.any())


def run_mixture(level: str, bot_share: float, episodes: int, seed: int) -> float:
    """Return the success rate of the bot on `bot_share` of in-view steps and a random move otherwise."""
    adapter = get_adapter(level)
    rng = np.random.default_rng(seed)
    successes = []
    for episode in range(episodes):
        env = adapter.make_env(episode, 56)
        env.reset(seed=SEED_OFFSET + episode)
        bot = BabyAIBot(env.unwrapped)
        last_action, success = None, False
        for _ in range(env.unwrapped.max_steps):
            suggested = int(bot.replan(last_action))
            use_bot = target_in_view(env) and rng.random() < bot_share
            last_action = suggested if use_bot else int(rng.integers(MOVES))
            _, reward, terminated, truncated, _ = env.step(last_action)
            if terminated or truncated:
                success = reward > 0
                break
        successes.append(success)
        env.close()
    return float(np.mean(successes))


def run_policy(level: str, checkpoint: Path, episodes: int, seed: int) -> tuple[float, dict[bool, StepCounts]]:
    """Run the policy of `checkpoint`; return its success rate and its agreement with the bot by step kind."""
    from gea.evaluation.agents import StepInput
    from gea.evaluation.policy_agent import PolicyAgent
    from gea.training.bundle import load_bundle
    from gea.training.checkpoint import resolve_checkpoint

    bundle = load_bundle(resolve_checkpoint(checkpoint), lora_trainable=False)
    agent = PolicyAgent(bundle, seed=seed)
    policy, detokenizer = bundle.policy, bundle.detokenizer
    adapter = get_adapter(level)
    constraint = detokenizer.constraint(level)
    counts = {True: StepCounts(), False: StepCounts()}
    successes = []
    for episode in tqdm(range(episodes), desc="episodes"):
        env = adapter.make_env(episode, 56)
        raw_obs, info = env.reset(seed=SEED_OFFSET + episode)
        bot = BabyAIBot(env.unwrapped)
        observation = adapter.observe(env, raw_obs, info)
        agent.begin_episode(StepInput(0, adapter, env, raw_obs, info, observation))
        last_action, success = None, False
        for _ in range(env.unwrapped.max_steps):
            suggested = int(bot.replan(last_action))
            step = StepInput(0, adapter, env, raw_obs, info, observation)
            probability = bot_action_probability(agent, step, detokenizer.encode_many(level, [suggested])[0], constraint)
            last_action = int(agent.act([step])[0].action)
            in_view = counts[target_in_view(env)]
            in_view.agreements.append(last_action == suggested)
            in_view.bot_probabilities.append(probability)
            raw_obs, reward, terminated, truncated, info = env.step(last_action)
            observation = adapter.observe(env, raw_obs, info)
            if terminated or truncated:
                success = reward > 0
                break
        successes.append(success)
        env.close()
    return float(np.mean(successes)), counts


def bot_action_probability(agent, step, action_ids: list[int], constraint) -> float:
    """Return the policy's probability of `action_ids` for the prompt `agent` is about to build."""
    with torch.no_grad():
        scores = agent.policy.score([agent.prompt(step)], [action_ids], [constraint])
    return float(scores.log_probs[0].sum().exp())


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--level", default="babyai/GoToLocal", help="A registered BabyAI GoTo level.")
    parser.add_argument("--checkpoint", type=Path, default=None, help="SFT or PPO run or checkpoint to probe.")
    parser.add_argument("--episodes", type=int, default=300, help="Episodes per mixture, or of the policy.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random moves or of sampling.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.episodes < 1:
        parser.error(f"--episodes must be positive, got {args.episodes}.")

    if args.checkpoint is None:
        for share in BOT_SHARES:
            success = run_mixture(args.level, share, args.episodes, args.seed)
            print(f"bot on {share:.0%} of in-view steps, random moves otherwise: success {success:.1%}")
        return 0
    success, counts = run_policy(args.level, args.checkpoint, args.episodes, args.seed)
    print(f"{args.checkpoint}: success {success:.1%} over {args.episodes} episodes")
    for in_view, kind in ((True, "target in view"), (False, "target out of view")):
        steps = counts[in_view]
        print(
            f"{kind}: {len(steps.agreements)} steps, action equals the bot's {np.mean(steps.agreements):.1%}, "
            f"mean probability of the bot's action {np.mean(steps.bot_probabilities):.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
