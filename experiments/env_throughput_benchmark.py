"""Environment steps per second with rendering at the training image size, for every adapter.

Each measurement steps the adapter's environment with its expert and calls
`adapter.observe` after every step (the frame the policy would see), for a fixed wall
time. "1 process" runs one environment; "N processes" runs one environment in each of N
worker processes at once and reports their summed rate, so the ratio shows how well
collection and evaluation scale across cores.

Usage:
    python experiments/env_throughput_benchmark.py --image-size 64 --seconds 4 --workers 2 \
        --out experiments/results/env_throughput.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def measure(name: str, image_size: int, seconds: float, seed: int = 0) -> tuple[int, float]:
    """Step `name` with its expert for about `seconds` seconds; return (steps, elapsed seconds)."""
    import torch

    from gea_envs import get_adapter

    torch.set_num_threads(1)
    adapter = get_adapter(name)
    env = adapter.make_env(seed=seed, image_size=image_size)
    steps = 0
    try:
        raw_obs, info = env.reset(seed=seed)
        expert = adapter.make_expert(env)
        expert.reset(env, raw_obs, info)
        adapter.observe(env, raw_obs, info)
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            action = expert.act(env, raw_obs, info)
            raw_obs, reward, terminated, truncated, info = env.step(adapter.to_env_action(action))
            adapter.observe(env, raw_obs, info)
            steps += 1
            if terminated or truncated:
                seed += 1
                raw_obs, info = env.reset(seed=seed)
                expert = adapter.make_expert(env)
                expert.reset(env, raw_obs, info)
        return steps, time.perf_counter() - start
    finally:
        env.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=64, help="Frame size in pixels.")
    parser.add_argument("--seconds", type=float, default=4.0, help="Wall time of each measurement.")
    parser.add_argument("--workers", type=int, default=2, help="Processes in the parallel measurement.")
    parser.add_argument("--envs", nargs="*", default=None, help="Embodiments (default: all registered).")
    parser.add_argument("--out", type=Path, default=None, help="Write the results as JSON here.")
    args = parser.parse_args()

    from gea_envs import ADAPTERS

    names = args.envs or ADAPTERS.names()
    context = multiprocessing.get_context("spawn")
    rows = []
    print(f"| environment | steps/s, 1 process | steps/s, {args.workers} processes | ratio |")
    print("|---|---|---|---|")
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=context) as pool:
        for name in names:
            single_steps, single_time = pool.submit(measure, name, args.image_size, args.seconds).result()
            futures = [pool.submit(measure, name, args.image_size, args.seconds, 10 * i) for i in range(args.workers)]
            parallel = sum(steps / elapsed for steps, elapsed in (f.result() for f in futures))
            single = single_steps / single_time
            rows.append({"env": name, "single": single, "parallel": parallel, "workers": args.workers})
            print(f"| {name} | {single:.0f} | {parallel:.0f} | {parallel / single:.2f} |", flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"image_size": args.image_size, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
