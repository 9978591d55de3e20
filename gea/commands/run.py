"""`gea run`: the whole method from one config: collect, tokenizer, SFT, PPO, evaluation."""

from __future__ import annotations

import argparse

NAME = "run"
HELP = "Run every stage (collect, tokenizer, SFT, evaluation, PPO, evaluation) from one config, reusing finished stages."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="Pipeline config, e.g. experiments/quickstart.yaml.")
    parser.add_argument(
        "--force", action="append", default=[], metavar="STAGE",
        help="Redo STAGE and every stage after it (collect, tokenizer, sft, eval_sft, ppo, eval_ppo). Repeatable.",
    )


def run(args: argparse.Namespace) -> int:
    from gea.pipeline.config import PipelineConfig
    from gea.pipeline.runner import results_table, run_pipeline

    config = PipelineConfig.from_yaml(args.config)
    summaries = run_pipeline(config, force=args.force)
    print(results_table(config, summaries))
    last_eval = "eval_ppo" if "eval_ppo" in summaries else "eval_sft"
    paths = summaries[last_eval]["paths"]
    print(f"\nPlot:        {paths['chart']}")
    print(f"Videos:      {paths['videos']}")
    print(f"Results:     {paths['markdown']}")
    print(f"TensorBoard: tensorboard --logdir {config.run_dir}")
    return 0
