"""Semantic tokens, code maps and the multi-embodiment detokenizer with a tiny offline BPE tokenizer."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from gea_envs import ADAPTERS, get_adapter
from gea_envs.spaces import CLICK, TYPE, ContinuousActionSpace, DiscreteActionSpace, UIAction, UIActionSpace
from gea_tokenizers import (
    ActionDetokenizer,
    BinningTokenizer,
    CodeMapMode,
    ResidualVQConfig,
    TrainingConfig,
    action_phrase_token_ids,
    added_token_code_map,
    find_violation,
    least_used_code_map,
    train_residual_vq,
)
from gea_tokenizers.detokenizer import UI_FALLBACK

EOS = "<|endoftext|>"
PAD = "<|pad|>"
ARM = "test/arm"
GRID_WORLD = "test/grid"
BROWSER = "test/browser"
DIRECT_SPACES = {
    ARM: ContinuousActionSpace(low=(-1.0, -1.0, -1.0, 0.0), high=(1.0, 1.0, 1.0, 2.0)),
    GRID_WORLD: DiscreteActionSpace(("turn left", "turn right", "move forward", "pick up", "done")),
    BROWSER: UIActionSpace(grid_width=16, grid_height=12, max_text_chars=10),
}
TINY_VQ = ResidualVQConfig(padded_width=21, code_dim=16, hidden_width=32, mlp_layers=2, codebook_size=32)


def registered_spaces() -> dict:
    return {name: get_adapter(name).action_space for name in ADAPTERS.names()}


def corpus() -> list[str]:
    texts = ["Pick up the red ball and go to the door.", "click 3 4", "type hello world", "Click the OK button."]
    for space in list(DIRECT_SPACES.values()) + list(registered_spaces().values()):
        if isinstance(space, DiscreteActionSpace):
            texts.extend(space.names)
    return texts * 5


def train_byte_bpe(texts: list[str], vocab_size: int = 600) -> PreTrainedTokenizerFast:
    """A byte-level BPE that splits digits one per token, with eos and pad tokens."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS, pad_token=PAD)


def uniform_actions(space: ContinuousActionSpace, count: int, seed: int) -> np.ndarray:
    low = np.clip(np.asarray(space.low), -10, 10)
    high = np.clip(np.asarray(space.high), -10, 10)
    return np.random.default_rng(seed).uniform(low, high, size=(count, space.dim)).astype(np.float32)


def sample_actions(space, seed: int) -> list:
    """A handful of valid actions of any space kind, including its edge cases."""
    rng = np.random.default_rng(seed)
    if isinstance(space, ContinuousActionSpace):
        edges = [np.asarray(space.low, np.float32), np.asarray(space.high, np.float32)]
        return [np.clip(edge, -10, 10).astype(np.float32) for edge in edges] + list(uniform_actions(space, 6, seed))
    if isinstance(space, DiscreteActionSpace):
        return list(range(space.n))
    texts = ["a", "hello world", "~" * space.max_text_chars, " 42 ", "x=1; y=2"]
    texts = [text[: space.max_text_chars] for text in texts]
    clicks = [(0, 0), (space.grid_width - 1, space.grid_height - 1)]
    clicks += [(int(rng.integers(space.grid_width)), int(rng.integers(space.grid_height))) for _ in range(4)]
    return [UIAction(CLICK, x=x, y=y) for x, y in clicks] + [UIAction(TYPE, text=text) for text in texts]


@pytest.fixture(scope="module")
def llm_tokenizer():
    return train_byte_bpe(corpus())


@pytest.fixture(scope="module")
def direct_detokenizer(llm_tokenizer):
    """Detokenizer for the three directly built spaces, with binning and a least-used code map."""
    binning = BinningTokenizer.fit({ARM: uniform_actions(DIRECT_SPACES[ARM], 500, 0)})
    excluded = action_phrase_token_ids(DIRECT_SPACES, llm_tokenizer)
    code_map = least_used_code_map(llm_tokenizer, corpus(), binning.num_codes, exclude_ids=excluded)
    return ActionDetokenizer(DIRECT_SPACES, llm_tokenizer, binning, code_map)


