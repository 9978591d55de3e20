"""`gea collect`: run experts and write their episodes to disk."""

from __future__ import annotations

import argparse
import logging

NAME = "collect"
HELP = "Collect expert trajectories for one or more embodiments (see `gea envs`)."

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("envs", nargs="+", metavar="ENV", help="Registered embodiment names, e.g. babyai/GoToLocal.")
    parser.add_argument("--episodes", type=int, required=True, help="Episodes per embodiment.")
    parser.add_argument("--out", required=True, help="Output folder; existing episodes there are kept and skipped.")
    parser.add_argument("--image-size", type=int, default=64, help="Frame size in pixels (square). Default: 64.")
    parser.add_argument("--seed-start", type=int, default=0, help="Seed of the first episode. Default: 0.")
    parser.add_argument("--workers", type=int, default=2, help="Parallel worker processes. Default: 2.")
    parser.add_argument(
        "--action-noise",
        type=float,
        default=0.0,
        help=(
            "Perturb the executed actions while recording the expert's labels, so the data covers recoveries: "
            "the probability of a random move for discrete and UI actions, the Gaussian standard deviation "
            "as a share of the half-range for continuous ones. Default: 0 (the expert as is)."
        ),
    )


def run(args: argparse.Namespace) -> int:
    from gea.data.collect import collect

    summary = collect(
        args.envs,
        args.episodes,
        args.out,
        image_size=args.image_size,
        seed_start=args.seed_start,
        workers=args.workers,
        action_noise=args.action_noise,
    )
    print(f"{'embodiment':<32} {'new':>5} {'skipped':>7} {'success':>8} {'mean length':>11}")
    for name in args.envs:
        episodes = summary.collected[name]
        mean_length = sum(e.length for e in episodes) / len(episodes) if episodes else float("nan")
        print(
            f"{name:<32} {len(episodes):>5} {summary.skipped[name]:>7} "
            f"{summary.success_rate(name):>8.2f} {mean_length:>11.1f}"
        )
    return 0
