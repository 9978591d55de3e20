"""Encode and decode throughput of the residual VQ and binning tokenizers, side by side in one run.

Both tokenizers are measured in the same process, alternating per batch size, so their
ratio stays valid even on a busy machine. Absolute actions/s vary with the machine's load. Throughput does
not depend on training quality, so the VQ is the default `ResidualVQConfig` after a few
training steps that initialize its codebooks. Results go to ``experiments/tokenizers.md``
between the benchmark markers.

Usage:
    nice -n 10 python experiments/tokenizer_benchmark.py
"""

from __future__ import annotations

import argparse
import logging
import platform
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from gea.results_page import write_marked_section
from gea_tokenizers import BinningTokenizer, ContinuousTokenizer, ResidualVQConfig, TrainingConfig, train_residual_vq

RESULTS_PAGE = Path(__file__).with_name("tokenizers.md")
BEGIN_MARKER = "<!-- benchmark:begin -->"
END_MARKER = "<!-- benchmark:end -->"
EMBODIMENT = "bench/arm"
ACTION_WIDTH = 4  # Meta-World's action width
BATCH_SIZES = (1, 256)


def actions_per_second(function: Callable[[], object], batch_size: int, min_seconds: float) -> float:
    """Call `function` repeatedly for at least `min_seconds` and return processed actions per second."""
    function()  # warm-up
    calls = 0
    started = time.perf_counter()
    while True:
        function()
        calls += 1
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            return calls * batch_size / elapsed


def measure(tokenizers: dict[str, ContinuousTokenizer], min_seconds: float) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for batch_size in BATCH_SIZES:
        actions = rng.uniform(-1, 1, size=(batch_size, ACTION_WIDTH)).astype(np.float32)
        for name, tokenizer in tokenizers.items():
            codes = tokenizer.encode(EMBODIMENT, actions)
            encode = actions_per_second(lambda: tokenizer.encode(EMBODIMENT, actions), batch_size, min_seconds)
            decode = actions_per_second(lambda: tokenizer.decode(EMBODIMENT, codes), batch_size, min_seconds)
            rows.append({"tokenizer": name, "batch": batch_size, "encode": encode, "decode": decode})
    return rows


def _describe_vq() -> str:
    config = ResidualVQConfig()
    encoding = "search over all code pairs" if config.search_encoding else "greedy residual"
    return (
        f"{config.num_quantizers} x {config.codebook_size} codes, code dim {config.code_dim}, "
        f"{config.mlp_layers}-layer MLPs of width {config.hidden_width}, {encoding} encoding"
    )


def render(rows: list[dict], threads: int) -> str:
    lines = [
        BEGIN_MARKER,
        f"Command: `python experiments/tokenizer_benchmark.py --threads {threads}`; "
        f"CPU ({platform.machine()}, torch threads: {threads}) "
        "on a shared 2-core machine, so absolute numbers vary between runs; the VQ/binning ratio was measured side "
        "by side in one run.",
        "",
        f"Actions of width {ACTION_WIDTH}. VQ: default `ResidualVQConfig` ({_describe_vq()}). "
        "Binning: 256 bins per dimension.",
        "",
        "| tokenizer | batch | encode actions/s | decode actions/s |",
        "|---|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row['tokenizer']} | {row['batch']} | {row['encode']:,.0f} | {row['decode']:,.0f} |")
    by_key = {(row["tokenizer"], row["batch"]): row for row in rows}
    lines.append("")
    for batch_size in BATCH_SIZES:
        vq, binning = by_key[("residual VQ", batch_size)], by_key[("binning", batch_size)]
        lines.append(
            f"- batch {batch_size}: binning encodes {binning['encode'] / vq['encode']:.1f}x and decodes "
            f"{binning['decode'] / vq['decode']:.1f}x as many actions/s as the VQ."
        )
    lines.append(END_MARKER)
    return "\n".join(lines)


def write_section(section: str) -> None:
    """Replace the benchmark section of the results page, keeping the rest of the page."""
    write_marked_section(RESULTS_PAGE, BEGIN_MARKER, END_MARKER, section, "Throughput", "Action tokenizers")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--min-seconds", type=float, default=1.0, help="Minimum timing window per measurement.")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default: %(default)s). On an oversubscribed CPU, two OpenMP threads made "
        "batch-1 VQ encoding about 40x slower than one, because the threads spin-wait for each other.",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    torch.set_num_threads(args.threads)

    data = {EMBODIMENT: np.random.default_rng(1).uniform(-1, 1, size=(4096, ACTION_WIDTH)).astype(np.float32)}
    vq, _ = train_residual_vq(data, ResidualVQConfig(), TrainingConfig(steps=5), progress=False)
    tokenizers = {"residual VQ": vq, "binning": BinningTokenizer.fit(data)}
    rows = measure(tokenizers, args.min_seconds)
    section = render(rows, torch.get_num_threads())
    print(section)
    write_section(section)


if __name__ == "__main__":
    main()
