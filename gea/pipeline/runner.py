"""Run the stages of a `PipelineConfig` in order, reusing finished ones, and report time and memory."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Iterable

from gea.pipeline.config import STAGES, PipelineConfig
from gea.pipeline.memory import PeakMemoryMonitor
from gea.pipeline.stages import RunPaths, run_collect, run_eval, run_ppo, run_sft, run_tokenizer

logger = logging.getLogger(__name__)

GIB = 1024**3


def _stage_function(name: str, config: PipelineConfig, paths: RunPaths):
    if name == "collect":
        return lambda: run_collect(config, paths)
    if name == "tokenizer":
        return lambda: run_tokenizer(config, paths)
    if name == "sft":
        return lambda: run_sft(config, paths)
    if name == "eval_sft":
        return lambda: run_eval(config, paths, paths.summary("sft")["checkpoint"], "eval_sft")
    if name == "ppo":
        return lambda: run_ppo(config, paths, paths.summary("sft")["checkpoint"])
    if name == "eval_ppo":
        return lambda: run_eval(config, paths, paths.summary("ppo")["checkpoint"], "eval_ppo")
    raise ValueError(f"Unknown stage {name!r}; stages are {list(STAGES)}.")


def _limit_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    # Worker processes (collection, evaluation, Ray env runners) read these when they start.
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)


def run_pipeline(config: PipelineConfig, force: Iterable[str] = ()) -> dict:
    """Run every stage not yet done; `force` redoes the named stages and every stage after them."""
    paths = RunPaths(Path(config.run_dir))
    paths.root.mkdir(parents=True, exist_ok=True)
    if config.torch_threads is not None:
        _limit_threads(config.torch_threads)
    for name in force:
        if name not in STAGES:
            raise ValueError(f"Unknown stage {name!r} for --force; stages are {list(STAGES)}.")
        logger.info("Forcing stages %s.", paths.invalidate_from(name))
    stages = [s for s in STAGES if config.ppo is not None or s not in ("ppo", "eval_ppo")]

    timings: dict[str, float] = {}
    peaks: dict[str, float] = {}
    with PeakMemoryMonitor() as monitor:
        for name in stages:
            if paths.is_done(name):
                logger.info("Stage %s: reusing %s.", name, paths.stage(name))
                if paths.summary(name).get("config") != json.loads(json.dumps(config.section_for(name))):
                    logger.warning(
                        "Stage %s: its config section changed since it ran; the old outputs are reused. "
                        "Rerun with --force %s to redo it.", name, name,
                    )
                continue
            logger.info("Stage %s: starting.", name)
            paths.stage(name).mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            summary = _stage_function(name, config, paths)()
            timings[name] = time.perf_counter() - started
            peaks[name] = monitor.reset_peak() / GIB
            summary.update(seconds=timings[name], peak_rss_gib=peaks[name], config=config.section_for(name))
            paths.mark_done(name, summary)
            logger.info("Stage %s: done in %.0f s, peak memory of the process tree %.2f GiB.", name, timings[name], peaks[name])

    total = sum(timings.values())
    for name, seconds in timings.items():
        logger.info("  %-9s %7.0f s  %5.1f %% of this run  peak %.2f GiB", name, seconds, 100 * seconds / total, peaks[name])
    return {name: paths.summary(name) for name in stages}


def results_table(config: PipelineConfig, summaries: dict) -> str:
    """Return the markdown table of success per environment after SFT and after PPO."""
    columns = [stage for stage in ("eval_sft", "eval_ppo") if stage in summaries]
    header = "| environment | " + " | ".join(f"success after {s.removeprefix('eval_').upper()} [95 % CI]" for s in columns) + " |"
    lines = [header, "|---" * (len(columns) + 1) + "|"]
    for env in config.envs:
        cells = []
        for stage in columns:
            rate, low, high = summaries[stage]["success"][env]
            cells.append(f"{100 * rate:.0f} % [{100 * low:.0f}, {100 * high:.0f}]")
        lines.append(f"| {env} | " + " | ".join(cells) + " |")
    macro = " | ".join(f"{100 * summaries[s]['macro_success_rate']:.0f} %" for s in columns)
    lines.append(f"| macro average | {macro} |")
    return "\n".join(lines)
