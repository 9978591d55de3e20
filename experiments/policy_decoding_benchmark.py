"""Benchmark GEAPolicy's batched, KV-cached, constrained decoding against one `generate` call per environment.

Both arms decode greedily from the same prompts (three observations of one 56 px frame
each, with the actions between them) on the tiny CPU model, for a batch that mixes
three action grammars round-robin:

- continuous: 4 tokens, each one of 256 bins (`FixedLengthConstraint`);
- discrete: one of 7 action names, tokenized, then an end token (`TrieConstraint`);
- UI: a kind token, then an x and a y grid cell (`FixedLengthConstraint`).

The batched arm is one `GEAPolicy.act` call. The baseline embeds each prompt with
`GEAPolicy.embed` and calls ``model.generate`` on it alone, constrained through
``prefix_allowed_tokens_fn``. Both arms include frame preprocessing and encoding.
Arms alternate within each repeat so that machine load hits both alike, and the page
reports median times. The page also bounds the speedup: the batched arm's FLOPs in matrix
products divided by the float32 matmul throughput measured in the same run give a time
floor per environment. PyTorch runs on one thread by default (``--threads``) because
spinning worker threads on a shared machine inflate both wall and CPU time. Peak memory
is the rise of the process's peak RSS over the RSS before the call, measured by
resetting the kernel's peak counter (``/proc/self/clear_refs``) after returning freed
heap pages to the kernel (``malloc_trim``), so it covers PyTorch's allocations too.

Run from the repository root:

    python experiments/policy_decoding_benchmark.py --out experiments/policy.md
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import logging
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from gea.policy import GEAPolicy, GEAPolicyConfig, PolicyInput, build_tiny_model
from gea_envs import EmbodimentPrompt
from gea_tokenizers.constraint import FixedLengthConstraint, PrefixConstraint, TrieConstraint
from gea.manifest import describe_machine

logger = logging.getLogger(__name__)

ACTION_TOKENS = [f"<act_{index}>" for index in range(512)]
END_TOKEN = "<act_511>"
DISCRETE_NAMES = ["turn left", "turn right", "move forward", "pick up", "drop", "toggle", "done"]
PROMPTS = {
    "continuous": EmbodimentPrompt(
        agent="a Sawyer arm", action_space="4 end-effector deltas", simulator="MuJoCo", camera="corner camera"
    ),
    "discrete": EmbodimentPrompt(
        agent="a triangle agent", action_space="one of 7 named actions", simulator="MiniGrid", camera="top-down view"
    ),
    "ui": EmbodimentPrompt(
        agent="a mouse and keyboard", action_space="click a grid cell or type", simulator="Chromium", camera="screenshot"
    ),
}
INSTRUCTION = "complete the task"
IMAGE_SIZE = 56
HISTORY = 3


@dataclass
class Measurement:
    seconds: float
    cpu_seconds: float
    peak_rss_mib: float


def build_policy() -> GEAPolicy:
    texts = [INSTRUCTION, *DISCRETE_NAMES]
    for prompt in PROMPTS.values():
        texts += [prompt.agent, prompt.action_space, prompt.simulator, prompt.camera]
    model, tokenizer, processor = build_tiny_model(texts, ACTION_TOKENS, seed=0)
    return GEAPolicy(model, tokenizer, processor, GEAPolicyConfig(history_length=HISTORY))


def build_constraints(policy: GEAPolicy) -> dict[str, PrefixConstraint]:
    tokenizer = policy.tokenizer
    act = [tokenizer.convert_tokens_to_ids(token) for token in ACTION_TOKENS]
    end = tokenizer.convert_tokens_to_ids(END_TOKEN)
    names = [tokenizer.encode(" " + name, add_special_tokens=False) + [end] for name in DISCRETE_NAMES]
    return {
        "continuous": FixedLengthConstraint([act[:256]] * 4),
        "discrete": TrieConstraint(names),
        "ui": FixedLengthConstraint([act[256:258], act[260:276], act[280:296]]),
    }


def build_workload(
    policy: GEAPolicy, batch_size: int, rng: np.random.Generator
) -> tuple[list[PolicyInput], list[PrefixConstraint]]:
    grammars = build_constraints(policy)
    kinds = list(grammars)
    inputs, constraints = [], []
    for row in range(batch_size):
        kind = kinds[row % len(kinds)]
        frames = [[rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)] for _ in range(HISTORY)]
        past_actions = [grammars[kind].allowed_next([])[:1] * 2 for _ in range(HISTORY - 1)]
        inputs.append(policy.build_input(PROMPTS[kind], INSTRUCTION, frames, past_actions))
        constraints.append(grammars[kind])
    return inputs, constraints


def decode_batched(policy: GEAPolicy, inputs: Sequence[PolicyInput], constraints) -> list[list[int]]:
    return policy.act(inputs, constraints, temperature=0).token_ids


def prefill_only(policy: GEAPolicy, inputs: Sequence[PolicyInput], constraints) -> None:
    """Run the prefill of `GEAPolicy.act` alone: frame encoding and the prompts' pass through the model."""
    # `_prefill` is private, but timing it apart from the decoding steps is the point here.
    with torch.no_grad():
        policy._prefill(inputs)


