"""`gea sft`: stage 1, supervised fine-tuning on expert trajectories."""

from __future__ import annotations

import argparse

NAME = "sft"
HELP = "Train the policy by SFT on expert trajectories of several embodiments (config: experiments/*.yaml)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML config, e.g. experiments/sft_example.yaml.")
    parser.add_argument("--resume", action="store_true", help="Continue from the latest checkpoint in the config's run_dir.")
    parser.add_argument("--steps", type=int, default=None, help="Override train.steps.")


def run(args: argparse.Namespace) -> int:
    from gea.training.config import SFTConfig
    from gea.training.sft import SFTTrainer

    config = SFTConfig.from_yaml(args.config)
    if args.steps is not None:
        config.train.steps = args.steps
    checkpoint = SFTTrainer(config, resume=args.resume).train()
    print(f"SFT checkpoint: {checkpoint}")
    print(f"TensorBoard:    tensorboard --logdir {config.run_dir}/tensorboard")
    return 0
