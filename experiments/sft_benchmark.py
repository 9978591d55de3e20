"""Benchmark SFT throughput of the tiny policy: samples per second, model FLOPs per sample and MFU.

One training step is what `gea.training.sft` runs: `GEAPolicy.score` by teacher forcing
(through `ActionNLL`, the trainer's loss module), backward, gradient clipping and an
AdamW step, on every parameter of the tiny model. Samples alternate between two action
kinds, each with a prompt of three observations of one 56 px frame (50 image tokens
per frame) and the actions between them:

- discrete: BabyAI GoToLocal's prompt and one of its 7 action names, tokenized, then an end
  token (`TrieConstraint`);
- continuous: Meta-World reach's prompt and 2 codes of 256 bins (`FixedLengthConstraint`).

Each row draws its instruction from a few per kind, as rows of real data differ. Every
batch size runs twice: with the policy's shared-prefix pass (each embodiment's header
computed once per batch, `gea.policy.shared_prefix`) and with every row computed in full,
so the page gives their speed ratio measured side by side.

Model FLOPs per sample are those of the matrix products of one step (linear, convolution
and attention layers, forward and backward), counted with
`torch.utils.flop_counter.FlopCounterMode` with attention on PyTorch's math backend,
because the counter counts nothing for the CPU flash-attention kernel. MFU is achieved
FLOP/s divided by the float32 ``torch.matmul`` throughput measured in the same run at the
same thread count. Batch sizes alternate within each repeat so machine load hits all
alike, and the page reports medians.

Run from the repository root:

    OMP_NUM_THREADS=1 python experiments/sft_benchmark.py --out experiments/sft_benchmark.md
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

import gea.policy.modeling_gea as modeling_gea
from gea.policy import GEAPolicy, GEAPolicyConfig, PolicyInput, build_tiny_model
from gea.training.sft import ActionNLL
from gea.training.sft_data import SFTBatch
from gea_envs import get_adapter
from gea_tokenizers.constraint import FixedLengthConstraint, PrefixConstraint, TrieConstraint
from gea.manifest import describe_machine

logger = logging.getLogger(__name__)

ACTION_TOKENS = [f"<act_{index}>" for index in range(512)]
END_TOKEN = "<act_511>"
BABYAI_ACTIONS = ["turn left", "turn right", "move forward", "pick up", "drop", "toggle", "done"]
CONTINUOUS_CODES = 2
# The real embodiment prompts. At three frames their headers are 42 % (BabyAI) and 48 % (reach)
# of a prompt's tokens.
EMBODIMENTS = {"discrete": "babyai/GoToLocal", "continuous": "metaworld/reach-v3"}
INSTRUCTIONS = {
    "discrete": ["go to the red ball", "go to a purple key", "go to the green box", "go to a grey ball"],
    "continuous": ["reach the goal", "reach the red goal", "push the puck", "reach the green target"],
}
ARMS = ("shared prefixes", "full rows")
IMAGE_SIZE = 56
HISTORY = 3
LEARNING_RATE = 1e-4
MAX_GRAD_NORM = 1.0


@dataclass
class Workload:
    """One batch of SFT samples."""

    inputs: list[PolicyInput]
    action_ids: list[list[int]]
    constraints: list[PrefixConstraint]
    kinds: list[str]

    def as_batch(self) -> SFTBatch:
        return SFTBatch(self.inputs, self.action_ids, self.constraints, embodiments=self.kinds)


def build_policy() -> GEAPolicy:
    texts = [instruction for choices in INSTRUCTIONS.values() for instruction in choices] + BABYAI_ACTIONS
    for name in EMBODIMENTS.values():
        prompt = get_adapter(name).prompt
        texts += [prompt.agent, prompt.action_space, prompt.simulator, prompt.camera]
    model, tokenizer, processor = build_tiny_model(texts, ACTION_TOKENS, seed=0)
    policy = GEAPolicy(model, tokenizer, processor, GEAPolicyConfig(history_length=HISTORY))
    policy.train()
    return policy


def build_grammars(policy: GEAPolicy) -> dict[str, tuple[PrefixConstraint, list[list[int]]]]:
    """Return each action kind's constraint and the complete actions to sample from."""
    tokenizer = policy.tokenizer
    codes = [tokenizer.convert_tokens_to_ids(token) for token in ACTION_TOKENS[:256]]
    end = tokenizer.convert_tokens_to_ids(END_TOKEN)
    names = [tokenizer.encode(" " + name, add_special_tokens=False) + [end] for name in BABYAI_ACTIONS]
    return {
        "discrete": (TrieConstraint(names), names),
        "continuous": (FixedLengthConstraint([codes] * CONTINUOUS_CODES), [[code] for code in codes]),
    }


