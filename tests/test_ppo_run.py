"""`gea ppo` end to end: a short PPO run from a real SFT checkpoint on BabyAI, then resume and `gea eval`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from ppo_checkpoint import BABYAI, make_sft_checkpoint
from safetensors.torch import load_file

from gea.cli import main
from gea.rl.learner import RESUME_OPTIMIZER_KEY, RESUME_RETURN_STATISTICS_KEY
from gea.rl.run import EVAL_HISTORY_FILE, LEARNER_STATE_FILE, PPORunConfig, read_eval_history
from gea.training.bundle import POLICY_FOLDER
from gea.training.checkpoint import resolve_checkpoint, verify_checkpoint

SETTINGS = {
    "num_env_runners": 1,
    "rollout_fragment_length": 16,
    "train_batch_size_per_learner": 16,
    "minibatch_size": 8,
    "num_epochs": 1,
    "sft_batch_size": 4,
    "lr": 1e-3,
}


@pytest.fixture(scope="module")
def sft_checkpoint(tmp_path_factory):
    return make_sft_checkpoint(tmp_path_factory.mktemp("ppo_run"))


def write_config(path, run_dir, iterations: int) -> None:
    config = {
        "run_dir": str(run_dir),
        "envs": [BABYAI],
        "settings": SETTINGS,
        "iterations": iterations,
        "eval_every": 1,
        "eval_episodes": 2,
        "eval_max_episode_steps": 8,
        "eval_at_start": True,
        "checkpoint_every": 1,
        "max_episode_steps": 8,
        "lora_rank": 4,
    }
    path.write_text(yaml.safe_dump(config))


def adam_steps(checkpoint) -> set[float]:
    state = torch.load(checkpoint / LEARNER_STATE_FILE, weights_only=False)[RESUME_OPTIMIZER_KEY]
    (optimizer,) = state.values()
    return {float(np.asarray(parameter["step"])) for parameter in optimizer["state"]["state"].values()}


def return_count(checkpoint) -> int:
    state = torch.load(checkpoint / LEARNER_STATE_FILE, weights_only=False)[RESUME_RETURN_STATISTICS_KEY]
    (module_statistics,) = state.values()
    return sum(int(group["count"]) for group in module_statistics.values())


def lora_weights(checkpoint) -> dict[str, torch.Tensor]:
    return load_file(checkpoint / POLICY_FOLDER / "lora" / "adapter_model.safetensors")


def test_ppo_runs_checkpoints_and_resumes(tmp_path, sft_checkpoint):
    run_dir = tmp_path / "ppo"
    config_path = tmp_path / "ppo.yaml"
    write_config(config_path, run_dir, iterations=1)
    init = str(sft_checkpoint.parents[1])  # the SFT run folder

    assert main(["ppo", "--config", str(config_path), "--init", init]) == 0
    first = resolve_checkpoint(run_dir)
    metadata = verify_checkpoint(first)["metadata"]
    assert metadata["stage"] == "ppo"
    assert metadata["step"] == 1
    assert metadata["image_size"] == 32
    assert metadata["embodiments"] == [BABYAI]
    # LoRA's B matrices start at zero, so non-zero ones show the update reached the checkpoint.
    assert any(tensor.abs().sum() > 0 for name, tensor in lora_weights(first).items() if "lora_B" in name)

    assert main(["ppo", "--config", str(config_path), "--init", init, "--iterations", "2", "--resume"]) == 0
    second = resolve_checkpoint(run_dir)
    assert verify_checkpoint(second)["metadata"]["step"] == 2
    # Restored Adam moments count the first run's updates too; a fresh optimizer would restart at 1 update per step.
    assert adam_steps(second) == {2 * value for value in adam_steps(first)}
    assert return_count(second) > return_count(first)
    changed = [name for name, tensor in lora_weights(second).items() if not torch.equal(tensor, lora_weights(first)[name])]
    assert changed

    history = read_eval_history(run_dir)
    assert [record["iteration"] for record in history] == [0, 1, 2]
    assert all(record["success"][BABYAI]["episodes"] == 2 for record in history)
    assert (run_dir / EVAL_HISTORY_FILE).is_file()

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in (
        f"rollout/{BABYAI}/success_rate",
        f"rollout/{BABYAI}/decode_valid_rate",
        f"eval/{BABYAI}/success_rate",
        "train/policy_loss",
        "train/vf_loss",
        "train/sft_loss",
        "train/normalized_entropy",
    ):
        assert tag in tags, f"{tag} missing from {sorted(tags)}"

    out = tmp_path / "eval"
    assert main(["eval", "--checkpoint", str(run_dir), "--envs", BABYAI, "--episodes", "2", "--max-episode-steps", "4",
                 "--videos", "0", "--temperature", "0.5", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["checkpoint"], manifest["temperature"]) == (str(second), 0.5)
    assert json.loads((out / "results.json").read_text())["summaries"][0]["episodes"] == 2


def test_config_rejects_unknown_and_missing_keys(tmp_path):
    base = {"run_dir": str(tmp_path), "init": str(tmp_path), "envs": [BABYAI]}
    with pytest.raises(ValueError, match="learning_rate"):
        PPORunConfig.from_dict({**base, "learning_rate": 1.0})
    with pytest.raises(ValueError, match="num_workers"):
        PPORunConfig.from_dict({**base, "settings": {"num_workers": 2}})
    with pytest.raises(ValueError, match="init"):
        PPORunConfig.from_dict({"run_dir": str(tmp_path), "envs": [BABYAI]})
    with pytest.raises(ValueError, match="lora_rank"):
        PPORunConfig.from_dict({**base, "lora_rank": 0})
    with pytest.raises(ValueError, match="reward must be one of"):
        PPORunConfig.from_dict({**base, "reward": "dense"})
