"""SFT on real expert data: resume equality, action-only loss, bad checkpoints and non-finite losses."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gea.data.collect import collect
from gea.training.bundle import POLICY_FOLDER
from gea.training.checkpoint import CheckpointError, CheckpointManager, resolve_checkpoint
from gea.training.config import SFTConfig
from gea.training.sft import ActionNLL, NonFiniteLossError, SFTTrainer, balance_embodiment_losses
from gea_envs import get_adapter
from gea_tokenizers import ResidualVQConfig, TrainingConfig, train_residual_vq

BABYAI = "babyai/GoToLocal"
REACH = "metaworld/reach-v3"


@pytest.fixture(scope="module")
def expert_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("experts")
    collect([BABYAI], 6, root, image_size=32, show_progress=False)
    collect([REACH], 2, root, image_size=32, show_progress=False)
    return root


def _tokenizer(expert_data, folder, seed: int):
    from gea.data import TrajectoryDataset

    actions = np.stack(TrajectoryDataset(expert_data).actions(REACH))
    tokenizer, _ = train_residual_vq(
        {REACH: actions},
        ResidualVQConfig(codebook_size=16, hidden_width=32, code_dim=16),
        TrainingConfig(steps=5, batch_size=64, seed=seed),
        progress=False,
    )
    tokenizer.save(folder)
    return str(folder)


@pytest.fixture(scope="module")
def action_tokenizer(expert_data, tmp_path_factory):
    return _tokenizer(expert_data, tmp_path_factory.mktemp("tokenizer"), seed=0)


def _config(run_dir, expert_data, action_tokenizer, steps=4, **train) -> SFTConfig:
    return SFTConfig.from_dict(
        {
            "run_dir": str(run_dir),
            "datasets": [{"path": str(expert_data), "envs": [BABYAI], "weight": 2.0}, {"path": str(expert_data), "envs": [REACH]}],
            "action_tokenizer": action_tokenizer,
            "policy": {"tiny": {"image_size": 32, "text_layers": 1, "vision_layers": 1}, "policy": {"history_length": 2}},
            "train": {"steps": steps, "batch_size": 2, "checkpoint_every": 2, "log_every": 1, **train},
        }
    )


def _parameters(checkpoint):
    from safetensors.torch import load_file

    return load_file(checkpoint / POLICY_FOLDER / "model.safetensors")


def test_resume_matches_uninterrupted_run(tmp_path, expert_data, action_tokenizer):
    straight = SFTTrainer(_config(tmp_path / "straight", expert_data, action_tokenizer), show_progress=False).train()

    SFTTrainer(_config(tmp_path / "resumed", expert_data, action_tokenizer), show_progress=False).train(stop_at=2)
    resumed = SFTTrainer(_config(tmp_path / "resumed", expert_data, action_tokenizer), resume=True, show_progress=False).train()

    expected, actual = _parameters(straight), _parameters(resumed)
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0, msg=name)
    assert (tmp_path / "resumed" / "tensorboard").is_dir()


def test_loss_covers_action_tokens_only(tmp_path, expert_data, action_tokenizer):
    trainer = SFTTrainer(_config(tmp_path / "run", expert_data, action_tokenizer), show_progress=False)
    trainer._setup_bundle()
    batch = trainer.data.batch(seed=0, step=0, batch_size=4)
    policy = trainer.data.policy

    scores = policy.score(batch.inputs, batch.action_ids, batch.constraints)
    per_sample = ActionNLL(policy)(batch)

    for row, action in enumerate(batch.action_ids):
        assert int(scores.mask[row].sum()) == len(action)
        expected = -scores.log_probs[row, : len(action)].mean()
        torch.testing.assert_close(per_sample[row], expected)
    assert set(batch.embodiments) <= {BABYAI, REACH}


def test_balanced_loss_known_gradient():
    # Embodiment "a" has mean loss 2.0 and "b" 0.2, so the plain mean is 1.1.
    per_sample = torch.tensor([1.0, 3.0, 0.2, 0.2], requires_grad=True)
    loss = balance_embodiment_losses(per_sample, ["a", "a", "b", "b"])
    loss.backward()

    torch.testing.assert_close(loss.detach(), torch.tensor(1.1))
    # d loss / d l_i = plain mean * (1 / mean of i's embodiment) / batch.
    grad_a, grad_b = 1.1 / 2.0 / 4, 1.1 / 0.2 / 4
    torch.testing.assert_close(per_sample.grad, torch.tensor([grad_a, grad_a, grad_b, grad_b]))


def test_balanced_loss_rejects_mismatched_names():
    with pytest.raises(ValueError, match="3 embodiment names for 4"):
        balance_embodiment_losses(torch.ones(4), ["a", "a", "b"])


def test_balanced_training_changes_update(tmp_path, expert_data, action_tokenizer):
    plain = SFTTrainer(_config(tmp_path / "plain", expert_data, action_tokenizer, steps=2), show_progress=False).train()
    balanced_config = _config(tmp_path / "balanced", expert_data, action_tokenizer, steps=2, balance_embodiments=True)
    balanced = SFTTrainer(balanced_config, show_progress=False).train()

    expected, actual = _parameters(plain), _parameters(balanced)
    assert any(not torch.equal(expected[name], actual[name]) for name in expected)


def test_balance_embodiments_rejects_non_bool(tmp_path, expert_data, action_tokenizer):
    with pytest.raises(ValueError, match="balance_embodiments must be true or false, got 'yes'"):
        _config(tmp_path / "run", expert_data, action_tokenizer, balance_embodiments="yes")


def test_validation_episodes_are_never_trained_on(tmp_path, expert_data, action_tokenizer):
    trainer = SFTTrainer(_config(tmp_path / "run", expert_data, action_tokenizer, validation_episodes=1), show_progress=False)
    trainer._setup_bundle()
    data = trainer.data

    held_out = {(dataset, episode) for dataset, episode, _ in data.validation_steps}
    last_episodes = {(index, len(dataset.episodes) - 1) for index, dataset in enumerate(data.datasets)}
    trained = {(index, int(episode)) for index, steps in enumerate(data._steps) for episode, _ in steps}
    assert held_out == last_episodes
    assert not held_out & trained
    batches = list(data.validation_batches(max_samples=5, batch_size=2, seed=0))
    assert [len(batch.inputs) for batch in batches] == [2, 2, 1]


def test_validation_loss_logged_at_checkpoints(tmp_path, expert_data, action_tokenizer):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    SFTTrainer(_config(tmp_path / "run", expert_data, action_tokenizer, validation_episodes=1), show_progress=False).train()

    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert [event.step for event in events.Scalars("val/loss")] == [2, 4]
    assert np.isfinite([event.value for event in events.Scalars(f"val/loss/{BABYAI}")]).all()


def test_validation_rejects_holding_out_all(tmp_path, expert_data, action_tokenizer):
    trainer = SFTTrainer(_config(tmp_path / "run", expert_data, action_tokenizer, validation_episodes=6), show_progress=False)
    with pytest.raises(ValueError, match="validation_episodes=6"):
        trainer._setup_bundle()


def test_non_finite_loss_keeps_last_checkpoint(tmp_path, expert_data, action_tokenizer, monkeypatch):
    trainer = SFTTrainer(_config(tmp_path / "run", expert_data, action_tokenizer, steps=6), show_progress=False)
    calls = {"n": 0}
    original = ActionNLL.forward

    def poisoned(self, batch):
        calls["n"] += 1
        loss = original(self, batch)
        return loss * float("nan") if calls["n"] > 2 else loss

    monkeypatch.setattr(ActionNLL, "forward", poisoned)
    with pytest.raises(NonFiniteLossError, match="step 2"):
        trainer.train()
    assert CheckpointManager(tmp_path / "run" / "checkpoints").latest().name == "step_00000002"


def test_corrupt_checkpoint_rejected(tmp_path, expert_data, action_tokenizer):
    checkpoint = SFTTrainer(_config(tmp_path / "run", expert_data, action_tokenizer, steps=2), show_progress=False).train()
    weights = checkpoint / POLICY_FOLDER / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))

    with pytest.raises(CheckpointError, match="model.safetensors"):
        resolve_checkpoint(tmp_path / "run")


def test_resume_rejects_other_action_tokenizer(tmp_path, expert_data, action_tokenizer):
    SFTTrainer(_config(tmp_path / "run", expert_data, action_tokenizer, steps=2), show_progress=False).train()
    other = _tokenizer(expert_data, tmp_path / "other_tokenizer", seed=1)

    with pytest.raises(ValueError, match="does not match"):
        SFTTrainer(_config(tmp_path / "run", expert_data, other, steps=4), resume=True, show_progress=False).train()


def _fine_tune_config(run_dir, init, expert_data, action_tokenizer, **policy) -> SFTConfig:
    config = _config(run_dir, expert_data, action_tokenizer, steps=2).to_dict()
    config["policy"] = {"init": str(init), **policy}
    return SFTConfig.from_dict(config)


def test_fine_tune_starts_from_checkpoint_weights(tmp_path, expert_data, action_tokenizer):
    source = SFTTrainer(_config(tmp_path / "source", expert_data, action_tokenizer, steps=2), show_progress=False).train()
    trainer = SFTTrainer(_fine_tune_config(tmp_path / "tuned", tmp_path / "source", expert_data, action_tokenizer),
                         show_progress=False)
    bundle, start_step, _ = trainer._setup_bundle()

    assert start_step == 0
    assert bundle.detokenizer.fingerprint() == json.loads((source / "checkpoint.json").read_text())["metadata"][
        "detokenizer_fingerprint"]
    # The checkpoint's own policy config is kept where the fine-tuning config is silent.
    assert bundle.policy.config.history_length == 2
    bundle.save(tmp_path / "loaded")
    loaded = _parameters(tmp_path / "loaded")
    for name, tensor in _parameters(source).items():
        torch.testing.assert_close(loaded[name], tensor, rtol=0, atol=0, msg=name)

    tuned = _parameters(trainer.train())
    assert any(not torch.equal(tensor, tuned[name]) for name, tensor in _parameters(source).items())


def test_fine_tune_rejects_other_action_tokenizer(tmp_path, expert_data, action_tokenizer):
    SFTTrainer(_config(tmp_path / "source", expert_data, action_tokenizer, steps=2), show_progress=False).train()
    other = _tokenizer(expert_data, tmp_path / "other_tokenizer", seed=1)

    with pytest.raises(ValueError, match="does not match the one in checkpoint"):
        SFTTrainer(_fine_tune_config(tmp_path / "tuned", tmp_path / "source", expert_data, other),
                   show_progress=False).train()


def test_fine_tune_rejects_tiny_spec(tmp_path, expert_data, action_tokenizer):
    SFTTrainer(_config(tmp_path / "source", expert_data, action_tokenizer, steps=2), show_progress=False).train()
    config = _fine_tune_config(tmp_path / "tuned", tmp_path / "source", expert_data, action_tokenizer,
                               tiny={"image_size": 32})

    with pytest.raises(ValueError, match="remove `policy.tiny`"):
        SFTTrainer(config, show_progress=False).train()


def test_config_rejects_unknown_keys(tmp_path):
    with pytest.raises(ValueError, match="learning_rate"):
        SFTConfig.from_dict({"run_dir": str(tmp_path), "datasets": [{"path": "x"}], "train": {"learning_rate": 1.0}})


def test_history_shows_executed_actions(tmp_path, action_tokenizer):
    noisy_data = tmp_path / "noisy"
    collect([BABYAI], 4, noisy_data, image_size=32, show_progress=False, action_noise=0.5)
    config = _config(tmp_path / "run", noisy_data, action_tokenizer)
    config = SFTConfig.from_dict({**config.to_dict(), "datasets": [{"path": str(noisy_data), "envs": [BABYAI]}]})
    trainer = SFTTrainer(config, show_progress=False)
    trainer._setup_bundle()
    data, detokenizer = trainer.data, trainer.data.detokenizer

    episode_index, t = next(
        (index, t)
        for index in range(4)
        for t, (label, executed) in enumerate(zip(*_actions(data, index)))
        if label != executed and t + 1 < data.datasets[0].episodes[index].length
    )
    record = data.datasets[0].load_episode(episode_index)
    policy_input, target_ids, _ = data.sample_at(0, episode_index, t + 1)

    expected = data.policy.build_input(
        get_adapter(BABYAI).prompt,
        record.instruction,
        record.frames[t : t + 2],
        [detokenizer.encode(BABYAI, record.executed_actions[t])],
    )
    assert policy_input.input_ids == expected.input_ids
    assert target_ids == detokenizer.encode(BABYAI, record.actions[t + 1])


def _actions(data, episode_index: int) -> tuple[list, list]:
    record = data.datasets[0].load_episode(episode_index, decode_frames=False)
    return record.actions, record.executed_actions
