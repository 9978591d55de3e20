"""Residual VQ-VAE and binning tokenizers on synthetic action arrays: round trips, save/load, errors."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from gea_tokenizers import (
    BinningTokenizer,
    NormalizationMode,
    ResidualVQConfig,
    ResidualVQTokenizer,
    TrainingConfig,
    evaluate_tokenizer,
    load_continuous_tokenizer,
    parse_embodiment_weights,
    train_residual_vq,
)
from gea_tokenizers.continuous import CONFIG_FILE, compute_statistics

TINY_VQ = ResidualVQConfig(padded_width=8, code_dim=16, hidden_width=32, mlp_layers=2, codebook_size=32)
TINY_TRAINING = TrainingConfig(steps=60, batch_size=128, log_every=20)


def synthetic_actions() -> dict[str, np.ndarray]:
    """Two embodiments of different widths and scales; "arm" lies on a 1-D curve, so 2 codes fit it well."""
    rng = np.random.default_rng(0)
    phase = rng.uniform(-np.pi, np.pi, size=(600, 1))
    arm = np.concatenate([np.sin(phase), np.cos(phase), 0.5 * np.sin(2 * phase)], axis=1).astype(np.float32)
    legs = (0.4 * np.tanh(rng.normal(size=(400, 6)))).astype(np.float32)
    return {"test/arm": arm, "test/legs": legs}


@pytest.fixture(scope="module")
def trained_vq(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("tensorboard")
    tokenizer, report = train_residual_vq(synthetic_actions(), TINY_VQ, TINY_TRAINING, log_dir=log_dir, progress=False)
    return tokenizer, report, log_dir


def test_vq_training_beats_untrained_model(trained_vq):
    tokenizer, report, _ = trained_vq
    untrained = ResidualVQTokenizer(tokenizer.statistics, TINY_VQ)
    # An untrained model still needs initialized codebooks to encode; one train-mode pass gives them.
    untrained.model.train()
    untrained.model(untrained.pad("test/arm", synthetic_actions()["test/arm"]))
    baseline = evaluate_tokenizer(untrained, synthetic_actions())
    for name in synthetic_actions():
        assert report.normalized_recon_mse[name] < baseline.normalized_recon_mse[name]
    assert len(report.codebooks) == TINY_VQ.num_quantizers
    for usage in report.codebooks:
        assert 1.0 <= usage.perplexity <= TINY_VQ.codebook_size
        assert 0 <= usage.dead_codes < TINY_VQ.codebook_size


def test_vq_training_writes_tensorboard_scalars(trained_vq):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, _, log_dir = trained_vq
    events = EventAccumulator(str(log_dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    expected = {"tokenizer/recon_mse", "tokenizer/commit_loss", "tokenizer/perplexity_0", "tokenizer/dead_codes_1"}
    assert expected <= tags
    assert len(events.Scalars("tokenizer/recon_mse")) == TINY_TRAINING.steps // TINY_TRAINING.log_every


def test_vq_encode_decode_shapes(trained_vq):
    tokenizer, _, _ = trained_vq
    actions = synthetic_actions()["test/legs"][:10]
    codes = tokenizer.encode("test/legs", actions)
    assert codes.shape == (10, 2)
    assert codes.dtype == np.int64
    assert codes.min() >= 0
    assert codes.max() < TINY_VQ.codebook_size
    decoded = tokenizer.decode("test/legs", codes)
    assert decoded.shape == (10, 6)
    assert decoded.dtype == np.float32


def test_search_encoding_beats_greedy_codes(trained_vq):
    tokenizer, _, _ = trained_vq
    greedy = ResidualVQTokenizer(
        tokenizer.statistics, dataclasses.replace(TINY_VQ, search_encoding=False), tokenizer.model
    )
    searched = evaluate_tokenizer(tokenizer, synthetic_actions())
    baseline = evaluate_tokenizer(greedy, synthetic_actions())
    for name in synthetic_actions():
        assert searched.normalized_recon_mse[name] <= baseline.normalized_recon_mse[name] * (1 + 1e-5)
    # Among 32 x 32 combinations, search finds a nearer one than the greedy codes for some arm actions.
    assert searched.normalized_recon_mse["test/arm"] < baseline.normalized_recon_mse["test/arm"]


def test_search_reencodes_decoded_actions(trained_vq):
    tokenizer, _, _ = trained_vq
    codes = np.array([[0, 0], [3, 7], [31, 31], [12, 30]], dtype=np.int64)
    decoded = tokenizer.decode("test/legs", codes)
    again = tokenizer.decode("test/legs", tokenizer.encode("test/legs", decoded))
    np.testing.assert_allclose(again, decoded, atol=1e-5)


def test_decode_clips_to_data_range(trained_vq):
    tokenizer, _, _ = trained_vq
    all_codes = np.stack(np.meshgrid(np.arange(32), np.arange(32)), axis=-1).reshape(-1, 2)
    for name in synthetic_actions():
        statistics = tokenizer.statistics[name]
        decoded = tokenizer.decode(name, all_codes)
        assert np.all(decoded >= statistics.min)
        assert np.all(decoded <= statistics.max)


def test_search_cache_follows_weight_changes(trained_vq, tmp_path):
    tokenizer, _, _ = trained_vq
    tokenizer.save(tmp_path)
    changed = ResidualVQTokenizer.load(tmp_path)
    actions = synthetic_actions()["test/arm"]
    before = changed.encode("test/arm", actions)
    with torch.no_grad():
        for parameter in changed.model.decoder.parameters():
            parameter.mul_(-1.0)
    changed.clear_search_cache()
    assert not np.array_equal(changed.encode("test/arm", actions), before)


def test_vq_encode_does_not_change_codebooks(trained_vq):
    tokenizer, _, _ = trained_vq
    before = {name: tensor.clone() for name, tensor in tokenizer.model.state_dict().items()}
    tokenizer.encode("test/arm", synthetic_actions()["test/arm"])
    for name, tensor in tokenizer.model.state_dict().items():
        assert np.array_equal(before[name].numpy(), tensor.numpy()), name


def test_vq_save_load_bit_identical(trained_vq, tmp_path):
    tokenizer, _, _ = trained_vq
    tokenizer.save(tmp_path)
    loaded = load_continuous_tokenizer(tmp_path)
    assert isinstance(loaded, ResidualVQTokenizer)
    assert loaded.fingerprint() == tokenizer.fingerprint()
    for name, actions in synthetic_actions().items():
        codes = tokenizer.encode(name, actions)
        assert np.array_equal(loaded.encode(name, actions), codes)
        assert np.array_equal(loaded.decode(name, codes).view(np.uint32), tokenizer.decode(name, codes).view(np.uint32))
        for field in ("mean", "std", "min", "max"):
            saved = getattr(tokenizer.statistics[name], field)
            assert np.array_equal(getattr(loaded.statistics[name], field), saved)


def test_fingerprint_changes_with_weights(trained_vq, tmp_path):
    tokenizer, _, _ = trained_vq
    tokenizer.save(tmp_path)
    changed = ResidualVQTokenizer.load(tmp_path)
    first = next(iter(changed.model.decoder.parameters()))
    first.data[0, 0] += 1.0
    assert changed.fingerprint() != tokenizer.fingerprint()


def test_unknown_embodiment_names_both(trained_vq):
    tokenizer, _, _ = trained_vq
    with pytest.raises(ValueError, match=r"'test/wheels'.*\['test/arm', 'test/legs'\]"):
        tokenizer.encode("test/wheels", np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match="'test/wheels'"):
        tokenizer.decode("test/wheels", np.zeros((1, 2), np.int64))


def test_width_mismatch_names_both_widths(trained_vq):
    tokenizer, _, _ = trained_vq
    with pytest.raises(ValueError, match=r"width 4 do not match embodiment 'test/arm'.*width 3"):
        tokenizer.encode("test/arm", np.zeros((2, 4), np.float32))


def test_bad_codes_raise(trained_vq):
    tokenizer, _, _ = trained_vq
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        tokenizer.decode("test/arm", np.zeros((1, 3), np.int64))
    with pytest.raises(ValueError, match=r"\[0, 32\)"):
        tokenizer.decode("test/arm", np.array([[0, 32]]))
    with pytest.raises(ValueError, match="integers"):
        tokenizer.decode("test/arm", np.array([[0.0, 1.0]]))


def test_non_finite_actions_raise(trained_vq):
    tokenizer, _, _ = trained_vq
    actions = np.zeros((2, 3), np.float32)
    actions[1, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        tokenizer.encode("test/arm", actions)


def test_vq_rejects_too_wide_embodiment():
    wide = {"test/wide": np.zeros((4, 9), np.float32)}
    with pytest.raises(ValueError, match=r"'test/wide': 9.*padded_width=8"):
        train_residual_vq(wide, TINY_VQ, TINY_TRAINING, progress=False)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"padded_width": 0}, "padded_width must be at least 1, got 0"),
        ({"codebook_size": 1}, "codebook_size must be at least 2, got 1"),
        ({"ema_decay": 1.0}, r"ema_decay must be in \(0, 1\), got 1.0"),
        ({"normalization": "z-score"}, "normalization must be one of .*'z-score'"),
        ({"num_quantizers": 3, "codebook_size": 512}, r"512 \*\* 3 = 134217728; set search_encoding=False"),
    ],
)
def test_vq_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ResidualVQConfig(**kwargs)


def test_training_config_validation():
    with pytest.raises(ValueError, match="steps must be at least 1, got 0"):
        TrainingConfig(steps=0)
    with pytest.raises(ValueError, match="learning_rate must be positive, got -1"):
        TrainingConfig(learning_rate=-1)
    with pytest.raises(ValueError, match="huber_delta must be positive or None, got 0"):
        TrainingConfig(huber_delta=0)


def test_config_json_keeps_normalization_mode(tmp_path):
    config = ResidualVQConfig(normalization="min_max")
    assert config.normalization is NormalizationMode.MIN_MAX
    assert ResidualVQConfig.from_json(json.loads(json.dumps(config.to_json()))) == config


def test_binning_error_within_half_bin():
    actions = synthetic_actions()
    tokenizer = BinningTokenizer.fit(actions)
    assert tokenizer.num_codes == 256
    assert tokenizer.tokens_for("test/arm") == 3
    assert tokenizer.tokens_for("test/legs") == 6
    for name, array in actions.items():
        statistics = tokenizer.statistics[name]
        half_bin = (statistics.max - statistics.min) / 256 / 2
        decoded = tokenizer.decode(name, tokenizer.encode(name, array))
        assert np.all(np.abs(decoded - array) <= half_bin * 1.0001 + 1e-7)
        # Decoded values are bin centers, so encoding them again gives the same codes.
        assert np.array_equal(tokenizer.encode(name, decoded), tokenizer.encode(name, array))


def test_binning_clips_out_of_range_values():
    tokenizer = BinningTokenizer.fit({"test/one": np.array([[0.0], [1.0]], np.float32)})
    codes = tokenizer.encode("test/one", np.array([[-5.0], [5.0]], np.float32))
    assert codes.tolist() == [[0], [255]]


def test_binning_save_load(tmp_path):
    tokenizer = BinningTokenizer.fit(synthetic_actions())
    tokenizer.save(tmp_path)
    loaded = load_continuous_tokenizer(tmp_path)
    assert isinstance(loaded, BinningTokenizer)
    assert loaded.fingerprint() == tokenizer.fingerprint()
    actions = synthetic_actions()["test/legs"]
    assert np.array_equal(loaded.encode("test/legs", actions), tokenizer.encode("test/legs", actions))
    with pytest.raises(ValueError, match="'uniform_binning' tokenizer, not 'residual_vq'"):
        ResidualVQTokenizer.load(tmp_path)


def test_load_unknown_type_raises(tmp_path):
    (tmp_path / CONFIG_FILE).write_text(json.dumps({"tokenizer_type": "fast"}))
    with pytest.raises(ValueError, match="tokenizer type 'fast'; known types are"):
        load_continuous_tokenizer(tmp_path)
    with pytest.raises(FileNotFoundError, match="No config.json"):
        load_continuous_tokenizer(tmp_path / "missing")


def test_older_config_missing_fields_raises():
    document = ResidualVQConfig().to_json()
    del document["clip_to_data_range"]
    with pytest.raises(ValueError, match=r"missing the fields \['clip_to_data_range'\].*gea train-tokenizer"):
        ResidualVQConfig.from_json(document)


def test_embodiment_weights_scale_batch_shares():
    from gea_tokenizers.training import _BalancedSampler

    untrained = ResidualVQTokenizer(compute_statistics(synthetic_actions()), TINY_VQ)
    plain = _BalancedSampler(untrained, synthetic_actions(), seed=0, share_by_width=True)
    weighted = _BalancedSampler(untrained, synthetic_actions(), 0, True, {"test/arm": 4.0})
    names = ["test/arm", "test/legs"]
    # The widths are 3 and 6, so plain shares are 1:2.
    assert plain._shares(names, 90) == [30, 60]
    # The arm's weight of 4 makes its share 3 * 4 = 12 against 6.
    assert weighted._shares(names, 90) == [60, 30]


@pytest.mark.parametrize(
    "items, message",
    [(["test/arm=0"], "positive WEIGHT"), (["test/arm"], "NAME=WEIGHT"), (["test/arm=x"], "positive WEIGHT")],
)
def test_parse_weights_rejects_bad_items(items, message):
    with pytest.raises(ValueError, match=message):
        parse_embodiment_weights(items)
    assert parse_embodiment_weights(["mujoco/HalfCheetah-v5=4"]) == {"mujoco/HalfCheetah-v5": 4.0}


def test_weight_for_unknown_embodiment_raises():
    training = dataclasses.replace(TINY_TRAINING, embodiment_weights={"test/wings": 2.0})
    with pytest.raises(ValueError, match=r"\['test/wings'\].*\['test/arm', 'test/legs'\]"):
        train_residual_vq(synthetic_actions(), TINY_VQ, training, progress=False)
