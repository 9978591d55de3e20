"""`gea eval`: success rate per environment over fixed seeds, with intervals, plots and videos."""

from __future__ import annotations

import argparse
import functools
import logging
from pathlib import Path

NAME = "eval"
HELP = "Evaluate a checkpoint (or the experts) on registered embodiments over fixed evaluation seeds."

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="Checkpoint folder, or a run folder whose `latest` checkpoint is used.")
    source.add_argument("--expert", action="store_true", help="Evaluate each embodiment's own expert instead.")
    parser.add_argument("--envs", nargs="+", required=True, metavar="ENV", help="Embodiment names, or `all`.")
    parser.add_argument("--episodes", type=int, default=20, help="Episodes per environment. Default: 20.")
    parser.add_argument(
        "--seed-list",
        default="v1",
        help="Fixed evaluation seed list: v1 (report results on it) or dev1 (choose settings such as "
        "--temperature on it). Default: v1.",
    )
    parser.add_argument("--image-size", type=int, default=None, help="Frame size in pixels; default: the checkpoint's, or 64.")
    parser.add_argument("--workers", type=int, default=1, help="Parallel worker processes. Default: 1.")
    parser.add_argument("--batch-size", type=int, default=8, help="Environments stepped together per worker. Default: 8.")
    parser.add_argument("--videos", type=int, default=2, help="Episodes per environment saved as GIF. Default: 2.")
    parser.add_argument(
        "--max-episode-steps", type=int, default=None,
        help="Cap every environment's step limit (default: each adapter's own limit).",
    )
    decoding = parser.add_mutually_exclusive_group()
    decoding.add_argument("--greedy", action="store_true", help="Decode actions greedily instead of sampling.")
    decoding.add_argument(
        "--temperature", type=float, default=None,
        help="Sampling temperature (0 is greedy). Default: the checkpoint's own (1 unless its config sets another).",
    )
    parser.add_argument("--out", required=True, help="Output folder for results.json/csv/md, success.png, videos, TensorBoard.")


def _resolve_envs(names: list[str]) -> tuple[str, ...]:
    from gea_envs import ADAPTERS

    if names == ["all"]:
        return tuple(ADAPTERS.names())
    return tuple(names)


def run(args: argparse.Namespace) -> int:
    from gea.evaluation.agents import ExpertAgent
    from gea.evaluation.harness import EvaluationConfig, evaluate
    from gea.evaluation.report import markdown_table, write_report
    from gea.evaluation.seeds import eval_seeds
    from gea.manifest import build_manifest, hash_path

    extra: dict = {}
    if args.expert:
        agent_factory = ExpertAgent
        image_size = args.image_size or 64
        extra["agent"] = "expert"
    else:
        from gea.evaluation.policy_agent import policy_agent_factory
        from gea.training.checkpoint import resolve_checkpoint

        checkpoint = resolve_checkpoint(args.checkpoint)
        agent_factory, image_size = policy_agent_factory(
            checkpoint, greedy=args.greedy, image_size=args.image_size, temperature=args.temperature
        )
        extra.update(
            agent="policy", checkpoint=str(checkpoint), checkpoint_sha256=hash_path(checkpoint),
            greedy=args.greedy, temperature=args.temperature,
        )

    config = EvaluationConfig(
        envs=_resolve_envs(args.envs),
        episodes=args.episodes,
        seed_version=args.seed_list,
        image_size=image_size,
        workers=args.workers,
        batch_size=args.batch_size,
        videos_per_env=args.videos,
        max_episode_steps=args.max_episode_steps,
    )
    result = evaluate(agent_factory, config)
    manifest = build_manifest(
        seed_list=config.seed_version, seeds=eval_seeds(config.episodes, config.seed_version), image_size=image_size, **extra
    )
    paths = write_report(result, Path(args.out), manifest)
    print(markdown_table(result))
    for kind, path in paths.items():
        print(f"{kind:>11}: {path}")
    return 0