def model_flops(function: Callable[[], object]) -> int:
    """Count the FLOPs of the matrix products `function` runs: linear, convolution and attention.

    FlopCounterMode (torch 2.13) counts nothing for the CPU flash-attention kernel, so the
    count runs attention through PyTorch's math backend, whose matrix products it counts.
    """
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        function()
    return counter.get_total_flops()


def matmul_peak_gflops(size: int = 1024, calls: int = 8) -> float:
    """Measure float32 ``torch.matmul`` throughput in GFLOP/s of CPU time, at the current thread count."""
    left, right = torch.randn(size, size), torch.randn(size, size)
    torch.matmul(left, right)
    cpu_start = time.process_time()
    for _ in range(calls):
        torch.matmul(left, right)
    return 2 * size**3 * calls / (time.process_time() - cpu_start) / 1e9


def decode_per_environment(policy: GEAPolicy, inputs: Sequence[PolicyInput], constraints) -> list[list[int]]:
    """Decode each environment with its own ``generate`` call, constrained through ``prefix_allowed_tokens_fn``."""
    base = policy.base_model
    eos = policy.tokenizer.eos_token_id
    actions = []
    with torch.no_grad():
        for item, constraint in zip(inputs, constraints):
            batch = policy.embed([item.input_ids], [item.frames])

            def allowed_tokens(batch_id: int, generated: torch.Tensor, constraint=constraint) -> list[int]:
                # With inputs_embeds only, generate passes just the generated ids; a complete
                # action allows only eos, which stops generation.
                return constraint.allowed_next(generated.tolist()) or [eos]

            output = base.generate(
                inputs_embeds=batch.inputs_embeds,
                attention_mask=batch.ids.attention_mask,
                max_new_tokens=constraint.max_length,
                do_sample=False,
                prefix_allowed_tokens_fn=allowed_tokens,
                eos_token_id=eos,
                pad_token_id=policy.tokenizer.pad_token_id,
            )
            actions.append([token for token in output[0].tolist() if token != eos])
    return actions


def _status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"/proc/self/status has no {field} line; this benchmark needs Linux.")
    return int(match.group(1))


_LIBC = ctypes.CDLL(ctypes.util.find_library("c"))


def measure(function: Callable[[], object]) -> tuple[Measurement, object]:
    """Time `function` once (wall and process CPU time) and record how far the peak RSS rose above the RSS before it."""
    # Without the trim, an arm could reuse pages the previous arm freed but glibc kept,
    # and its peak would not show in RSS.
    _LIBC.malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = _status_kib("VmRSS")
    start, cpu_start = time.perf_counter(), time.process_time()
    result = function()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    peak = _status_kib("VmHWM")
    return Measurement(seconds, cpu_seconds, (peak - before) / 1024), result