@pytest.fixture(scope="module")
def registry_detokenizer(llm_tokenizer):
    """Detokenizer for every registered adapter, with a tiny residual VQ and added action tokens."""
    tokenizer = train_byte_bpe(corpus())
    continuous = {
        name: uniform_actions(space, 300, index)
        for index, (name, space) in enumerate(sorted(registered_spaces().items()))
        if isinstance(space, ContinuousActionSpace)
    }
    if not continuous:
        continuous = {ARM: uniform_actions(DIRECT_SPACES[ARM], 300, 0)}
    vq, _ = train_residual_vq(continuous, TINY_VQ, TrainingConfig(steps=20, batch_size=64), progress=False)
    code_map = added_token_code_map(tokenizer, vq.num_codes)
    return ActionDetokenizer.from_registry(tokenizer, vq, code_map)


def test_registry_detokenizer_covers_every_adapter(registry_detokenizer):
    assert registry_detokenizer.embodiments == ADAPTERS.names()


def test_registered_spaces_round_trip(registry_detokenizer):
    for name in registry_detokenizer.embodiments:
        space = registry_detokenizer.action_spaces[name]
        constraint = registry_detokenizer.constraint(name)
        for action in sample_actions(space, seed=1):
            ids = registry_detokenizer.encode(name, action)
            assert len(ids) <= constraint.max_length, name
            assert find_violation(constraint, ids) is None, (name, action)
            decoded = registry_detokenizer.decode(name, ids)
            assert decoded.valid, (name, action, decoded.reason)
            if isinstance(space, ContinuousActionSpace):
                # A 20-step VQ is not accurate, but its output must be a valid action of the space.
                assert np.array_equal(space.validate(decoded.action), space.clip(decoded.action))
            else:
                assert decoded.action == action, name
    rates = registry_detokenizer.decode_validity()
    assert all(rate == 1.0 for rate in rates.values())


def test_direct_spaces_round_trip(direct_detokenizer):
    statistics = direct_detokenizer.continuous.statistics[ARM]
    half_bin = (statistics.max - statistics.min) / 256 / 2
    for name, space in DIRECT_SPACES.items():
        for action in sample_actions(space, seed=2):
            decoded = direct_detokenizer.decode(name, direct_detokenizer.encode(name, action))
            assert decoded.valid, (name, action, decoded.reason)
            if isinstance(space, ContinuousActionSpace):
                clipped = np.clip(action, statistics.min, statistics.max)
                assert np.all(np.abs(decoded.action - clipped) <= half_bin * 1.0001 + 1e-6)
            else:
                assert decoded.action == action


def test_continuous_tokens_use_code_map(direct_detokenizer):
    ids = direct_detokenizer.encode(ARM, np.zeros(4, np.float32))
    assert len(ids) == 4  # binning: one token per dimension
    assert set(ids) <= set(direct_detokenizer.code_map.token_ids)
    assert direct_detokenizer.code_map.mode is CodeMapMode.LEAST_USED


def test_least_used_map_avoids_phrase_and_special_ids(direct_detokenizer, llm_tokenizer):
    code_ids = set(direct_detokenizer.code_map.token_ids)
    assert not code_ids & set(llm_tokenizer.all_special_ids)
    assert not code_ids & action_phrase_token_ids(DIRECT_SPACES, llm_tokenizer)
    assert len(llm_tokenizer) == len(train_byte_bpe(corpus()))  # the vocabulary keeps its size


def test_added_tokens_extend_vocabulary(registry_detokenizer):
    tokenizer = registry_detokenizer.llm_tokenizer
    code_map = registry_detokenizer.code_map
    assert code_map.mode is CodeMapMode.ADDED_TOKENS
    assert tokenizer.convert_ids_to_tokens(code_map.token_ids[3]) == "<act_3>"
    assert len(tokenizer) == len(train_byte_bpe(corpus())) + code_map.num_codes