def sample_action(kind: str, choices: list[list[int]], rng: np.random.Generator) -> list[int]:
    if kind == "continuous":
        return [choices[int(index)][0] for index in rng.integers(0, len(choices), CONTINUOUS_CODES)]
    return list(choices[int(rng.integers(0, len(choices)))])


def build_workload(policy: GEAPolicy, batch_size: int, rng: np.random.Generator) -> Workload:
    grammars = build_grammars(policy)
    kinds = list(grammars)
    workload = Workload(inputs=[], action_ids=[], constraints=[], kinds=[])
    for row in range(batch_size):
        kind = kinds[row % len(kinds)]
        constraint, choices = grammars[kind]
        frames = [[rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)] for _ in range(HISTORY)]
        past_actions = [sample_action(kind, choices, rng) for _ in range(HISTORY - 1)]
        instruction = INSTRUCTIONS[kind][int(rng.integers(len(INSTRUCTIONS[kind])))]
        workload.inputs.append(policy.build_input(get_adapter(EMBODIMENTS[kind]).prompt, instruction, frames, past_actions))
        workload.action_ids.append(sample_action(kind, choices, rng))
        workload.constraints.append(constraint)
        workload.kinds.append(kind)
    return workload


class Trainer:
    """The SFT trainer's step without data loading, logging or checkpoints."""

    def __init__(self, policy: GEAPolicy) -> None:
        self.loss_module = ActionNLL(policy)
        parameters = [parameter for parameter in policy.parameters() if parameter.requires_grad]
        self.parameters = parameters
        self.optimizer = torch.optim.AdamW(parameters, lr=LEARNING_RATE)

    def step(self, workload: Workload) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_module(workload.as_batch()).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.parameters, MAX_GRAD_NORM)
        self.optimizer.step()
        return float(loss.detach())


@contextlib.contextmanager
def sharing(arm: str):
    """Run the policy with its shared-prefix pass, or with every row computed in full."""
    original = modeling_gea.split_shared_prefixes
    if arm == "full rows":
        modeling_gea.split_shared_prefixes = lambda *args, **kwargs: None
    try:
        yield
    finally:
        modeling_gea.split_shared_prefixes = original


def step_flops(trainer: Trainer, workload: Workload) -> int:
    """Count the FLOPs of the matrix products of one training step (see the module docstring)."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        trainer.step(workload)
    return counter.get_total_flops()


def matmul_peak_gflops(size: int = 1024, calls: int = 8) -> float:
    """Measure float32 ``torch.matmul`` throughput in GFLOP/s of CPU time, at the current thread count."""
    left, right = torch.randn(size, size), torch.randn(size, size)
    torch.matmul(left, right)
    cpu_start = time.process_time()
    for _ in range(calls):
        torch.matmul(left, right)
    return 2 * size**3 * calls / (time.process_time() - cpu_start) / 1e9


def timed_step(trainer: Trainer, workload: Workload) -> tuple[float, float]:
    """Run one step and return its (wall seconds, process CPU seconds)."""
    start, cpu_start = time.perf_counter(), time.process_time()
    trainer.step(workload)
    return time.perf_counter() - start, time.process_time() - cpu_start


def run(batch_sizes: Sequence[int], repeats: int, seed: int) -> tuple[list[dict], float]:
    """Measure every (arm, batch size), alternating within each repeat; return the rows and the policy's size in M."""
    policy = build_policy()
    trainer = Trainer(policy)
    rng = np.random.default_rng(seed)
    workloads = {batch_size: build_workload(policy, batch_size, rng) for batch_size in batch_sizes}
    cases = [(arm, batch_size) for batch_size in batch_sizes for arm in ARMS]
    flops = {}
    for arm, batch_size in cases:
        with sharing(arm):
            trainer.step(workloads[batch_size])  # warm-up, which also creates the AdamW state
            flops[arm, batch_size] = step_flops(trainer, workloads[batch_size])
    timings: dict[tuple[str, int], list[tuple[float, float]]] = {case: [] for case in cases}
    peaks = []
    for _ in tqdm(range(repeats), desc="repeats"):
        for arm, batch_size in cases:
            with sharing(arm):
                timings[arm, batch_size].append(timed_step(trainer, workloads[batch_size]))
        peaks.append(matmul_peak_gflops())
    peak = statistics.median(peaks)
    rows = []
    for arm, batch_size in cases:
        row = summarize(batch_size, timings[arm, batch_size], flops[arm, batch_size], peak)
        row["arm"] = arm
        row["prompt_tokens"] = statistics.mean(len(item.input_ids) for item in workloads[batch_size].inputs)
        logger.info("%s, batch %d: %s", arm, batch_size, row)
        rows.append(row)
    full = {row["batch_size"]: row["samples_per_cpu_s"] for row in rows if row["arm"] == "full rows"}
    for row in rows:
        row["speedup"] = row["samples_per_cpu_s"] / full[row["batch_size"]]
    parameters = sum(parameter.numel() for parameter in policy.parameters()) / 1e6
    return rows, parameters