def run(batch_sizes: Sequence[int], repeats: int, seed: int) -> list[dict]:
    """Measure both arms at each batch size and return one result row per batch size."""
    policy = build_policy()
    policy.eval()
    rng = np.random.default_rng(seed)
    rows = []
    for batch_size in tqdm(batch_sizes, desc="batch sizes"):
        inputs, constraints = build_workload(policy, batch_size, rng)
        batched_actions = decode_batched(policy, inputs, constraints)  # warm-up
        baseline_actions = decode_per_environment(policy, inputs, constraints)  # warm-up
        agreement = sum(a == b for a, b in zip(batched_actions, baseline_actions))
        batched, baseline, prefill, peaks = [], [], [], []
        for _ in range(repeats):
            batched.append(measure(lambda: decode_batched(policy, inputs, constraints))[0])
            baseline.append(measure(lambda: decode_per_environment(policy, inputs, constraints))[0])
            prefill.append(measure(lambda: prefill_only(policy, inputs, constraints))[0])
            peaks.append(matmul_peak_gflops())
        rows.append(summarize(batch_size, batched, baseline, prefill, statistics.median(peaks)))
        rows[-1]["agreement"] = f"{agreement}/{batch_size}"
        rows[-1]["prompt_tokens"] = statistics.mean(len(item.input_ids) for item in inputs)
        batched_flops = model_flops(lambda: decode_batched(policy, inputs, constraints))
        baseline_flops = model_flops(lambda: decode_per_environment(policy, inputs, constraints))
        rows[-1]["batched_gflop_per_row"] = batched_flops / batch_size / 1e9
        rows[-1]["baseline_gflop_per_row"] = baseline_flops / batch_size / 1e9
        finish_bound(rows[-1])
        logger.info("batch %d: %s", batch_size, rows[-1])
    return rows


def summarize(
    batch_size: int,
    batched: Sequence[Measurement],
    baseline: Sequence[Measurement],
    prefill: Sequence[Measurement],
    peak_gflops: float,
) -> dict:
    """Reduce the repeats of one batch size to medians and ratios."""
    batched_seconds = statistics.median(m.seconds for m in batched)
    baseline_seconds = statistics.median(m.seconds for m in baseline)
    batched_cpu = statistics.median(m.cpu_seconds for m in batched)
    baseline_cpu = statistics.median(m.cpu_seconds for m in baseline)
    return {
        "batch_size": batch_size,
        "batched_actions_per_s": batch_size / batched_seconds,
        "baseline_actions_per_s": batch_size / baseline_seconds,
        "speedup": baseline_seconds / batched_seconds,
        "cpu_speedup": baseline_cpu / batched_cpu,
        "batched_cpu_ms_per_row": 1000 * batched_cpu / batch_size,
        "baseline_cpu_ms_per_row": 1000 * baseline_cpu / batch_size,
        "prefill_share": statistics.median(m.cpu_seconds for m in prefill) / batched_cpu,
        "batched_peak_mib": max(m.peak_rss_mib for m in batched),
        "baseline_peak_mib": max(m.peak_rss_mib for m in baseline),
        "peak_gflops": peak_gflops,
    }


def finish_bound(row: dict) -> None:
    """Add a batched row's time floor from its matrix products and the speedup it allows over the measured baseline."""
    row["floor_ms_per_row"] = 1000 * row["batched_gflop_per_row"] / row["peak_gflops"]
    row["speedup_bound"] = row["baseline_cpu_ms_per_row"] / row["floor_ms_per_row"]


def machine_description() -> str:
    return describe_machine()