SAMPLED_EMBODIMENTS = sorted(DIRECT_SPACES)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(embodiment=st.sampled_from(SAMPLED_EMBODIMENTS), seed=st.integers(0, 2**32 - 1))
def test_constrained_sampling_always_decodes(direct_detokenizer, llm_tokenizer, embodiment, seed):
    """Sampling from random logits masked by the constraint must always give a valid action."""
    rng = np.random.default_rng(seed)
    constraint = direct_detokenizer.constraint(embodiment)
    prefix: list[int] = []
    while True:
        allowed = constraint.allowed_next(prefix)
        if not allowed:
            break
        logits = rng.normal(scale=3.0, size=len(llm_tokenizer))[allowed]
        probabilities = np.exp(logits - logits.max())
        prefix.append(int(rng.choice(allowed, p=probabilities / probabilities.sum())))
        assert len(prefix) <= constraint.max_length
    decoded = direct_detokenizer.decode(embodiment, prefix)
    assert decoded.valid, decoded.reason


def test_invalid_tokens_give_fallback(direct_detokenizer, llm_tokenizer):
    direct_detokenizer.reset_decode_counts()
    eos = llm_tokenizer.eos_token_id
    garbage = llm_tokenizer.encode("jump", add_special_tokens=False) + [eos]

    # eos is special, so the least-used code map never contains it.
    continuous = direct_detokenizer.decode(ARM, [eos] * 4)
    assert not continuous.valid
    assert "not allowed" in continuous.reason
    assert np.array_equal(continuous.action, np.array([0, 0, 0, 0], np.float32))

    discrete = direct_detokenizer.decode(GRID_WORLD, garbage)
    assert not discrete.valid
    assert discrete.action == 0

    ui = direct_detokenizer.decode(BROWSER, llm_tokenizer.encode("click 3", add_special_tokens=False))
    assert not ui.valid
    assert "incomplete" in ui.reason
    assert ui.action == UI_FALLBACK

    direct_detokenizer.decode(GRID_WORLD, direct_detokenizer.encode(GRID_WORLD, 1))
    rates = direct_detokenizer.decode_validity()
    assert rates[f"rollout/{ARM}/decode_valid_rate"] == 0.0
    assert rates[f"rollout/{GRID_WORLD}/decode_valid_rate"] == 0.5
    direct_detokenizer.reset_decode_counts()
    assert direct_detokenizer.decode_validity() == {}


def test_continuous_fallback_clipped_into_bounds(direct_detokenizer):
    # The fourth dimension of ARM lies in [0, 2], so zero is its lower bound.
    shifted = ContinuousActionSpace(low=(0.5,) * 4, high=(1.0,) * 4)
    binning = BinningTokenizer.fit({ARM: uniform_actions(shifted, 50, 0)})
    detokenizer = ActionDetokenizer({ARM: shifted}, direct_detokenizer.llm_tokenizer, binning,
                                    direct_detokenizer.code_map)
    assert np.array_equal(detokenizer.fallback_action(ARM), np.full(4, 0.5, np.float32))


@pytest.mark.parametrize(
    "text, reason",
    [
        ("click 3", "neither"),
        ("click 03 4", "neither"),
        ("click 16 0", "outside the 16 x 12 grid"),
        ("type ", "neither"),
        ("type this text is too long", "1 to 10 printable ASCII"),
        ("press enter", "neither"),
    ],
)
def test_ui_text_that_does_not_parse(direct_detokenizer, text, reason):
    codec = direct_detokenizer._codec(BROWSER).codec
    decoded = codec.parse_text(text, UI_FALLBACK)
    assert not decoded.valid
    assert reason in decoded.reason
    assert decoded.action == UI_FALLBACK


def test_discrete_text_parses_exact_names(direct_detokenizer):
    codec = direct_detokenizer._codec(GRID_WORLD).codec
    assert codec.parse_text(" move forward ", 0).action == 2
    rejected = codec.parse_text("Move Forward", 0)
    assert not rejected.valid
    assert "is not one of the action names" in rejected.reason


def test_unknown_embodiment_raises(direct_detokenizer):
    with pytest.raises(ValueError, match=r"Unknown embodiment 'test/nothing'; this detokenizer covers"):
        direct_detokenizer.encode("test/nothing", 0)


def test_encode_rejects_invalid_actions(direct_detokenizer):
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        direct_detokenizer.encode(ARM, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="outside"):
        direct_detokenizer.encode(GRID_WORLD, 9)
    with pytest.raises(ValueError, match="outside the 16 x 12 grid"):
        direct_detokenizer.encode(BROWSER, UIAction(CLICK, x=16, y=0))


