"""Replay experts closed-loop with every action passed through a tokenizer's encode and decode.

For each registered continuous embodiment (Meta-World MT10, Gymnasium MuJoCo), the
script first collects expert actions, trains the residual VQ-VAE and fits the binning
baseline on them. It then runs the expert in the real simulator three ways on held-out
seeds: plain, with each action replaced by ``decode(encode(action))`` of the VQ, and the
same with binning. Tokenization error compounds in closed loop, so a drop in success
against the plain expert shows what the tokenizer costs. The table goes to
``experiments/tokenizers.md`` (between the replay markers) and the tokenizers to --work-dir.

Usage:
    nice -n 10 python experiments/tokenizer_replay.py --train-episodes 10 --episodes 5
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from tqdm.auto import tqdm

from gea_envs import ADAPTERS, ActionKind, EmbodimentAdapter, ExpertPolicy, get_adapter
from gea_envs.rollout import run_expert_episode
from gea_tokenizers import (
    BinningTokenizer,
    ContinuousTokenizer,
    ResidualVQConfig,
    TrainingConfig,
    evaluate_tokenizer,
    train_residual_vq,
)

logger = logging.getLogger("tokenizer_replay")

RESULTS_PAGE = Path(__file__).with_name("tokenizers.md")
BEGIN_MARKER = "<!-- replay:begin -->"
END_MARKER = "<!-- replay:end -->"
IMAGE_SIZE = 32
# Training seeds come first; replay seeds start here so the tokenizers never saw those episodes.
REPLAY_SEED_OFFSET = 10_000


class RoundTripExpert(ExpertPolicy):
    """Wraps an expert so each of its actions is replaced by ``decode(encode(action))``."""

    def __init__(self, expert: ExpertPolicy, tokenizer: ContinuousTokenizer, embodiment: str, adapter) -> None:
        self._expert = expert
        self._tokenizer = tokenizer
        self._embodiment = embodiment
        self._space = adapter.action_space

    def reset(self, env, raw_obs, info) -> None:
        self._expert.reset(env, raw_obs, info)

    def act(self, env, raw_obs, info):
        action = np.asarray(self._expert.act(env, raw_obs, info), dtype=np.float32)[None, :]
        decoded = self._tokenizer.decode(self._embodiment, self._tokenizer.encode(self._embodiment, action))[0]
        return self._space.clip(decoded)


@dataclass
class ReplayResult:
    success_rate: float
    mean_return: float


def continuous_embodiments(requested: Optional[list[str]]) -> list[str]:
    names = requested or ADAPTERS.names()
    return [name for name in names if get_adapter(name).action_space.kind is ActionKind.CONTINUOUS]


def expert_available(adapter: EmbodimentAdapter) -> Optional[str]:
    """Return None if the adapter's expert loads, else the reason it does not."""
    env = adapter.make_env(seed=0, image_size=IMAGE_SIZE)
    try:
        adapter.make_expert(env)
        return None
    except (FileNotFoundError, OSError, ValueError) as error:
        return f"{type(error).__name__}: {error}"
    finally:
        env.close()


def collect_actions(adapter: EmbodimentAdapter, episodes: int) -> np.ndarray:
    actions = []
    for seed in range(episodes):
        episode = run_expert_episode(adapter, seed, IMAGE_SIZE, record=False)
        actions.extend(np.asarray(action, dtype=np.float32) for action in episode.actions)
    return np.stack(actions)


def replay(adapter: EmbodimentAdapter, episodes: int, tokenizer: Optional[ContinuousTokenizer]) -> ReplayResult:
    successes, returns = [], []
    for index in range(episodes):
        seed = REPLAY_SEED_OFFSET + index
        env = adapter.make_env(seed=seed, image_size=IMAGE_SIZE)
        try:
            expert = adapter.make_expert(env)
            if tokenizer is not None:
                expert = RoundTripExpert(expert, tokenizer, adapter.name, adapter)
            episode = run_expert_episode(adapter, seed, IMAGE_SIZE, expert=expert, record=False, env=env)
        finally:
            env.close()
        successes.append(episode.success)
        returns.append(episode.episode_return)
    return ReplayResult(float(np.mean(successes)), float(np.mean(returns)))


def train_tokenizers(
    actions: dict[str, np.ndarray], work_dir: Path, vq_steps: int
) -> tuple[ContinuousTokenizer, ContinuousTokenizer, dict[str, Any]]:
    vq_dir, binning_dir = work_dir / "residual_vq", work_dir / "binning"
    started = time.perf_counter()
    vq, _ = train_residual_vq(actions, ResidualVQConfig(), TrainingConfig(steps=vq_steps), log_dir=work_dir / "tb")
    train_seconds = time.perf_counter() - started
    binning = BinningTokenizer.fit(actions)
    vq.save(vq_dir)
    binning.save(binning_dir)
    reports = {"vq": evaluate_tokenizer(vq, actions), "binning": evaluate_tokenizer(binning, actions)}
    return vq, binning, {"reports": reports, "train_seconds": train_seconds}


