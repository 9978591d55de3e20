"""GEA policy: tiny builder, tokenizer, frames, prompt, save/load round trips, LoRA and gradients."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, Qwen2Config
from transformers import SiglipVisionConfig

from gea.policy import GEAPolicy, GEAPolicyConfig, TinyModelSpec, build_tiny_model, tokens_per_frame, train_tokenizer
from gea.policy.frames import build_image_processor, encode_frames, pool_patches, preprocess_frames
from gea.policy.prompt import ACTION_TEXT, OBSERVATION_TEXT
from gea_envs.rollout import run_expert_episode
from gea_tokenizers.constraint import FixedLengthConstraint, TrieConstraint

ACTION_TOKENS = [f"<act_{index}>" for index in range(512)]
IMAGE_SIZE = 56


CORPUS = [
    "Agent: a point on a line",
    "Action space: move left or move right",
    "Simulator: a test corridor",
    "Camera: none",
    "Instruction: go to the right end",
    "Observation: Action: move left move right 0123456789",
]


@pytest.fixture(scope="module")
def tiny_parts():
    return build_tiny_model(CORPUS, ACTION_TOKENS, seed=0)


def make_policy(tiny_parts, **config) -> GEAPolicy:
    model, tokenizer, processor = tiny_parts
    fresh = LlavaOnevisionForConditionalGeneration(model.config)
    fresh.load_state_dict(model.state_dict())
    fresh.eval()
    return GEAPolicy(fresh, tokenizer, processor, GEAPolicyConfig(**config))


def action_ids(tokenizer, indices) -> list[int]:
    return [tokenizer.convert_tokens_to_ids(ACTION_TOKENS[index]) for index in indices]


def random_frames(rng, count: int, size: int = IMAGE_SIZE) -> list[np.ndarray]:
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(count)]


def sample_inputs(policy: GEAPolicy, adapter, rng) -> list:
    ids = action_ids(policy.tokenizer, range(4))
    inputs = []
    for history in (1, 2, 4):
        frames = [random_frames(rng, 1) for _ in range(history)]
        inputs.append(policy.build_input(adapter.prompt, "go to the right end", frames, [ids[:2]] * (history - 1)))
    return inputs


def sample_constraints(tokenizer) -> list:
    ids = action_ids(tokenizer, range(32))
    return [
        FixedLengthConstraint([ids[:16]] * 3),
        TrieConstraint([[ids[20]], [ids[21], ids[22]]]),
        FixedLengthConstraint([ids[16:32]]),
    ]


# ------------------------------------------------------------------------------ tokenizer


def test_tokenizer_splits_digits():
    tokenizer = train_tokenizer(["move 1234 steps", "move 99 steps"] * 20, vocab_size=400)
    tokens = tokenizer.tokenize("1234")
    assert tokens == ["1", "2", "3", "4"]


def test_tokenizer_special_tokens_are_single_ids():
    tokenizer = train_tokenizer(["turn left"], extra_special_tokens=["<act_0>", "<act_1>"], vocab_size=400)
    for token in ("<pad>", "<eos>", "<image>", "<act_0>", "<act_1>"):
        ids = tokenizer.encode(token, add_special_tokens=False)
        assert ids == [tokenizer.convert_tokens_to_ids(token)]
    assert tokenizer.pad_token_id != tokenizer.eos_token_id


def test_tokenizer_encodes_unseen_text():
    tokenizer = train_tokenizer(["turn left"], vocab_size=400)
    text = "Zebra crossing ü 42!"
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_tokenizer_rejects_reserved_extra_token():
    with pytest.raises(ValueError, match="reserved"):
        train_tokenizer(["turn left"], extra_special_tokens=["<image>"])


def test_tiny_model_has_few_million_parameters(tiny_parts):
    model, tokenizer, _ = tiny_parts
    count = sum(parameter.numel() for parameter in model.parameters())
    assert 1e6 < count < 5e6
    assert model.config.text_config.vocab_size == len(tokenizer)


def test_vision_position_std_sets_scale():
    model, _, _ = build_tiny_model(["turn left"], spec=TinyModelSpec(vision_position_std=1.0), seed=0)
    weight = model.model.vision_tower.embeddings.position_embedding.weight
    assert abs(float(weight.std()) - 1.0) < 0.05


def test_vision_position_std_rejects_non_positive():
    with pytest.raises(ValueError, match="vision_position_std must be positive"):
        TinyModelSpec(vision_position_std=0.0)


def test_text_init_std_sets_weight_scale():
    model, _, _ = build_tiny_model(["turn left"], spec=TinyModelSpec(text_init_std=0.1), seed=0)
    query = model.model.language_model.layers[0].self_attn.q_proj.weight
    projector = model.model.multi_modal_projector.linear_1.weight
    assert abs(float(query.std()) - 0.1) < 0.01
    assert abs(float(projector.std()) - 0.1) < 0.01


def test_text_init_std_rejects_non_positive():
    with pytest.raises(ValueError, match="text_init_std must be positive"):
        TinyModelSpec(text_init_std=-0.1)


# --------------------------------------------------------------------------------- frames


def test_image_tokens_per_frame_tiny(tiny_parts):
    model, _, processor = tiny_parts
    assert tokens_per_frame(model.config, frame_pool_stride=1, frame_newline=True) == 7 * 7 + 1
    pixel_values = preprocess_frames(processor, random_frames(np.random.default_rng(0), 3))
    tokens, features = encode_frames(model, pixel_values, frame_pool_stride=1, frame_newline=True)
    assert tokens.shape == (3, 50, model.config.text_config.hidden_size)
    assert features.shape == (3, model.config.text_config.hidden_size)
    pooled, _ = encode_frames(model, pixel_values, frame_pool_stride=2, frame_newline=False)
    assert pooled.shape[1] == tokens_per_frame(model.config, frame_pool_stride=2, frame_newline=False) == 16


def test_max_pool_keeps_single_patch():
    # A 4 x 4 grid with one bright patch in the top-left 2 x 2 block.
    patches = torch.zeros(1, 16, 2)
    patches[0, 5, 0] = 4.0
    bilinear = pool_patches(patches, stride=2)
    pooled_max = pool_patches(patches, stride=2, mode="max")
    assert bilinear.shape == pooled_max.shape == (1, 4, 2)
    assert bilinear[0, 0, 0].item() == pytest.approx(1.0)  # the block's mean
    assert pooled_max[0, 0, 0].item() == 4.0
    assert pooled_max[0, 1:].abs().sum().item() == 0.0


def test_config_without_pool_mode_loads_bilinear():
    # gea_policy.json files written before frame_pool_mode existed lack the key.
    assert GEAPolicyConfig.from_dict({"frame_pool_stride": 2}).frame_pool_mode == "bilinear"
    assert GEAPolicyConfig.from_dict({"frame_pool_mode": "max"}).frame_pool_mode == "max"


def test_pool_patches_rejects_unknown_mode():
    with pytest.raises(ValueError, match="'mean'"):
        pool_patches(torch.zeros(1, 16, 2), stride=2, mode="mean")


def test_policy_encodes_frames_with_max_pooling(tiny_parts):
    model, _, processor = tiny_parts
    pixel_values = preprocess_frames(processor, random_frames(np.random.default_rng(0), 2))
    bilinear, _ = encode_frames(model, pixel_values, frame_pool_stride=2, frame_newline=False)
    pooled_max, _ = encode_frames(model, pixel_values, 2, False, frame_pool_mode="max")
    assert pooled_max.shape == bilinear.shape
    assert torch.all(pooled_max >= bilinear - 1e-6)


def test_image_tokens_per_frame_onevision_size():
    # The vision tower of LLaVA-OneVision 0.5B and 7B: SigLIP at 384 px with 14 px patches.
    vision = SiglipVisionConfig(image_size=384, patch_size=14, vision_use_head=False)
    config = LlavaOnevisionConfig(vision_config=vision, text_config=Qwen2Config())
    assert tokens_per_frame(config, frame_pool_stride=1, frame_newline=True) == 27 * 27 + 1
    preset = GEAPolicyConfig.for_onevision()
    assert tokens_per_frame(config, preset.frame_pool_stride, preset.frame_newline) == 196


def test_frames_match_processor_multi_image_path(tiny_parts):
    _, _, processor = tiny_parts
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8), rng.integers(0, 256, (40, 64, 3), dtype=np.uint8)]
    reference = processor([frames], return_tensors="pt")["pixel_values"][:, 0]
    assert torch.equal(preprocess_frames(processor, frames), reference)


def test_single_frame_is_not_tiled(tiny_parts):
    model, _, processor = tiny_parts
    wide_frame = np.random.default_rng(2).integers(0, 256, (30, 90, 3), dtype=np.uint8)
    tokens, _ = encode_frames(model, preprocess_frames(processor, [wide_frame]), 1, True)
    assert tokens.shape[1] == 50


# --------------------------------------------------------------------------------- prompt


def test_prompt_keeps_last_observations(tiny_parts, line_world_adapter):
    policy = make_policy(tiny_parts, history_length=3)
    # The corridor starts at position 0 or 1; keep an episode with at least four steps.
    episodes = (run_expert_episode(line_world_adapter, seed=seed, image_size=IMAGE_SIZE) for seed in range(10))
    episode = next(episode for episode in episodes if episode.length >= 4)
    tokenizer = policy.tokenizer
    step = 3
    actions = [action_ids(tokenizer, [episode.actions[t], 100 + t]) for t in range(step)]
    prompt = policy.build_input(line_world_adapter.prompt, episode.instruction, episode.frames[: step + 1], actions)

    image_id = policy.base_model.config.image_token_id
    assert prompt.input_ids.count(image_id) == 3 * policy.tokens_per_frame
    assert len(prompt.frames) == 3
    for prompt_frame, episode_frames in zip(prompt.frames, episode.frames[step - 2 : step + 1]):
        assert prompt_frame is episode_frames[0]
    sequence = prompt.input_ids
    # The two actions between the three kept observations appear as ids; the older one does not.
    assert any(sequence[i : i + 2] == actions[1] for i in range(len(sequence)))
    assert any(sequence[i : i + 2] == actions[2] for i in range(len(sequence)))
    assert not any(sequence[i : i + 2] == actions[0] for i in range(len(sequence)))
    action_prefix = tokenizer.encode(ACTION_TEXT, add_special_tokens=False)
    assert sequence[-len(action_prefix) :] == action_prefix


def test_prompt_text_names_embodiment(tiny_parts, line_world_adapter):
    policy = make_policy(tiny_parts)
    frames = [random_frames(np.random.default_rng(3), 1)]
    prompt = policy.build_input(line_world_adapter.prompt, "go to the right end", frames, [])
    text = policy.tokenizer.decode([token for token in prompt.input_ids if token != policy.base_model.config.image_token_id])
    for part in (line_world_adapter.prompt.agent, line_world_adapter.prompt.simulator, "go to the right end"):
        assert part in text
    assert text.count(OBSERVATION_TEXT.strip()) == 1


def test_prompt_rejects_wrong_action_count(tiny_parts, line_world_adapter):
    policy = make_policy(tiny_parts)
    frames = [random_frames(np.random.default_rng(4), 1) for _ in range(2)]
    with pytest.raises(ValueError, match="one action per observation"):
        policy.build_input(line_world_adapter.prompt, "go", frames, [])


# ---------------------------------------------------------------------- save/load round trips


def test_tiny_model_round_trip(tmp_path: Path, tiny_parts):
    model, tokenizer, processor = tiny_parts
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = LlavaOnevisionForConditionalGeneration.from_pretrained(tmp_path)
    original_state, loaded_state = model.state_dict(), loaded.state_dict()
    assert original_state.keys() == loaded_state.keys()
    for name in original_state:
        assert torch.equal(original_state[name], loaded_state[name]), name
    loaded_tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded_tokenizer.get_vocab() == tokenizer.get_vocab()
    assert json.loads(loaded_tokenizer.backend_tokenizer.to_str()) == json.loads(tokenizer.backend_tokenizer.to_str())
    text = "Instruction: go to the right end 123 <act_7><image>"
    assert loaded_tokenizer.encode(text) == tokenizer.encode(text)
    assert loaded_tokenizer.pad_token_id == tokenizer.pad_token_id


def test_policy_round_trip_with_lora(tmp_path: Path, tiny_parts, line_world_adapter):
    policy = make_policy(tiny_parts, lora_rank=4, history_length=2)
    with torch.no_grad():
        for name, parameter in policy.named_parameters():
            if ".lora_B." in name or name.startswith("value_head."):
                parameter.normal_(std=0.05)
    policy.save_pretrained(tmp_path)
    loaded = GEAPolicy.from_pretrained(tmp_path)

    assert loaded.has_lora
    assert loaded.config == policy.config
    original_state, loaded_state = policy.state_dict(), loaded.state_dict()
    assert original_state.keys() == loaded_state.keys()
    for name in original_state:
        assert torch.equal(original_state[name], loaded_state[name]), name

    inputs = sample_inputs(policy, line_world_adapter, np.random.default_rng(5))
    constraints = sample_constraints(policy.tokenizer)
    actions = policy.act(inputs, constraints, temperature=0).token_ids
    original_scores = policy.score(inputs, actions, constraints)
    loaded_scores = loaded.score(inputs, actions, constraints)
    assert torch.equal(original_scores.log_probs, loaded_scores.log_probs)
    assert torch.equal(original_scores.values, loaded_scores.values)


def test_saved_base_has_no_lora_weights(tmp_path: Path, tiny_parts):
    policy = make_policy(tiny_parts, lora_rank=4)
    policy.save_pretrained(tmp_path)
    plain = LlavaOnevisionForConditionalGeneration.from_pretrained(tmp_path)
    assert not any("lora" in name for name in plain.state_dict())
    reference = tiny_parts[0].state_dict()
    for name, tensor in plain.state_dict().items():
        assert torch.equal(tensor, reference[name]), name


def test_plain_checkpoint_loads_with_defaults(tmp_path: Path, tiny_parts):
    model, tokenizer, processor = tiny_parts
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    policy = GEAPolicy.from_pretrained(tmp_path, config=GEAPolicyConfig(history_length=2))
    assert not policy.has_lora
    assert policy.config.history_length == 2
    assert policy.tokens_per_frame == 50


def test_add_tokens_grows_embeddings(line_world_adapter):
    model, tokenizer, processor = build_tiny_model(CORPUS, seed=1)
    policy = GEAPolicy(model, tokenizer, processor)
    vocab_before = len(tokenizer)
    new_ids = policy.add_tokens(["<move_up>", "<move_down>"])

    assert new_ids == [vocab_before, vocab_before + 1]
    assert policy.base_model.get_input_embeddings().weight.shape[0] == vocab_before + 2
    assert policy.base_model.lm_head.weight.shape[0] == vocab_before + 2
    assert tokenizer.encode("<move_down>", add_special_tokens=False) == [vocab_before + 1]
    frames = [random_frames(np.random.default_rng(10), 1)]
    prompt = policy.build_input(line_world_adapter.prompt, "go to the right end", frames, [])
    output = policy.act([prompt], [FixedLengthConstraint([new_ids])], temperature=0)
    assert output.token_ids[0][0] in new_ids


# ------------------------------------------------------------------------ LoRA and gradients


def test_lora_only_on_language_model(tiny_parts):
    policy = make_policy(tiny_parts, lora_rank=4)
    lora_names = [name for name, _ in policy.named_parameters() if ".lora_" in name]
    assert lora_names
    assert all(".language_model." in name for name in lora_names)
    assert not any("vision_tower" in name for name in lora_names)


def test_gradients_reach_lora_and_value_head_only(tiny_parts, line_world_adapter):
    policy = make_policy(tiny_parts, lora_rank=4)
    trainable = set(policy.freeze_except_lora_and_value_head())
    with torch.no_grad():
        # peft starts lora_B at zero, which would zero the gradient of lora_A.
        for name, parameter in policy.named_parameters():
            if ".lora_B." in name:
                parameter.normal_(std=0.05)
    inputs = sample_inputs(policy, line_world_adapter, np.random.default_rng(6))
    constraints = sample_constraints(policy.tokenizer)
    actions = policy.act(inputs, constraints, temperature=1.0, generator=torch.Generator().manual_seed(0)).token_ids

    scores = policy.score(inputs, actions, constraints)
    loss = -scores.log_probs.sum() - 0.01 * scores.entropy.sum() + scores.values.square().sum()
    loss.backward()

    for name, parameter in policy.named_parameters():
        if name in trainable:
            assert parameter.grad is not None, name
            assert torch.isfinite(parameter.grad).all(), name
            assert parameter.grad.abs().sum() > 0, name
        else:
            assert parameter.grad is None, name
    assert any(".lora_A." in name for name in trainable)
    assert any(name.startswith("value_head.") for name in trainable)


def test_freeze_requires_lora(tiny_parts):
    policy = make_policy(tiny_parts)
    with pytest.raises(ValueError, match="lora_rank"):
        policy.freeze_except_lora_and_value_head()


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="history_length"):
        GEAPolicyConfig(history_length=0)
    with pytest.raises(ValueError, match="frame_pool_stride"):
        GEAPolicyConfig(frame_pool_stride=0)
    with pytest.raises(ValueError, match="frame_pool_mode"):
        GEAPolicyConfig(frame_pool_mode="average")
    with pytest.raises(ValueError, match="lora_dropout"):
        GEAPolicyConfig(lora_dropout=1.0)
