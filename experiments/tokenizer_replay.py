"""Replay experts closed-loop with every action passed through a tokenizer's encode and decode.

For each registered continuous embodiment (Meta-World MT10, Gymnasium MuJoCo), the
script first collects expert actions, trains the residual VQ-VAE and fits the binning
baseline on them. It then runs the expert in the real simulator three ways on held-out
seeds: plain, with each action replaced by ``decode(encode(action))`` of the VQ, and the
same with binning. Tokenization error compounds in closed loop, so a drop in success
against the plain expert shows what the tokenizer costs. The table goes to
``experiments/tokenizers.md`` (between the replay markers) and the tokenizers to --work-dir.

Usage:
    nice -n 10 python experiments/tokenizer_replay.py --train-episodes 10 --episodes 10 --episodes-for mujoco=20
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np
from tqdm.auto import tqdm

from gea.results_page import write_marked_section
from gea_envs import ADAPTERS, ActionKind, EmbodimentAdapter, ExpertPolicy, get_adapter
from gea_envs.rollout import run_expert_episode
from gea_tokenizers import (
    BinningTokenizer,
    ContinuousTokenizer,
    ResidualVQConfig,
    TrainingConfig,
    evaluate_tokenizer,
    parse_embodiment_weights,
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


def parse_episode_overrides(values: list[str]) -> dict[str, int]:
    """Parse ``PREFIX=N`` items: embodiments whose name starts with PREFIX replay N episodes."""
    overrides = {}
    for value in values:
        prefix, separator, count = value.partition("=")
        if not separator or not prefix or not count.isdigit() or int(count) < 1:
            raise ValueError(f"--episodes-for expects PREFIX=N with N >= 1, like mujoco=20; got {value!r}.")
        overrides[prefix] = int(count)
    return overrides


def episodes_for(name: str, default: int, overrides: dict[str, int]) -> int:
    """Return the replay episode count of `name`: the longest matching override prefix, else `default`."""
    matches = [prefix for prefix in overrides if name.startswith(prefix)]
    return overrides[max(matches, key=len)] if matches else default


def train_tokenizers(
    actions: dict[str, np.ndarray], work_dir: Path, vq_steps: Optional[int], vq_weights: dict[str, float]
) -> tuple[ContinuousTokenizer, ContinuousTokenizer, dict[str, Any]]:
    vq_dir, binning_dir = work_dir / "residual_vq", work_dir / "binning"
    training = TrainingConfig(embodiment_weights=vq_weights)
    if vq_steps is not None:
        training = replace(training, steps=vq_steps)
    started = time.perf_counter()
    # train_residual_vq already evaluates on the training actions, which for search encoding takes a minute.
    vq, vq_report = train_residual_vq(actions, ResidualVQConfig(), training, log_dir=work_dir / "tb")
    train_seconds = time.perf_counter() - started
    binning = BinningTokenizer.fit(actions)
    vq.save(vq_dir)
    binning.save(binning_dir)
    reports = {"vq": vq_report, "binning": evaluate_tokenizer(binning, actions)}
    return vq, binning, {"reports": reports, "train_seconds": train_seconds, "training": training}


def render_page(rows: list[dict], skipped: dict[str, str], details: dict[str, Any], args: argparse.Namespace) -> str:
    vq_report, binning_report = details["reports"]["vq"], details["reports"]["binning"]
    training: TrainingConfig = details["training"]
    config = ResidualVQConfig()
    embodiments = f" --embodiments {' '.join(args.embodiments)}" if args.embodiments else ""
    vq_steps = f" --vq-steps {args.vq_steps}" if args.vq_steps is not None else ""
    overrides = "".join(f" --episodes-for {value}" for value in args.episodes_for)
    overrides += "".join(f" --vq-weight {value}" for value in args.vq_weight)
    lines = [
        BEGIN_MARKER,
        f"Command: `OMP_NUM_THREADS=1 nice -n 10 python experiments/tokenizer_replay.py{embodiments} "
        f"--train-episodes {args.train_episodes} --episodes {args.episodes}{overrides}{vq_steps}` "
        "on a shared 2-core CPU machine.",
        "",
        f"Tokenizers were trained on {args.train_episodes} expert episodes per embodiment (seeds 0 to "
        f"{args.train_episodes - 1}); replay uses seeds from {REPLAY_SEED_OFFSET}. The VQ is the default "
        f"`ResidualVQConfig` ({config.num_quantizers} codebooks x {config.codebook_size} codes, code dim "
        f"{config.code_dim}, {config.mlp_layers}-layer MLPs of width {config.hidden_width}, "
        f"{config.normalization.value} normalization, search encoding {'on' if config.search_encoding else 'off'}, "
        f"clipping to the data range {'on' if config.clip_to_data_range else 'off'}), trained with "
        f"`TrainingConfig({_changed_fields(training)})`; training and its evaluation on the training actions "
        f"took {details['train_seconds']:.0f} s. "
        "Binning uses 256 bins per dimension. Recon MSE is on the training actions, in raw action units "
        "and after each embodiment's normalization.",
        "",
        "| embodiment | episodes | expert success | VQ success | binning success | expert return | VQ return "
        "| binning return | VQ recon MSE | VQ normalized MSE | binning recon MSE | binning normalized MSE |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        name = row["name"]
        lines.append(
            f"| {name} | {row['episodes']} | {row['plain'].success_rate:.2f} | {row['vq'].success_rate:.2f} | "
            f"{row['binning'].success_rate:.2f} | {row['plain'].mean_return:.1f} | {row['vq'].mean_return:.1f} | "
            f"{row['binning'].mean_return:.1f} | {vq_report.recon_mse[name]:.2e} | "
            f"{vq_report.normalized_recon_mse[name]:.2e} | {binning_report.recon_mse[name]:.2e} | "
            f"{binning_report.normalized_recon_mse[name]:.2e} |"
        )
    usage = ", ".join(f"position {i}: perplexity {u.perplexity:.0f}, {u.dead_codes} dead" for i, u in
                      enumerate(vq_report.codebooks))
    lines += ["", f"VQ codebook usage on the training actions: {usage}."]
    if skipped:
        lines += ["", "Skipped embodiments (expert not available when this ran):", ""]
        lines += [f"- {name}: {reason}" for name, reason in sorted(skipped.items())]
    lines.append(END_MARKER)
    return "\n".join(lines)


def _changed_fields(config: TrainingConfig) -> str:
    """Return the fields of `config` that differ from the defaults, as ``name=value`` text."""
    defaults = asdict(TrainingConfig())
    changed = [f"{name}={value!r}" for name, value in asdict(config).items() if defaults[name] != value]
    return ", ".join(changed) if changed else "defaults"


def write_section(section: str) -> None:
    """Replace the replay section of the results page, keeping the rest of the page."""
    write_marked_section(RESULTS_PAGE, BEGIN_MARKER, END_MARKER, section, "Closed-loop replay", "Action tokenizers")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embodiments", nargs="+", help="Continuous embodiments (default: all registered).")
    parser.add_argument("--train-episodes", type=int, default=10, help="Expert episodes per embodiment for training.")
    parser.add_argument("--episodes", type=int, default=10, help="Replay episodes per embodiment and condition.")
    parser.add_argument(
        "--episodes-for",
        action="append",
        default=[],
        metavar="PREFIX=N",
        help="Replay N episodes for embodiments whose name starts with PREFIX (repeatable), like mujoco=20.",
    )
    parser.add_argument("--vq-steps", type=int, help="VQ training steps (default: TrainingConfig's default).")
    parser.add_argument(
        "--vq-weight",
        action="append",
        default=[],
        metavar="NAME=W",
        help="Multiply the VQ batch share of embodiment NAME by W (repeatable), like mujoco/HalfCheetah-v5=4.",
    )
    parser.add_argument("--work-dir", type=Path, default=Path("runs/tokenizer_replay"), help="Tokenizer output folder.")
    args = parser.parse_args()
    try:
        overrides = parse_episode_overrides(args.episodes_for)
        vq_weights = parse_embodiment_weights(args.vq_weight)
    except ValueError as error:
        parser.error(str(error))
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
    vq, binning, details = train_tokenizers(actions, args.work_dir, args.vq_steps, vq_weights)

    rows = []
    for name, adapter in tqdm(adapters.items(), desc="replay"):
        row = {"name": name, "episodes": episodes_for(name, args.episodes, overrides)}
        for label, tokenizer in (("plain", None), ("vq", vq), ("binning", binning)):
            row[label] = replay(adapter, row["episodes"], tokenizer)
        logger.info("%s: %s", name, {key: value for key, value in row.items() if key not in ("name", "episodes")})
        rows.append(row)
    write_section(render_page(rows, skipped, details, args))
    logger.info("Wrote %s.", RESULTS_PAGE)


if __name__ == "__main__":
    main()