def render_page(rows: list[dict], skipped: dict[str, str], details: dict[str, Any], args: argparse.Namespace) -> str:
    vq_report, binning_report = details["reports"]["vq"], details["reports"]["binning"]
    embodiments = f" --embodiments {' '.join(args.embodiments)}" if args.embodiments else ""
    lines = [
        BEGIN_MARKER,
        f"Command: `python experiments/tokenizer_replay.py{embodiments} --train-episodes {args.train_episodes} "
        f"--episodes {args.episodes} --vq-steps {args.vq_steps}` on a shared 2-core CPU machine.",
        "",
        f"Tokenizers were trained on {args.train_episodes} expert episodes per embodiment (seeds 0 to "
        f"{args.train_episodes - 1}); replay uses seeds from {REPLAY_SEED_OFFSET}. The VQ is the default "
        f"`ResidualVQConfig` (2 codebooks x 512 codes, code dim 128, 4-layer MLPs of width 256), trained for "
        f"{args.vq_steps} steps in {details['train_seconds']:.0f} s. Binning uses 256 bins per dimension.",
        "",
        "| embodiment | expert success | VQ success | binning success | expert return | VQ return | binning return "
        "| VQ recon MSE | binning recon MSE |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        name = row["name"]
        lines.append(
            f"| {name} | {row['plain'].success_rate:.2f} | {row['vq'].success_rate:.2f} | "
            f"{row['binning'].success_rate:.2f} | {row['plain'].mean_return:.1f} | {row['vq'].mean_return:.1f} | "
            f"{row['binning'].mean_return:.1f} | {vq_report.recon_mse[name]:.2e} | "
            f"{binning_report.recon_mse[name]:.2e} |"
        )
    usage = ", ".join(f"position {i}: perplexity {u.perplexity:.0f}, {u.dead_codes} dead" for i, u in
                      enumerate(vq_report.codebooks))
    lines += ["", f"VQ codebook usage on the training actions: {usage}."]
    if skipped:
        lines += ["", "Skipped embodiments (expert not available when this ran):", ""]
        lines += [f"- {name}: {reason}" for name, reason in sorted(skipped.items())]
    lines.append(END_MARKER)
    return "\n".join(lines)


def write_section(section: str) -> None:
    """Replace the replay section of the results page, keeping the rest of the page."""
    text = RESULTS_PAGE.read_text() if RESULTS_PAGE.exists() else "# Action tokenizers\n"
    if BEGIN_MARKER in text and END_MARKER in text:
        before, rest = text.split(BEGIN_MARKER, 1)
        text = before + section + rest.split(END_MARKER, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## Closed-loop replay\n\n" + section + "\n"
    RESULTS_PAGE.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embodiments", nargs="+", help="Continuous embodiments (default: all registered).")
    parser.add_argument("--train-episodes", type=int, default=10, help="Expert episodes per embodiment for training.")
    parser.add_argument("--episodes", type=int, default=5, help="Replay episodes per embodiment and condition.")
    parser.add_argument("--vq-steps", type=int, default=1500, help="VQ training steps.")
    parser.add_argument("--work-dir", type=Path, default=Path("runs/tokenizer_replay"), help="Tokenizer output folder.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    adapters, skipped = {}, {}
    for name in continuous_embodiments(args.embodiments):
        adapter = get_adapter(name)
        reason = expert_available(adapter)
        if reason is None:
            adapters[name] = adapter
        else:
            skipped[name] = reason
            logger.warning("Skipping %s: %s", name, reason)

    actions = {}
    for name, adapter in tqdm(adapters.items(), desc="collect"):
        actions[name] = collect_actions(adapter, args.train_episodes)
    vq, binning, details = train_tokenizers(actions, args.work_dir, args.vq_steps)

    rows = []
    for name, adapter in tqdm(adapters.items(), desc="replay"):
        row = {"name": name}
        for label, tokenizer in (("plain", None), ("vq", vq), ("binning", binning)):
            row[label] = replay(adapter, args.episodes, tokenizer)
        logger.info("%s: %s", name, {key: value for key, value in row.items() if key != "name"})
        rows.append(row)
    write_section(render_page(rows, skipped, details, args))
    logger.info("Wrote %s.", RESULTS_PAGE)


if __name__ == "__main__":
    main()
