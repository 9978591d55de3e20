"""The CPU denormal setting used by the SFT and PPO trainers."""

import pytest
import torch

from gea.training.numerics import flush_denormals_on_cpu

DENORMAL = 1e-40  # below float32's smallest normal value, 1.18e-38


@pytest.fixture
def denormals_kept():
    """Start from torch's default, which keeps denormals, because an SFT test earlier in the process may flush them."""
    torch.set_flush_denormal(False)
    yield
    torch.set_flush_denormal(False)


def test_cpu_flushes_denormals(denormals_kept):
    assert torch.tensor([DENORMAL]).item() != 0.0

    flush_denormals_on_cpu(torch.device("cpu"))

    assert torch.tensor([DENORMAL]).item() == 0.0
    assert torch.tensor([1e-37]).item() != 0.0


def test_other_devices_leave_setting(denormals_kept):
    flush_denormals_on_cpu(torch.device("cuda"))

    assert torch.tensor([DENORMAL]).item() != 0.0