def summarize(batch_size: int, timings: Sequence[tuple[float, float]], flops: int, peak_gflops: float) -> dict:
    seconds = statistics.median(wall for wall, _ in timings)
    cpu_seconds = statistics.median(cpu for _, cpu in timings)
    achieved = flops / cpu_seconds / 1e9
    return {
        "batch_size": batch_size,
        "samples_per_s": batch_size / seconds,
        "samples_per_cpu_s": batch_size / cpu_seconds,
        "gflop_per_sample": flops / batch_size / 1e9,
        "achieved_gflops": achieved,
        "peak_gflops": peak_gflops,
        "mfu": achieved / peak_gflops,
    }


def machine_description() -> str:
    return describe_machine()


def render_page(rows: list[dict], command: str, repeats: int, parameters: float) -> str:
    lines = [
        "# SFT throughput benchmark",
        "",
        f"One SFT step of the tiny CPU policy ({parameters:.1f} M parameters with the value head, all trained):",
        "`GEAPolicy.score` through the SFT trainer's `ActionNLL` loss, backward, gradient-norm clipping and",
        "an AdamW step. Samples alternate between BabyAI GoToLocal's prompt with one of its 7 action names",
        f"plus an end token and Meta-World reach's prompt with a continuous action of {CONTINUOUS_CODES} codes, each",
        "row with one of four instructions of its embodiment. Every prompt carries",
        f"{HISTORY} observations of one {IMAGE_SIZE} px frame (50 image tokens each) and the actions between them.",
        "Each batch size runs in two arms: `shared prefixes` computes each embodiment's prompt header once",
        "per batch (what training does), `full rows` computes every row in full.",
        "",
        "- **GFLOP/sample**: FLOPs of the matrix products of one step (linear, convolution and attention",
        "  layers, forward and backward) per sample, counted with `torch.utils.flop_counter.FlopCounterMode`",
        "  with attention on the math backend; elementwise work and the optimizer are not counted.",
        "- **matmul peak**: float32 `torch.matmul` throughput of 1024 x 1024 products in the same run and",
        "  thread count, median over the repeats.",
        "- **MFU**: GFLOP/sample x samples per CPU second / matmul peak. FLOPs are those the step",
        "  runs, so the shared-prefix arm counts fewer per sample for the same training signal.",
        "- **speedup**: samples per CPU second over those of the full-rows arm at the same batch size. It grows",
        "  with the batch, because each embodiment's header costs one pass per batch however many rows share it.",
        "",
        f"Times are medians of {repeats} repeats, with arms and batch sizes alternating within each repeat, after one",
        "warm-up step per case. Samples/s use wall time; samples per CPU second and MFU use process",
        "CPU time, which other jobs on a shared machine disturb less.",
        "",
        "| arm | batch | samples/s | samples/CPU s | speedup | GFLOP/sample | achieved GFLOP/s |"
        " matmul peak GFLOP/s | MFU | mean prompt tokens |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['arm']} | {row['batch_size']} | {row['samples_per_s']:.1f} | {row['samples_per_cpu_s']:.1f} "
            f"| {row['speedup']:.2f} | {row['gflop_per_sample']:.2f} | {row['achieved_gflops']:.1f} "
            f"| {row['peak_gflops']:.0f} | {row['mfu']:.0%} | {row['prompt_tokens']:.0f} |"
        )
    lines += ["", f"Command: `{command}`", "", f"Machine: {machine_description()}", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 16, 32], help="Samples per step.")
    parser.add_argument("--repeats", type=int, default=5, help="Timed steps per batch size.")
    parser.add_argument("--threads", type=int, default=1, help="PyTorch CPU threads.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random frames and actions.")
    parser.add_argument("--out", type=Path, default=None, help="Write the results page here (markdown).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if min(args.batch_sizes) < 1 or args.repeats < 1 or args.threads < 1:
        parser.error(
            f"batch sizes, --repeats and --threads must be positive, got {args.batch_sizes}, {args.repeats} "
            f"and {args.threads}."
        )
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    rows, parameters = run(args.batch_sizes, args.repeats, args.seed)
    command = "python experiments/sft_benchmark.py " + " ".join(sys.argv[1:] if argv is None else argv)
    page = render_page(rows, command.strip(), args.repeats, parameters)
    print(page)
    if args.out is not None:
        args.out.write_text(page)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
