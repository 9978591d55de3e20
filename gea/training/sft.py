"""Stage 1: supervised fine-tuning on expert trajectories of several embodiments at once.

One optimizer step reads top to bottom: draw micro-batches, score the expert action
tokens by teacher forcing, back-propagate, clip, step, log, checkpoint. The loss is the
negative log-likelihood of the action tokens only (prompt and image tokens carry none),
under the same per-embodiment constraint the policy decodes with.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import yaml
from torch import nn
from tqdm.auto import tqdm

from gea.errors import GEAError
from gea.training.bundle import PolicyBundle, load_bundle
from gea.training.checkpoint import RUN_CHECKPOINTS_FOLDER, CheckpointManager, verify_checkpoint
from gea.training.config import SFTConfig
from gea.training.initialize import build_bundle
from gea.training.numerics import flush_denormals_on_cpu
from gea.training.sft_data import SFTBatch, SFTDataMix, load_datasets

logger = logging.getLogger(__name__)

OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
RNG_FILE = "rng.pt"
STATE_FILE = "trainer_state.json"
CONFIG_FILE = "sft_config.yaml"


class NonFiniteLossError(GEAError):
    """Raised when the loss becomes NaN or infinite; the last good checkpoint is left in place."""


class ActionNLL(nn.Module):
    """Per-sample mean negative log-likelihood of the action tokens.

    A module of its own so that distributed wrappers (DDP through Accelerate) see the
    training computation as ``forward`` and synchronize its gradients.
    """

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, batch: SFTBatch) -> torch.Tensor:
        scores = self.policy.score(batch.inputs, batch.action_ids, batch.constraints)
        mask = scores.mask.to(scores.log_probs.dtype)
        return -(scores.log_probs * mask).sum(dim=-1) / mask.sum(dim=-1)  # (batch,)


def balance_embodiment_losses(per_sample: torch.Tensor, embodiments: Sequence[str]) -> torch.Tensor:
    """Return the batch loss with each embodiment's samples scaled by 1 / its mean loss.

    The scales are detached, so each embodiment's gradient is that of the log of its mean
    loss. An embodiment whose action tokens cost 1.5 nats (continuous-action bins) then no
    longer outweighs one whose tokens cost 0.2 (a discrete action in words). The result
    is multiplied by the detached plain mean, so its value and the gradient norm stay on
    the scale that `max_grad_norm` expects.

    Args:
        per_sample: loss of each sample, shape ``(batch,)``.
        embodiments: the embodiment name of each sample, ``batch`` long.
    """
    if len(embodiments) != per_sample.shape[0]:
        raise ValueError(
            f"Invalid input: got {len(embodiments)} embodiment names for {per_sample.shape[0]} per-sample losses. "
            "Pass one name per sample."
        )
    scales = torch.empty_like(per_sample)
    for name in set(embodiments):
        rows = torch.tensor([i for i, e in enumerate(embodiments) if e == name], device=per_sample.device)
        scales[rows] = 1.0 / per_sample[rows].detach().mean().clamp_min(1e-6)
    return (per_sample * scales).mean() * per_sample.detach().mean()


def _capture_rng() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


class SFTTrainer:
    """Runs SFT for ``config.train.steps`` optimizer steps, resuming from the run folder if asked."""

    def __init__(self, config: SFTConfig, resume: bool = False, show_progress: bool = True) -> None:
        self.config = config
        self.resume = resume
        self.show_progress = show_progress
        self.run_dir = Path(config.run_dir)
        self.checkpoints = CheckpointManager(self.run_dir / RUN_CHECKPOINTS_FOLDER, keep=config.train.keep_checkpoints)

    # ------------------------------------------------------------------------ setup steps

    def _setup_bundle(self) -> tuple[PolicyBundle, int, Optional[Path]]:
        datasets = load_datasets(self.config.datasets)
        embodiments = sorted({name for dataset in datasets for name in dataset.embodiments})
        latest = self.checkpoints.latest() if self.resume else None
        if self.resume and latest is None:
            logger.warning("--resume given but %s has no checkpoint; starting from step 0.", self.checkpoints.root)
        if latest is None:
            bundle = build_bundle(self.config.policy, datasets, embodiments, self.config.action_tokenizer)
            start_step = 0
        else:
            self._check_resumable(latest, embodiments)
            bundle = load_bundle(latest)
            start_step = json.loads((latest / STATE_FILE).read_text())["step"]
            logger.info("Resuming from %s at step %d.", latest, start_step)
        self.data = SFTDataMix(
            self.config.datasets,
            datasets,
            bundle.policy,
            bundle.detokenizer,
            validation_episodes=self.config.train.validation_episodes,
        )
        self.embodiments = embodiments
        # Evaluation renders frames at the size the data was collected at.
        sizes = [info.image_size for dataset in datasets for info in dataset.episodes]
        self.data_image_size = max(set(sizes), key=sizes.count)
        return bundle, start_step, latest

    def _check_resumable(self, checkpoint: Path, embodiments: list[str]) -> None:
        metadata = verify_checkpoint(checkpoint)["metadata"]
        saved_datasets = metadata.get("config", {}).get("datasets")
        current = [{"path": d.path, "weight": d.weight, "envs": d.envs, "successful_only": d.successful_only} for d in self.config.datasets]
        if saved_datasets != current:
            raise ValueError(f"Checkpoint {checkpoint} was trained on datasets {saved_datasets}, but the config lists {current}. "
                             "Resume with the same config or start a new run_dir.")
        saved_tokenizer = metadata.get("continuous_tokenizer_fingerprint")
        configured = self._configured_tokenizer_fingerprint()
        if configured is not None and saved_tokenizer != configured:
            raise ValueError(
                f"The action tokenizer in {self.config.action_tokenizer} (fingerprint {configured[:12]}) does not match the "
                f"one checkpoint {checkpoint} was trained with ({str(saved_tokenizer)[:12]}): its codebooks or action "
                "statistics differ. Point `action_tokenizer:` at the original folder or start a new run_dir."
            )
        missing = sorted(set(embodiments) - set(metadata.get("embodiments", [])))
        if missing:
            raise ValueError(f"Checkpoint {checkpoint} has no action tokens for {missing}; start a new run_dir to add them.")

    def _configured_tokenizer_fingerprint(self) -> Optional[str]:
        if self.config.action_tokenizer is None:
            return None
        from gea_tokenizers import load_continuous_tokenizer

        return load_continuous_tokenizer(self.config.action_tokenizer).fingerprint()

    def _setup_optimizer(self, model: nn.Module, latest: Optional[Path]):
        from transformers import get_cosine_schedule_with_warmup

        train = self.config.train
        parameters = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(parameters, lr=train.lr, weight_decay=train.weight_decay)
        scheduler = get_cosine_schedule_with_warmup(optimizer, int(train.warmup_ratio * train.steps), train.steps)
        if latest is not None:
            optimizer.load_state_dict(torch.load(latest / OPTIMIZER_FILE, weights_only=False))
            scheduler.load_state_dict(torch.load(latest / SCHEDULER_FILE, weights_only=False))
            _restore_rng(torch.load(latest / RNG_FILE, weights_only=False))
        return optimizer, scheduler

    def _mixed_precision(self) -> str:
        setting = self.config.train.mixed_precision
        if setting != "auto":
            return setting
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return "bf16"
        return "no"

    # ------------------------------------------------------------------------- the loop

    def train(self, stop_at: Optional[int] = None) -> Path:
        """Run the remaining steps and return the last checkpoint.

        `stop_at` ends the run early after that step (checkpointing it), as a kill right
        after a checkpoint would; the learning-rate schedule still spans ``train.steps``.
        """
        from accelerate import Accelerator

        config, train = self.config, self.config.train
        torch.manual_seed(config.seed)
        bundle, start_step, latest = self._setup_bundle()
        accelerator = Accelerator(mixed_precision=self._mixed_precision())
        flush_denormals_on_cpu(accelerator.device)
        loss_module = ActionNLL(bundle.policy)
        optimizer, scheduler = self._setup_optimizer(loss_module, latest)
        loss_module, optimizer = accelerator.prepare(loss_module, optimizer)
        self.bundle = bundle
        writer = self._tensorboard(accelerator)
        last_checkpoint = latest

        progress = tqdm(total=train.steps, initial=start_step, desc="sft", unit="step", disable=not self.show_progress or not accelerator.is_main_process)
        end_step = train.steps if stop_at is None else min(stop_at, train.steps)
        for step in range(start_step, end_step):
            started = time.perf_counter()
            loss_module.train()

            # 1. Forward and backward over the micro-batches of this step.
            step_loss, per_embodiment = self._accumulate(accelerator, loss_module, step)
            if not np.isfinite(step_loss):
                raise NonFiniteLossError(
                    f"SFT loss is {step_loss} at step {step}; the last good checkpoint is {last_checkpoint}. "
                    "Lower train.lr or check the data, then rerun with --resume."
                )

            # 2. Update.
            grad_norm = accelerator.clip_grad_norm_(loss_module.parameters(), train.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

            # 3. Log.
            samples = train.batch_size * train.grad_accum * accelerator.num_processes
            if writer is not None and (step + 1) % train.log_every == 0:
                writer.add_scalar("train/loss", step_loss, step + 1)
                for name, value in per_embodiment.items():
                    writer.add_scalar(f"train/loss/{name}", value, step + 1)
                writer.add_scalar("train/learning_rate", scheduler.get_last_lr()[0], step + 1)
                writer.add_scalar("train/grad_norm", float(grad_norm), step + 1)
                writer.add_scalar("train/samples_per_second", samples / (time.perf_counter() - started), step + 1)
            progress.set_postfix(loss=f"{step_loss:.3f}")
            progress.update()

            # 4. Checkpoint, and score the held-out episodes.
            if (step + 1) % train.checkpoint_every == 0 or step + 1 == end_step:
                if accelerator.is_main_process:
                    last_checkpoint = self._save(step + 1, optimizer, scheduler)
                    self._validate(accelerator.unwrap_model(loss_module), writer, step + 1)
                accelerator.wait_for_everyone()
        progress.close()
        if writer is not None:
            writer.close()
        if last_checkpoint is None:
            raise RuntimeError(f"No checkpoint written: the run in {self.run_dir} had no steps left to train.")
        return last_checkpoint

    def _accumulate(self, accelerator, loss_module: nn.Module, step: int) -> tuple[float, dict[str, float]]:
        train = self.config.train
        total = 0.0
        by_embodiment: dict[str, list[float]] = defaultdict(list)
        for micro in range(train.grad_accum):
            batch = self.data.batch(self.config.seed, step * train.grad_accum + micro, train.batch_size, accelerator.process_index)
            last = micro == train.grad_accum - 1
            sync = contextlib.nullcontext() if last else accelerator.no_sync(loss_module)
            with sync, accelerator.autocast():
                per_sample = loss_module(batch)  # (batch,)
                loss = per_sample.mean() / train.grad_accum
                if train.balance_embodiments:
                    objective = balance_embodiment_losses(per_sample, batch.embodiments) / train.grad_accum
                else:
                    objective = loss
            accelerator.backward(objective)
            total += float(loss.detach())
            for name, value in zip(batch.embodiments, per_sample.detach().tolist()):
                by_embodiment[name].append(value)
        return total, {name: float(np.mean(values)) for name, values in by_embodiment.items()}

    def _validate(self, loss_module: nn.Module, writer, step: int) -> Optional[float]:
        """Log the action-token loss on the held-out episodes; return it, or None if none are held out."""
        train = self.config.train
        by_embodiment: dict[str, list[float]] = defaultdict(list)
        loss_module.eval()
        with torch.no_grad():
            for batch in self.data.validation_batches(train.validation_samples, train.batch_size, self.config.seed):
                for name, value in zip(batch.embodiments, loss_module(batch).tolist()):
                    by_embodiment[name].append(value)
        if not by_embodiment:
            return None
        loss = float(np.mean([value for values in by_embodiment.values() for value in values]))
        logger.info("Step %d: validation loss %.4f on %d held-out steps.", step, loss, sum(map(len, by_embodiment.values())))
        if writer is not None:
            writer.add_scalar("val/loss", loss, step)
            for name, values in by_embodiment.items():
                writer.add_scalar(f"val/loss/{name}", float(np.mean(values)), step)
        return loss

    def _save(self, step: int, optimizer, scheduler) -> Path:
        detokenizer = self.bundle.detokenizer
        continuous = detokenizer.continuous

        def write(folder: Path) -> None:
            self.bundle.save(folder)
            torch.save(optimizer.state_dict(), folder / OPTIMIZER_FILE)
            torch.save(scheduler.state_dict(), folder / SCHEDULER_FILE)
            torch.save(_capture_rng(), folder / RNG_FILE)
            (folder / STATE_FILE).write_text(json.dumps({"step": step}))
            (folder / CONFIG_FILE).write_text(yaml.safe_dump(self.config.to_dict(), sort_keys=False))

        metadata = {
            "stage": "sft",
            "step": step,
            "config": {"datasets": [{"path": d.path, "weight": d.weight, "envs": d.envs, "successful_only": d.successful_only} for d in self.config.datasets]},
            "embodiments": self.embodiments,
            "detokenizer_fingerprint": detokenizer.fingerprint(),
            "continuous_tokenizer_fingerprint": continuous.fingerprint() if continuous is not None else None,
            "image_size": self.data_image_size,
        }
        return self.checkpoints.save(step, write, metadata)

    def _tensorboard(self, accelerator):
        if not accelerator.is_main_process:
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(self.run_dir / "tensorboard"))
