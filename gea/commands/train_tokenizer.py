"""`gea train-tokenizer`: fit the continuous-action tokenizer on collected expert trajectories."""

from __future__ import annotations

import argparse
import json
import logging

NAME = "train-tokenizer"
HELP = "Train the residual VQ-VAE (or fit the binning baseline) on the continuous actions of collected trajectories."
REPORT_FILE = "report.json"
RESIDUAL_VQ = "residual_vq"
BINNING = "binning"

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", nargs="+", required=True, metavar="DIR", help="Trajectory folders written by `gea collect`."
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="Folder to write the tokenizer and report.json to.")
    parser.add_argument(
        "--tokenizer",
        choices=(RESIDUAL_VQ, BINNING),
        default=RESIDUAL_VQ,
        help="Tokenizer type (default: %(default)s).",
    )
    parser.add_argument(
        "--embodiments", nargs="+", metavar="NAME", help="Continuous embodiments to use (default: all found in --data)."
    )
    parser.add_argument("--successful-only", action="store_true", help="Use only actions of successful episodes.")
    parser.add_argument("--steps", type=int, default=1500, help="Optimizer steps (default: %(default)s).")
    parser.add_argument("--batch-size", type=int, default=1024, help="Actions per step (default: %(default)s).")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="AdamW learning rate (default: %(default)s).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of model and sampling (default: %(default)s).")
    parser.add_argument(
        "--weight",
        action="append",
        default=[],
        metavar="NAME=W",
        help="Multiply the batch share of embodiment NAME by W (repeatable), like mujoco/HalfCheetah-v5=4.",
    )
    parser.add_argument("--padded-width", type=int, default=21, help="Common action width (default: %(default)s).")
    parser.add_argument("--code-dim", type=int, default=32, help="Size of each code vector (default: %(default)s).")
    parser.add_argument("--hidden-width", type=int, default=256, help="MLP hidden width (default: %(default)s).")
    parser.add_argument("--mlp-layers", type=int, default=4, help="Linear layers per MLP (default: %(default)s).")
    parser.add_argument(
        "--num-quantizers", type=int, default=2, help="Codebooks, which is tokens per action (default: %(default)s)."
    )
    parser.add_argument("--codebook-size", type=int, default=512, help="Codes per codebook (default: %(default)s).")
    parser.add_argument(
        "--normalization",
        choices=("mean_std", "min_max"),
        default="mean_std",
        help="Action normalization (default: %(default)s).",
    )
    parser.add_argument(
        "--num-bins", type=int, default=256, help="Bins per dimension for --tokenizer binning (default: %(default)s)."
    )
    parser.add_argument(
        "--log-dir", metavar="DIR", help="TensorBoard folder for tokenizer/* scalars (default: OUT/tensorboard)."
    )


def _continuous_actions(data: list[str], embodiments: list[str] | None, successful_only: bool) -> dict:
    import numpy as np

    from gea.data.trajectories import TrajectoryDataset
    from gea_envs import ActionKind

    dataset = TrajectoryDataset(data, embodiments=embodiments)
    continuous = sorted({info.embodiment for info in dataset.episodes if info.action_kind is ActionKind.CONTINUOUS})
    if embodiments:
        not_continuous = sorted(set(embodiments) - set(continuous))
        if not_continuous:
            raise SystemExit(f"error: --embodiments {not_continuous} do not have continuous actions.")
    if not continuous:
        raise SystemExit(f"error: no episodes with continuous actions under {data}; found {dataset.embodiments}.")
    actions = {}
    for name in continuous:
        rows = dataset.actions(name, successful_only=successful_only)
        if not rows:
            raise SystemExit(f"error: no actions of {name} under {data} (with --successful-only={successful_only}).")
        actions[name] = np.stack(rows).astype(np.float32)
        logger.info("%s: %d actions of width %d", name, *actions[name].shape)
    return actions


def _print_report(report) -> None:
    name_width = max(len(name) for name in report.recon_mse)
    print(f"{'embodiment':<{name_width}}  recon_mse   normalized_mse")
    for name in sorted(report.recon_mse):
        print(f"{name:<{name_width}}  {report.recon_mse[name]:<10.6f}  {report.normalized_recon_mse[name]:.6f}")
    for index, usage in enumerate(report.codebooks):
        print(f"position {index}: perplexity {usage.perplexity:.1f}, dead codes {usage.dead_codes}")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gea_tokenizers import (
        BinningConfig,
        BinningTokenizer,
        ResidualVQConfig,
        TrainingConfig,
        evaluate_tokenizer,
        parse_embodiment_weights,
        train_residual_vq,
    )

    actions = _continuous_actions(args.data, args.embodiments, args.successful_only)
    out = Path(args.out)
    if args.tokenizer == BINNING:
        tokenizer = BinningTokenizer.fit(actions, BinningConfig(num_bins=args.num_bins))
        report = evaluate_tokenizer(tokenizer, actions)
    else:
        config = ResidualVQConfig(
            padded_width=args.padded_width,
            code_dim=args.code_dim,
            hidden_width=args.hidden_width,
            mlp_layers=args.mlp_layers,
            num_quantizers=args.num_quantizers,
            codebook_size=args.codebook_size,
            normalization=args.normalization,
        )
        training = TrainingConfig(
            steps=args.steps,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            seed=args.seed,
            embodiment_weights=parse_embodiment_weights(args.weight),
        )
        log_dir = args.log_dir or out / "tensorboard"
        tokenizer, report = train_residual_vq(actions, config, training, log_dir=log_dir)
    tokenizer.save(out)
    (out / REPORT_FILE).write_text(json.dumps(report.to_json(), indent=2, sort_keys=True) + "\n")
    _print_report(report)
    logger.info("Saved the %s tokenizer (fingerprint %s) to %s.", args.tokenizer, tokenizer.fingerprint()[:12], out)
    return 0
