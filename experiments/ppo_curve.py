"""Plot a PPO run's learning curve: evaluation success with 95 % Wilson intervals and rollout success.

Usage: python experiments/ppo_curve.py RUN_DIR [--out experiments/results/ppo_curve.png]

Evaluation points come from ``RUN_DIR/eval_history.jsonl``, which `gea ppo` appends to at
every evaluation. Iteration 0 is the SFT checkpoint when the run set ``eval_at_start``.
Rollout success comes from ``rollout/<env>/success_rate`` in ``RUN_DIR/tensorboard``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from gea.rl.run import TENSORBOARD_FOLDER, read_eval_history  # noqa: E402


def rollout_success(run_dir: Path, embodiment: str) -> tuple[list[int], list[float]]:
    """Return (iterations, rollout success rates) of `embodiment` from the run's TensorBoard logs."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / TENSORBOARD_FOLDER))
    events.Reload()
    tag = f"rollout/{embodiment}/success_rate"
    if tag not in events.Tags()["scalars"]:
        return [], []
    scalars = events.Scalars(tag)
    return [event.step for event in scalars], [event.value for event in scalars]


def plot(run_dir: Path, out: Path) -> Path:
    history = read_eval_history(run_dir)
    if not history:
        raise FileNotFoundError(f"{run_dir} has no evaluation records; run `gea ppo` with eval_every > 0.")
    embodiments = sorted(history[0]["success"])
    figure, axis = plt.subplots(figsize=(6.4, 4.0))
    for embodiment in embodiments:
        iterations = [record["iteration"] for record in history]
        rates = [100 * record["success"][embodiment]["rate"] for record in history]
        low = [rate - 100 * record["success"][embodiment]["low"] for rate, record in zip(rates, history)]
        high = [100 * record["success"][embodiment]["high"] - rate for rate, record in zip(rates, history)]
        episodes = history[0]["success"][embodiment]["episodes"]
        axis.errorbar(iterations, rates, yerr=[low, high], marker="o", capsize=4,
                      label=f"{embodiment} evaluation ({episodes} episodes, 95 % Wilson)")
        steps, rollout = rollout_success(run_dir, embodiment)
        if steps:
            axis.plot(steps, [100 * value for value in rollout], alpha=0.5, label=f"{embodiment} rollouts (RLlib's per-iteration mean)")
    axis.set_xlabel("PPO iteration (0 = SFT checkpoint)")
    axis.set_ylabel("success rate (%)")
    axis.set_ylim(0, 100)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="Run folder of `gea ppo`.")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ppo_curve.png", help="PNG to write.")
    args = parser.parse_args()
    print(plot(args.run_dir, args.out))


if __name__ == "__main__":
    main()
