"""The real GEA policy inside the RLlib module, on BabyAI observations from the RL environment."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ppo_checkpoint import BABYAI, HISTORY_LENGTH, IMAGE_SIZE, make_sft_checkpoint
from ray.rllib.core.columns import Columns

from gea.data import TrajectoryDataset
from gea.rl.detokenizer import strip_padding
from gea.rl.env import (
    OBS_ACTION_HISTORY,
    OBS_FRAMES,
    OBS_HISTORY_LENGTH,
    GeaEmbodimentEnv,
    GeaEnvConfig,
    action_space,
    observation_space,
)
from gea.rl.factories import DetokenizerFactory, ExpertSourceFactory, PolicyFactory
from gea.rl.module import ENVS_KEY, POLICY_FACTORY_KEY, GeaTorchRLModule
from gea.training.config import DatasetSpec
from gea.training.sft_data import SFTDataMix

LORA_RANK = 4
STEPS = 4


@pytest.fixture(scope="module")
def sft_checkpoint(tmp_path_factory):
    return make_sft_checkpoint(tmp_path_factory.mktemp("ppo_policy"))


@pytest.fixture(scope="module")
def env_config(sft_checkpoint):
    return GeaEnvConfig(
        envs=(BABYAI,),
        detokenizer_factory=DetokenizerFactory(str(sft_checkpoint), (BABYAI,)),
        image_size=IMAGE_SIZE,
        frame_stack=HISTORY_LENGTH,
    )


@pytest.fixture(scope="module")
def module(sft_checkpoint, env_config):
    torch.manual_seed(0)
    detokenizer = env_config.detokenizer_factory()
    return GeaTorchRLModule(
        observation_space=observation_space(env_config, detokenizer),
        action_space=action_space(detokenizer),
        model_config={POLICY_FACTORY_KEY: PolicyFactory(str(sft_checkpoint), (BABYAI,), LORA_RANK), ENVS_KEY: (BABYAI,)},
    )


def as_batch(observations: list[dict]) -> dict:
    return {Columns.OBS: {key: torch.as_tensor(np.stack([o[key] for o in observations])) for key in observations[0]}}


@pytest.fixture(scope="module")
def rollout(module, env_config):
    """Play STEPS sampled actions; return observations, the module's outputs and the raw history."""
    env = GeaEmbodimentEnv(env_config, BABYAI, seed=5)
    observation, _ = env.reset(seed=5)
    observations, actions, logps, frames, action_ids = [], [], [], [], []
    pad = env.detokenizer.pad_token_id
    for _ in range(STEPS):
        frames.append([observation[OBS_FRAMES][-1]])
        output = module.forward_exploration(as_batch([observation]))
        observations.append(observation)
        actions.append(output[Columns.ACTIONS][0])
        logps.append(output[Columns.ACTION_LOGP][0])
        action_ids.append(strip_padding(output[Columns.ACTIONS][0].tolist(), pad))
        observation, _, terminated, truncated, _ = env.step(output[Columns.ACTIONS][0].numpy())
        if terminated or truncated:
            break
    env.close()
    return observations, torch.stack(actions), torch.stack(logps), frames, action_ids


def test_observation_carries_history(rollout, env_config):
    observations, _, _, _, action_ids = rollout
    assert [int(o[OBS_HISTORY_LENGTH]) for o in observations] == [1, 2, 2, 2]
    pad = env_config.detokenizer_factory().pad_token_id
    assert strip_padding(observations[1][OBS_ACTION_HISTORY][-1].tolist(), pad) == action_ids[0]
    assert strip_padding(observations[3][OBS_ACTION_HISTORY][-1].tolist(), pad) == action_ids[2]


def test_sampled_logp_equals_policy_score(module, rollout):
    observations, _, logps, frames, action_ids = rollout
    policy = module.policy.policy
    detokenizer = module.policy.detokenizer.detokenizer
    prompt = module.policy._prompts[BABYAI]
    instruction = module.policy_batch(as_batch(observations[:1])).instructions[0]
    # Prompts rebuilt from the raw history, independently of the module's observation decoding.
    inputs = []
    for step in range(len(observations)):
        history = frames[: step + 1][-HISTORY_LENGTH:]
        previous = action_ids[:step][-(len(history) - 1) :] if len(history) > 1 else []
        inputs.append(policy.build_input(prompt, instruction, history, previous))
    with torch.no_grad():
        scores = policy.score(inputs, action_ids, [detokenizer.constraint(BABYAI)] * len(inputs))
    expected = (scores.log_probs * scores.mask).sum(dim=-1)
    assert (expected < 0).any(), "every sampled action was forced; the comparison would be trivial"
    torch.testing.assert_close(logps, expected, rtol=0, atol=1e-5)


