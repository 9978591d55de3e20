"""The guide's worked example, executed as written and held to the adapter contract."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from adapter_contract import check_prompt, check_reset_and_step, expert_successes, first_frame

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "adding-an-embodiment.md"


@pytest.fixture(scope="module")
def example_adapter():
    from gea_envs import ADAPTERS

    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)
    assert len(blocks) == 1, "the guide should contain exactly one Python example"
    namespace: dict = {}
    exec(compile(blocks[0], str(GUIDE), "exec"), namespace)
    yield ADAPTERS.get("minigrid/Empty-6x6")
    ADAPTERS._factories.pop("minigrid/Empty-6x6")


def test_guide_example_passes_contract(example_adapter):
    check_prompt(example_adapter)
    check_reset_and_step(example_adapter)
    assert (first_frame(example_adapter, 3) == first_frame(example_adapter, 3)).all()


def test_guide_example_expert_always_succeeds(example_adapter):
    assert expert_successes(example_adapter, list(range(5))) == 5
