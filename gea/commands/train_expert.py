"""`gea train-expert`: train an embodiment's stable-baselines3 expert on its state observation."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "train-expert"
HELP = "Train an embodiment's stable-baselines3 expert (SAC or PPO on the state observation) and save it as a zip."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("embodiment", help="Registry name, such as mujoco/Reacher-v5 (see `gea envs`).")
    parser.add_argument(
        "--timesteps", type=int, default=None, help="Environment steps to train (default: the adapter's own)."
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="Zip file to write (default: the shipped expert file under gea_envs/experts/).",
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed of the algorithm, networks and environment.")
    parser.add_argument(
        "--eval-episodes",
        type=int,
        default=5,
        help="Episodes to play after training to log return and success rate (0 skips).",
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="Wall-clock training budget in minutes; training stops early and saves the model when it runs out.",
    )
    parser.add_argument(
        "--resume",
        type=Path,
        default=None,
        help="Zip file of a saved model to continue training for --timesteps more steps (replay buffer starts empty).",
    )
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default: 1).")


def run(args: argparse.Namespace) -> int:
    from gea.experts import ExpertTrainingConfig, train_expert

    config = ExpertTrainingConfig(
        embodiment=args.embodiment,
        out=args.out,
        timesteps=args.timesteps,
        seed=args.seed,
        eval_episodes=args.eval_episodes,
        torch_threads=args.threads,
        max_minutes=args.max_minutes,
        resume=args.resume,
    )
    path = train_expert(config)
    print(f"Saved {args.embodiment} expert to {path}")
    return 0
