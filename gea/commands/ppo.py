"""`gea ppo`: stage 2, PPO on Ray RLlib from an SFT checkpoint."""

from __future__ import annotations

import argparse

NAME = "ppo"
HELP = "Fine-tune an SFT checkpoint's LoRA adapters and value head with PPO on RLlib (config: experiments/ppo*.yaml)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML config, e.g. experiments/ppo_babyai.yaml.")
    parser.add_argument(
        "--init", default=None, help="SFT checkpoint: a step folder or an SFT run folder. Overrides the config's `init`."
    )
    parser.add_argument("--run-dir", default=None, help="Output folder. Overrides the config's `run_dir`.")
    parser.add_argument("--iterations", type=int, default=None, help="Total training iterations. Overrides the config.")
    parser.add_argument("--resume", action="store_true", help="Continue from the latest checkpoint in run_dir.")


def run(args: argparse.Namespace) -> int:
    from gea.rl.run import PPORunConfig, run_ppo

    overrides = {"init": args.init, "run_dir": args.run_dir, "iterations": args.iterations}
    if args.resume:
        overrides["resume"] = True
    config = PPORunConfig.from_yaml(args.config, **overrides)
    checkpoint = run_ppo(config)
    print(f"PPO checkpoint: {checkpoint}")
    print(f"TensorBoard:    tensorboard --logdir {config.run_dir}/tensorboard")
    print(f"Evaluate:       gea eval --checkpoint {config.run_dir} --envs {' '.join(config.envs)} --out EVAL_DIR")
    return 0
