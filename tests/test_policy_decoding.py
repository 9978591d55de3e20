"""GEA policy: batched KV-cached constrained decoding and teacher-forced scoring on the tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import LlavaOnevisionForConditionalGeneration

from gea.policy import GEAPolicy, GEAPolicyConfig, TinyModelSpec, build_tiny_model
from gea.policy.decoding import allowed_ids_mask, masked_entropy, masked_log_probs
from gea.policy.shared_prefix import split_shared_prefixes
from gea_envs import EmbodimentPrompt
from gea_tokenizers.constraint import FixedLengthConstraint, TrieConstraint, find_violation

CORPUS = [
    "Agent: a Sawyer arm with a parallel gripper",
    "Action space: 4 numbers for the end effector",
    "Simulator: MuJoCo",
    "Camera: corner camera",
    "Instruction: pick up the puck",
    "Observation: Action: turn left, turn right, move forward",
]
PROMPT = EmbodimentPrompt(agent="a Sawyer arm", action_space="4 numbers", simulator="MuJoCo", camera="corner")
ACTION_TOKENS = [f"<act_{index}>" for index in range(64)]
IMAGE_SIZE = 56
LOG_PROB_TOLERANCE = 1e-5


# Narrower than the default tiny model so that the property test stays fast; the code paths are the same.
SPEC = TinyModelSpec(vision_hidden_size=64, text_hidden_size=128, text_heads=4, text_kv_heads=2)


@pytest.fixture(scope="module")
def tiny_parts():
    return build_tiny_model(CORPUS, ACTION_TOKENS, spec=SPEC, seed=0)


def policy_with_seed(tiny_parts, seed: int, **config) -> GEAPolicy:
    """A policy with fresh random weights drawn from `seed`."""
    model, tokenizer, processor = tiny_parts
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = LlavaOnevisionForConditionalGeneration(model.config)
    fresh.eval()
    return GEAPolicy(fresh, tokenizer, processor, GEAPolicyConfig(**config))


def make_input(policy: GEAPolicy, rng: np.random.Generator, observations: int, frames_per_observation: int = 1):
    frames = [
        [rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8) for _ in range(frames_per_observation)]
        for _ in range(observations)
    ]
    actions = [rng.integers(4, 60, size=rng.integers(1, 4)).tolist() for _ in range(observations - 1)]
    return policy.build_input(PROMPT, "pick up the puck", frames, actions)


def usable_ids(policy: GEAPolicy) -> list[int]:
    image_token_id = policy.base_model.config.image_token_id
    return [index for index in range(len(policy.tokenizer)) if index != image_token_id]


@st.composite
def constraints(draw, ids: list[int]):
    """A fixed-length constraint or a trie of end-terminated sequences, over ids from the whole vocabulary."""
    token = st.sampled_from(ids)
    if draw(st.booleans()):
        length = draw(st.integers(1, 4))
        positions = [draw(st.lists(token, min_size=1, max_size=6, unique=True)) for _ in range(length)]
        return FixedLengthConstraint(positions)
    end = draw(token)
    body = st.lists(token.filter(lambda value: value != end), min_size=0, max_size=3)
    bodies = draw(st.lists(body, min_size=1, max_size=5, unique_by=tuple))
    # Every sequence ends with `end` and has no other `end`, so none is a prefix of another.
    return TrieConstraint([[*sequence, end] for sequence in bodies])


@st.composite
def decoding_cases(draw):
    weight_seed = draw(st.integers(0, 2**16))
    rows = draw(st.integers(1, 4))
    observations = [draw(st.integers(1, 3)) for _ in range(rows)]
    frames_per_observation = draw(st.integers(1, 2))
    temperature = draw(st.sampled_from([0.0, 0.5, 1.0, 2.0]))
    sample_seed = draw(st.integers(0, 2**16))
    return weight_seed, observations, frames_per_observation, temperature, sample_seed


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=decoding_cases(), data=st.data())
def test_decoding_respects_constraints_and_scores_match(tiny_parts, case, data):
    weight_seed, observations, frames_per_observation, temperature, sample_seed = case
    policy = policy_with_seed(tiny_parts, weight_seed)
    ids = usable_ids(policy)
    row_constraints = [data.draw(constraints(ids)) for _ in observations]
    rng = np.random.default_rng(sample_seed)
    inputs = [make_input(policy, rng, count, frames_per_observation) for count in observations]

    generator = torch.Generator().manual_seed(sample_seed)
    output = policy.act(inputs, row_constraints, temperature=temperature, generator=generator)

    for row, (constraint, tokens) in enumerate(zip(row_constraints, output.token_ids)):
        assert find_violation(constraint, tokens) is None, (row, tokens)
        assert int(output.mask[row].sum()) == len(tokens)
    assert torch.isfinite(output.log_probs).all()
    assert (output.log_probs <= 0).all()
    assert output.values.shape == (len(inputs),)

    scored = policy.score(inputs, output.token_ids, row_constraints, temperature=temperature or 1.0)
    assert torch.equal(scored.mask, output.mask)
    torch.testing.assert_close(scored.log_probs, output.log_probs, atol=LOG_PROB_TOLERANCE, rtol=0)
    torch.testing.assert_close(scored.values, output.values, atol=LOG_PROB_TOLERANCE, rtol=0)


def test_single_choice_positions_have_zero_log_prob(tiny_parts):
    policy = policy_with_seed(tiny_parts, 1)
    ids = usable_ids(policy)
    constraint = FixedLengthConstraint([[ids[10]], ids[20:30], [ids[40]]])
    inputs = [make_input(policy, np.random.default_rng(0), 2)]
    output = policy.act(inputs, [constraint], temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert output.token_ids[0][0] == ids[10]
    assert output.token_ids[0][2] == ids[40]
    assert output.log_probs[0, 0] == 0
    assert output.log_probs[0, 2] == 0
    assert output.log_probs[0, 1] < 0


def test_batched_decoding_matches_single_rows(tiny_parts):
    policy = policy_with_seed(tiny_parts, 2)
    ids = usable_ids(policy)
    row_constraints = [
        FixedLengthConstraint([ids[100:140]] * 4),
        TrieConstraint([[ids[5], ids[6]], [ids[7]]]),
        FixedLengthConstraint([ids[200:260]]),
    ]
    rng = np.random.default_rng(3)
    inputs = [make_input(policy, rng, count) for count in (3, 1, 2)]
    batched = policy.act(inputs, row_constraints, temperature=0)
    for row, (item, constraint) in enumerate(zip(inputs, row_constraints)):
        single = policy.score([item], [batched.token_ids[row]], [constraint])
        length = len(batched.token_ids[row])
        torch.testing.assert_close(
            single.log_probs[0, :length], batched.log_probs[row, :length], atol=LOG_PROB_TOLERANCE, rtol=0
        )
        torch.testing.assert_close(single.values[0], batched.values[row], atol=LOG_PROB_TOLERANCE, rtol=0)


def test_shared_prefix_act_matches_single_rows(tiny_parts):
    policy = policy_with_seed(tiny_parts, 9)
    ids = usable_ids(policy)
    other_prompt = EmbodimentPrompt(agent="a grid agent", action_space="7 names", simulator="MiniGrid", camera="top")
    rng = np.random.default_rng(10)
    inputs = []
    for prompt, observations in [(PROMPT, 3), (other_prompt, 2), (PROMPT, 1), (PROMPT, 3), (other_prompt, 3)]:
        frames = [[rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)] for _ in range(observations)]
        actions = [rng.integers(4, 60, size=2).tolist() for _ in range(observations - 1)]
        inputs.append(policy.build_input(prompt, "pick up the puck", frames, actions))
    split = split_shared_prefixes([item.input_ids for item in inputs], policy.base_model.config.image_token_id)
    assert split is not None
    assert split.group_of_row.tolist() == [0, 1, 0, 0, 1]
    constraint = FixedLengthConstraint([ids[100:140]] * 3)

    batched = policy.act(inputs, [constraint] * len(inputs), temperature=0)

    for row, item in enumerate(inputs):
        single = policy.act([item], [constraint], temperature=0)
        assert single.token_ids[0] == batched.token_ids[row]
        torch.testing.assert_close(single.log_probs[0], batched.log_probs[row], atol=LOG_PROB_TOLERANCE, rtol=0)
        torch.testing.assert_close(single.values[0], batched.values[row], atol=LOG_PROB_TOLERANCE, rtol=0)


def test_shared_prefix_score_matches_single_rows(tiny_parts):
    policy = policy_with_seed(tiny_parts, 11)
    policy.train()
    ids = usable_ids(policy)
    rng = np.random.default_rng(12)
    instructions = ["pick up the puck", "push the puck to the goal", "pick up the puck", "reach the red goal"]
    inputs = []
    for instruction, observations in zip(instructions, [2, 1, 3, 2]):
        frames = [[rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)] for _ in range(observations)]
        actions = [rng.integers(4, 60, size=2).tolist() for _ in range(observations - 1)]
        inputs.append(policy.build_input(PROMPT, instruction, frames, actions))
    split = split_shared_prefixes([item.input_ids for item in inputs], policy.base_model.config.image_token_id)
    assert split is not None
    assert split.group_of_row.tolist() == [0, 0, 0, 0]
    constraint = FixedLengthConstraint([ids[100:140]] * 3)
    actions = [rng.choice(ids[100:140], size=3).tolist() for _ in inputs]
    parameter = policy.base_model.model.language_model.layers[0].self_attn.q_proj.weight

    batched = policy.score(inputs, actions, [constraint] * len(inputs))
    batched_grad = torch.autograd.grad(batched.log_probs.sum() + batched.values.sum(), parameter)[0]
    single_grad = torch.zeros_like(parameter)
    for row, (item, action) in enumerate(zip(inputs, actions)):
        single = policy.score([item], [action], [constraint])
        torch.testing.assert_close(single.log_probs[0], batched.log_probs[row], atol=LOG_PROB_TOLERANCE, rtol=0)
        torch.testing.assert_close(single.values[0], batched.values[row], atol=LOG_PROB_TOLERANCE, rtol=0)
        single_grad += torch.autograd.grad(single.log_probs.sum() + single.values.sum(), parameter)[0]

    torch.testing.assert_close(batched_grad, single_grad, atol=1e-4, rtol=1e-4)


def test_split_groups_rows_by_common_prefix():
    image = 3
    header = list(range(10, 30))
    split = split_shared_prefixes([header + [1, image], header + [2, 4, image, 5], [7] + header + [image]], image)
    assert split.prefixes == [header, [7] + header]
    assert split.group_of_row.tolist() == [0, 0, 1]
    assert split.suffixes == [[1, image], [2, 4, image, 5], [image]]


def test_split_shared_prefixes_needs_a_shared_prefix():
    image = 3
    assert split_shared_prefixes([[1, 2, image, 5], [1, 4, image, 6]], image) is None
    assert split_shared_prefixes([[1, 2, image], [1, 2, 5]], image) is None
    assert split_shared_prefixes([[image, 2], [image, 2]], image) is None
    split = split_shared_prefixes([[1, 2, image, 5], [1, 2, image, image, 7], [1, image]], image)
    assert split.prefixes == [[1, 2], [1]]
    assert split.group_of_row.tolist() == [0, 0, 1]
    assert split.suffixes == [[image, 5], [image, image, 7], [image]]


def test_allowed_ids_mask_shares_rows_of_one_state():
    first = FixedLengthConstraint([[1, 4], [2]])
    second = TrieConstraint([[3, 5], [6]])
    mask = allowed_ids_mask([first, second, first, first], [[], [3], [1], [4, 2]], vocab_size=8, device="cpu")
    assert mask[0].nonzero().flatten().tolist() == [1, 4]
    assert mask[1].nonzero().flatten().tolist() == [5]
    assert mask[2].nonzero().flatten().tolist() == [2]
    assert not mask[3].any()


def test_sampling_is_reproducible_with_generator(tiny_parts):
    policy = policy_with_seed(tiny_parts, 3)
    ids = usable_ids(policy)
    constraint = FixedLengthConstraint([ids[:200]] * 3)
    inputs = [make_input(policy, np.random.default_rng(4), 1) for _ in range(2)]
    first = policy.act(inputs, [constraint] * 2, temperature=1.0, generator=torch.Generator().manual_seed(7))
    second = policy.act(inputs, [constraint] * 2, temperature=1.0, generator=torch.Generator().manual_seed(7))
    assert first.token_ids == second.token_ids


def test_score_entropy_within_uniform_bound(tiny_parts):
    policy = policy_with_seed(tiny_parts, 4)
    ids = usable_ids(policy)
    constraint = FixedLengthConstraint([ids[:8], [ids[9]]])
    inputs = [make_input(policy, np.random.default_rng(5), 1)]
    scored = policy.score(inputs, [[ids[3], ids[9]]], [constraint])
    assert 0 < float(scored.entropy[0, 0].detach()) <= np.log(8) + 1e-6
    assert float(scored.entropy[0, 1].detach()) == 0


def test_score_rejects_invalid_action(tiny_parts):
    policy = policy_with_seed(tiny_parts, 5)
    ids = usable_ids(policy)
    constraint = FixedLengthConstraint([ids[:4], ids[:4]])
    inputs = [make_input(policy, np.random.default_rng(6), 1)]
    with pytest.raises(ValueError, match="Row 0"):
        policy.score(inputs, [[ids[0], ids[7]]], [constraint])
    with pytest.raises(ValueError, match="Row 0"):
        policy.score(inputs, [[ids[0]]], [constraint])


def test_act_rejects_out_of_vocabulary_constraint(tiny_parts):
    policy = policy_with_seed(tiny_parts, 6)
    constraint = FixedLengthConstraint([[len(policy.tokenizer) + 5]])
    inputs = [make_input(policy, np.random.default_rng(7), 1)]
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        policy.act(inputs, [constraint])


def test_act_rejects_image_placeholder_in_constraint(tiny_parts):
    policy = policy_with_seed(tiny_parts, 7)
    constraint = FixedLengthConstraint([[policy.base_model.config.image_token_id]])
    inputs = [make_input(policy, np.random.default_rng(8), 1)]
    with pytest.raises(ValueError, match="image placeholder"):
        policy.act(inputs, [constraint])


def test_act_rejects_mismatched_batch(tiny_parts):
    policy = policy_with_seed(tiny_parts, 8)
    inputs = [make_input(policy, np.random.default_rng(9), 1)]
    with pytest.raises(ValueError, match="one per input"):
        policy.act(inputs, [])


def test_masked_distribution_ignores_disallowed_logits():
    logits = torch.tensor([[0.0, 100.0, 1.0, 2.0]])
    allowed = torch.tensor([[True, False, True, False]])
    log_probs = masked_log_probs(logits, allowed, temperature=1.0)
    assert torch.isinf(log_probs[0, 1])
    assert torch.isinf(log_probs[0, 3])
    torch.testing.assert_close(log_probs[0, [0, 2]].exp().sum(), torch.tensor(1.0))
    torch.testing.assert_close(log_probs[0, 2] - log_probs[0, 0], torch.tensor(1.0))
    entropy = masked_entropy(log_probs, allowed)
    assert torch.isfinite(entropy).all()


def test_masked_entropy_gradient_is_finite():
    logits = torch.randn(2, 6, requires_grad=True)
    allowed = torch.tensor([[True, True, False, False, True, False], [False] * 6])
    entropy = masked_entropy(masked_log_probs(logits, allowed, temperature=0.7), allowed)
    entropy.sum().backward()
    assert torch.isfinite(logits.grad).all()
    assert float(entropy[1].detach()) == 0