def test_width_mismatch_between_space_and_tokenizer(direct_detokenizer):
    wide = {ARM: ContinuousActionSpace(low=(-1.0,) * 5, high=(1.0,) * 5)}
    with pytest.raises(ValueError, match=r"'test/arm' has actions of width 5.*trained on width 4"):
        ActionDetokenizer(wide, direct_detokenizer.llm_tokenizer, direct_detokenizer.continuous,
                          direct_detokenizer.code_map)


def test_continuous_space_without_statistics(direct_detokenizer):
    spaces = {"test/other-arm": DIRECT_SPACES[ARM]}
    with pytest.raises(ValueError, match=r"no action statistics for embodiment 'test/other-arm'.*\['test/arm'\]"):
        ActionDetokenizer(spaces, direct_detokenizer.llm_tokenizer, direct_detokenizer.continuous,
                          direct_detokenizer.code_map)


def test_save_load_round_trip(direct_detokenizer, llm_tokenizer, tmp_path):
    direct_detokenizer.save(tmp_path)
    loaded = ActionDetokenizer.load(tmp_path, llm_tokenizer, DIRECT_SPACES)
    assert loaded.fingerprint() == direct_detokenizer.fingerprint()
    for name, space in DIRECT_SPACES.items():
        for action in sample_actions(space, seed=3):
            assert loaded.encode(name, action) == direct_detokenizer.encode(name, action)


def test_registry_save_load_with_vq(registry_detokenizer, tmp_path):
    registry_detokenizer.save(tmp_path)
    loaded = ActionDetokenizer.load(tmp_path, registry_detokenizer.llm_tokenizer)
    assert loaded.fingerprint() == registry_detokenizer.fingerprint()
    for name in loaded.embodiments:
        for action in sample_actions(loaded.action_spaces[name], seed=4):
            ids = registry_detokenizer.encode(name, action)
            assert loaded.encode(name, action) == ids
            original, reloaded = registry_detokenizer.decode(name, ids), loaded.decode(name, ids)
            if isinstance(original.action, np.ndarray):
                assert np.array_equal(original.action, reloaded.action)
            else:
                assert original.action == reloaded.action


def test_load_rejects_other_tokenizer(direct_detokenizer, tmp_path):
    direct_detokenizer.save(tmp_path)
    other = train_byte_bpe(corpus() + ["another corpus changes the merges"], vocab_size=620)
    with pytest.raises(ValueError, match="vocabulary differs"):
        ActionDetokenizer.load(tmp_path, other, DIRECT_SPACES)


def test_load_rejects_changed_action_space(direct_detokenizer, llm_tokenizer, tmp_path):
    direct_detokenizer.save(tmp_path)
    changed = dict(DIRECT_SPACES)
    changed[BROWSER] = UIActionSpace(grid_width=20, grid_height=12, max_text_chars=10)
    with pytest.raises(ValueError, match="Action spaces differ"):
        ActionDetokenizer.load(tmp_path, llm_tokenizer, changed)


def test_fingerprint_detects_code_map_change(direct_detokenizer, llm_tokenizer):
    other_map = least_used_code_map(llm_tokenizer, [], direct_detokenizer.continuous.num_codes,
                                    exclude_ids=direct_detokenizer.code_map.token_ids[:1])
    other = ActionDetokenizer(DIRECT_SPACES, llm_tokenizer, direct_detokenizer.continuous, other_map)
    assert other.fingerprint() != direct_detokenizer.fingerprint()


def test_code_map_size_must_match_codes(direct_detokenizer, llm_tokenizer):
    small_map = least_used_code_map(llm_tokenizer, corpus(), 10)
    with pytest.raises(ValueError, match="code map has 10 ids but the uniform_binning tokenizer has 256 codes"):
        ActionDetokenizer(DIRECT_SPACES, llm_tokenizer, direct_detokenizer.continuous, small_map)


def test_tokenizer_without_eos_raises(llm_tokenizer):
    no_eos = train_byte_bpe(corpus())
    no_eos.eos_token = None
    with pytest.raises(ValueError, match="has no eos token"):
        ActionDetokenizer({GRID_WORLD: DIRECT_SPACES[GRID_WORLD]}, no_eos)