def test_train_forward_matches_sampling(module, rollout):
    observations, actions, logps, _, _ = rollout
    batch = as_batch(observations)
    batch[Columns.ACTIONS] = actions
    with torch.no_grad():
        output = module.forward_train(batch)
    distribution = module.get_train_action_dist_cls().from_logits(output[Columns.ACTION_DIST_INPUTS])
    torch.testing.assert_close(distribution.logp(actions), logps, rtol=0, atol=1e-5)
    assert torch.all(distribution.entropy() > 0)
    assert torch.all((distribution.normalized_entropy() > 0) & (distribution.normalized_entropy() <= 1))
    values = module.compute_values(batch)
    torch.testing.assert_close(values, output[Columns.VF_PREDS], rtol=0, atol=1e-5)


def test_gradients_reach_only_lora_and_value_head(module, rollout):
    observations, actions, _, _, _ = rollout
    batch = as_batch(observations)
    batch[Columns.ACTIONS] = actions
    module.zero_grad(set_to_none=True)
    output = module.forward_train(batch)
    distribution = module.get_train_action_dist_cls().from_logits(output[Columns.ACTION_DIST_INPUTS])
    (-distribution.logp(actions).sum() + output[Columns.VF_PREDS].pow(2).sum()).backward()

    with_gradient = {name for name, p in module.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_gradient, "no parameter received a gradient"
    assert all(".lora_" in name or ".value_head." in name for name in with_gradient), sorted(with_gradient)[:5]
    assert any(".lora_" in name for name in with_gradient)
    assert any(".value_head." in name for name in with_gradient)
    frozen = [name for name, p in module.named_parameters() if not p.requires_grad]
    assert frozen, "every parameter is trainable"
    assert all(".lora_" not in name and ".value_head." not in name for name in frozen)
    module.zero_grad(set_to_none=True)


def test_module_state_holds_trainable_tensors_only(module):
    state = module.get_state()
    trainable = {name for name, p in module.named_parameters() if p.requires_grad}
    assert set(state) == trainable
    module.set_state(state)
    with pytest.raises(ValueError, match="missing trainable keys"):
        module.set_state({name: value for name, value in list(state.items())[1:]})


def test_expert_prompts_match_sft(sft_checkpoint, env_config, module):
    data_root = sft_checkpoint.parents[2] / "data"
    source = ExpertSourceFactory((str(data_root),), env_config)()
    dataset = TrajectoryDataset(data_root, embodiments=[BABYAI])
    policy = module.policy.policy
    mix = SFTDataMix([DatasetSpec(str(data_root), envs=[BABYAI])], [dataset], policy, module.policy.detokenizer.detokenizer)
    # The longest episode, so the prompts cover the first step and full histories.
    longest = max(range(len(source._indices)), key=lambda i: dataset.episodes[source._indices[i]].length)
    length = dataset.episodes[source._indices[longest]].length
    assert length >= HISTORY_LENGTH + 1, "the expert episodes are too short to test full histories"
    for step in range(HISTORY_LENGTH + 1):
        observation, action = source._step(longest, step)
        expected_input, expected_action, _ = mix.sample_at(0, source._indices[longest], step)
        inputs, _ = module.policy.policy_inputs(module.policy_batch(as_batch([observation])))
        assert inputs[0].input_ids == expected_input.input_ids
        assert len(inputs[0].frames) == len(expected_input.frames)
        for actual, expected in zip(inputs[0].frames, expected_input.frames):
            np.testing.assert_array_equal(actual, expected)
        assert strip_padding(action.tolist(), source.detokenizer.pad_token_id) == expected_action


def test_padded_detokenizer_round_trip(env_config):
    detokenizer = env_config.detokenizer_factory()
    constraint = detokenizer.detokenizer.constraint(BABYAI)
    names = detokenizer.detokenizer.action_spaces[BABYAI].names
    for index in range(len(names)):
        padded = detokenizer.encode(BABYAI, index)
        assert padded.shape == (detokenizer.max_action_tokens,)
        decoded = detokenizer.decode(BABYAI, strip_padding(padded.tolist(), detokenizer.pad_token_id))
        assert decoded.valid
        assert decoded.action == index
    assert detokenizer.pad_token_id not in constraint.allowed_next([])
    assert detokenizer.vocab_size == detokenizer.pad_token_id + 1
