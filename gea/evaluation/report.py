"""Write an evaluation's outputs: JSON, CSV, a markdown table, a bar chart, videos and TensorBoard scalars."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
from pathlib import Path
from typing import Optional

from gea.evaluation.harness import EvaluationResult

logger = logging.getLogger(__name__)


def markdown_table(result: EvaluationResult) -> str:
    """Return the per-environment table with both cross-environment averages, labelled."""
    lines = [
        "| environment | episodes | success | 95 % Wilson interval | mean length | decode-valid rate |",
        "|---|---|---|---|---|---|",
    ]
    for s in result.summaries:
        lines.append(
            f"| {s.embodiment} | {s.episodes} | {100 * s.success_rate:.1f} % | "
            f"[{100 * s.success_low:.1f}, {100 * s.success_high:.1f}] | {s.mean_length:.1f} | "
            f"{100 * s.decode_valid_rate:.1f} % |"
        )
    lines.append(f"| macro average (each environment weighs the same) | | {100 * result.macro_success_rate:.1f} % | | | |")
    lines.append(
        f"| episode-weighted average (each episode weighs the same) | {len(result.episodes)} | "
        f"{100 * result.episode_weighted_success_rate:.1f} % | | | |"
    )
    return "\n".join(lines) + "\n"


def _write_bar_chart(result: EvaluationResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [s.embodiment for s in result.summaries]
    rates = [100 * s.success_rate for s in result.summaries]
    errors = [
        [100 * (s.success_rate - s.success_low) for s in result.summaries],
        [100 * (s.success_high - s.success_rate) for s in result.summaries],
    ]
    figure, axis = plt.subplots(figsize=(max(5.0, 0.6 * len(names) + 2), 5.5))
    axis.bar(range(len(names)), rates, yerr=errors, capsize=4, color="tab:blue")
    axis.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axis.set_ylim(0, 105)
    axis.set_ylabel("success rate (%)\nbars: 95 % Wilson interval")
    axis.set_title(f"success per environment, {result.config.episodes} episodes each; macro average {100 * result.macro_success_rate:.1f} %")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _write_videos(result: EvaluationResult, folder: Path) -> list[Path]:
    import imageio.v2 as imageio

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for (embodiment, seed), frames in sorted(result.videos.items()):
        path = folder / f"{embodiment.replace('/', '__')}_seed{seed}.gif"
        # imageio 2.38 with Pillow reads GIF frame durations in milliseconds.
        imageio.mimsave(path, frames, duration=100, loop=0)
        paths.append(path)
    return paths


def write_report(result: EvaluationResult, out_dir: Path, manifest: dict, tensorboard_step: Optional[int] = 0) -> dict[str, Path]:
    """Write every output under `out_dir` and return their paths by kind."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / "results.json",
        "csv": out_dir / "results.csv",
        "markdown": out_dir / "results.md",
        "chart": out_dir / "success.png",
        "videos": out_dir / "videos",
        "tensorboard": out_dir / "tensorboard",
        "manifest": out_dir / "manifest.json",
    }
    payload = {
        "config": dataclasses.asdict(result.config),
        "summaries": [dataclasses.asdict(s) for s in result.summaries],
        "macro_success_rate": result.macro_success_rate,
        "episode_weighted_success_rate": result.episode_weighted_success_rate,
        "episodes": [dataclasses.asdict(e) for e in result.episodes],
    }
    paths["json"].write_text(json.dumps(payload, indent=2))
    with open(paths["csv"], "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[f.name for f in dataclasses.fields(result.summaries[0])])
        writer.writeheader()
        writer.writerows(dataclasses.asdict(s) for s in result.summaries)
    paths["markdown"].write_text(markdown_table(result))
    paths["manifest"].write_text(json.dumps(manifest, indent=2))
    _write_bar_chart(result, paths["chart"])
    _write_videos(result, paths["videos"])
    if tensorboard_step is not None:
        write_tensorboard(result, paths["tensorboard"], tensorboard_step)
    return paths


def write_tensorboard(result: EvaluationResult, log_dir: Path, step: int) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(log_dir))
    for s in result.summaries:
        writer.add_scalar(f"eval/{s.embodiment}/success_rate", s.success_rate, step)
        writer.add_scalar(f"eval/{s.embodiment}/decode_valid_rate", s.decode_valid_rate, step)
        writer.add_scalar(f"eval/{s.embodiment}/mean_length", s.mean_length, step)
    writer.add_scalar("eval/macro_success_rate", result.macro_success_rate, step)
    writer.add_scalar("eval/episode_weighted_success_rate", result.episode_weighted_success_rate, step)
    writer.close()