def render_page(rows: list[dict], command: str, repeats: int, policy_parameters: float) -> str:
    lines = [
        "# Policy decoding benchmark",
        "",
        "Greedy, constrained decoding of one action per environment with the tiny CPU policy",
        f"({policy_parameters:.1f} M parameters with the value head, 3 observations of one 56 px frame",
        "per prompt, 50 image tokens per frame). Batches mix a continuous grammar (4 tokens of 256 bins), a discrete one",
        "(7 tokenized names plus an end token) and a UI one (3 tokens) round-robin.",
        "",
        "- **batched**: one `GEAPolicy.act` call: frames of the whole batch preprocessed and encoded together,",
        "  the text before the first frame run once per distinct prefix (one per grammar here) with its KV",
        "  cache copied to the rows that share it, left padding, one forward pass per position, per-row logit masks.",
        "- **per environment**: one `model.generate` call per environment on `GEAPolicy.embed` output,",
        "  constrained with `prefix_allowed_tokens_fn`. It shares frame preprocessing and encoding with the",
        "  batched arm, so speedups of that code reach both arms.",
        "",
        f"Times are medians of {repeats} alternating repeats after one warm-up call per arm; actions/s",
        "use wall time. The CPU speedup is the ratio of process CPU times, which other jobs on a",
        "shared machine disturb less than wall time. Peak memory is the largest rise of peak RSS over",
        "the RSS before a call. Agreement counts environments where both arms chose the same tokens.",
        "Prefill share is the CPU time of the batched arm's prefill (frame encoding and the prompts' pass",
        "through the model, without decoding) as a fraction of its whole CPU time.",
        "",
        "| batch | batched actions/s | per-environment actions/s | speedup (wall) | speedup (CPU) |"
        " prefill share | batched peak MiB | per-environment peak MiB | agreement | mean prompt tokens |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['batch_size']} | {row['batched_actions_per_s']:.1f} | {row['baseline_actions_per_s']:.1f} "
            f"| {row['speedup']:.1f}x | {row['cpu_speedup']:.1f}x | {row['prefill_share']:.0%} "
            f"| {row['batched_peak_mib']:.0f} | {row['baseline_peak_mib']:.0f} "
            f"| {row['agreement']} | {row['prompt_tokens']:.0f} |"
        )
    lines += render_bound(rows)
    lines += ["", f"Command: `{command}`", "", f"Machine: {machine_description()}", ""]
    return "\n".join(lines)


def render_bound(rows: list[dict]) -> list[str]:
    lines = [
        "",
        "## What bounds the speedup",
        "",
        "Both arms run every prompt token through the language model, so the matrix products of the",
        "prefill are work that batching cannot remove, only share where prompts repeat. The floor is",
        "the batched arm's FLOPs per environment in matrix products (linear, convolution and attention",
        "layers, counted with `torch.utils.flop_counter.FlopCounterMode` with attention on the math",
        "backend) divided by the float32 `torch.matmul` throughput measured in the same run (1024 x 1024",
        "products, median of the repeats). The batched arm cannot run faster than its own matrix products",
        "at that throughput, so the per-environment CPU time divided by the floor bounds its CPU speedup",
        "from above. A larger speedup needs fewer FLOPs per environment (more prompt tokens shared or",
        "cached, or fewer image tokens), not less overhead.",
        "",
        "| batch | per-environment GFLOP/env | batched GFLOP/env | matmul peak GFLOP/s | floor ms/env |"
        " batched CPU ms/env | per-environment CPU ms/env | speedup bound |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['batch_size']} | {row['baseline_gflop_per_row']:.2f} | {row['batched_gflop_per_row']:.2f} "
            f"| {row['peak_gflops']:.0f} | {row['floor_ms_per_row']:.1f} | {row['batched_cpu_ms_per_row']:.1f} "
            f"| {row['baseline_cpu_ms_per_row']:.1f} | {row['speedup_bound']:.1f}x |"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32], help="Environments per batch.")
    parser.add_argument("--repeats", type=int, default=5, help="Timed calls per arm and batch size.")
    parser.add_argument("--threads", type=int, default=1, help="PyTorch CPU threads for both arms.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random frames.")
    parser.add_argument("--out", type=Path, default=None, help="Write the results page here (markdown).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if min(args.batch_sizes) < 1 or args.repeats < 1 or args.threads < 1:
        parser.error(
            f"batch sizes, --repeats and --threads must be positive, got {args.batch_sizes}, {args.repeats} "
            f"and {args.threads}."
        )
    torch.set_num_threads(args.threads)

    rows = run(args.batch_sizes, args.repeats, args.seed)
    policy_parameters = sum(p.numel() for p in build_policy().parameters()) / 1e6
    command = "python experiments/policy_decoding_benchmark.py " + " ".join(sys.argv[1:] if argv is None else argv)
    page = render_page(rows, command.strip(), args.repeats, policy_parameters)
    print(page)
    if args.out is not None:
        args.out.write_text(page)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
