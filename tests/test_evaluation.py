"""The evaluation harness: statistics, batching and report outputs."""

from __future__ import annotations

import json

import pytest

from gea.evaluation.agents import AgentAction, EvaluationAgent, ExpertAgent
from gea.evaluation.harness import EvaluationConfig, evaluate
from gea.evaluation.report import markdown_table, write_report
from gea.evaluation.seeds import LIST_LENGTH, eval_seeds
from gea.evaluation.stats import EnvironmentSummary, episode_weighted_average, macro_average, wilson_interval


def test_wilson_interval_known_values():
    # Reference values from the closed-form Wilson score interval with z = 1.96.
    low, high = wilson_interval(0, 10)
    assert low == 0.0
    assert high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4)
    assert high == pytest.approx(0.9433, abs=1e-4)


def test_wilson_interval_rejects_bad_counts():
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)
    with pytest.raises(ValueError, match="trials"):
        wilson_interval(0, 0)


def test_averages_differ_when_episode_counts_differ():
    summaries = [
        EnvironmentSummary("a", 10, 1.0, 0, 1, 1, 0, 1),
        EnvironmentSummary("b", 30, 0.0, 0, 1, 1, 0, 1),
    ]
    assert macro_average(summaries) == 0.5
    assert episode_weighted_average(summaries) == 0.25


def test_eval_seeds_are_versioned_and_disjoint_from_collection():
    seeds = eval_seeds(5)
    assert seeds == eval_seeds(5, "v1")
    assert min(seeds) >= 1_000_000
    with pytest.raises(ValueError, match="known versions"):
        eval_seeds(5, "v0")


def test_seed_lists_are_disjoint():
    reported = set(eval_seeds(LIST_LENGTH, "v1"))
    development = eval_seeds(1000, "dev1")
    assert not reported.intersection(development)
    with pytest.raises(ValueError, match="between 1 and"):
        eval_seeds(LIST_LENGTH + 1, "v1")


class AlwaysLeft(EvaluationAgent):
    def act(self, steps):
        return [AgentAction(0, valid=False) for _ in steps]


def test_harness_expert_and_failing_agent(registered_line_world):
    config = EvaluationConfig(envs=("test/line-world",), episodes=6, batch_size=4, videos_per_env=1)

    expert = evaluate(ExpertAgent, config, show_progress=False)
    failing = evaluate(AlwaysLeft, config, show_progress=False)

    assert expert.summaries[0].success_rate == 1.0
    assert expert.summaries[0].decode_valid_rate == 1.0
    assert [e.seed for e in expert.episodes] == eval_seeds(6)
    assert failing.summaries[0].success_rate == 0.0
    assert failing.summaries[0].mean_length == registered_line_world.max_episode_steps
    assert failing.summaries[0].decode_valid_rate == 0.0


def test_report_writes_every_output(tmp_path, registered_line_world):
    config = EvaluationConfig(envs=("test/line-world",), episodes=3, videos_per_env=1)
    result = evaluate(ExpertAgent, config, show_progress=False)

    paths = write_report(result, tmp_path, manifest={"seeds": eval_seeds(3)})

    assert json.loads(paths["json"].read_text())["macro_success_rate"] == 1.0
    assert "episode-weighted average" in markdown_table(result)
    assert paths["chart"].stat().st_size > 0
    assert len(list(paths["videos"].glob("*.gif"))) == 1
    assert any(paths["tensorboard"].iterdir())
    assert json.loads(paths["manifest"].read_text())["seeds"] == eval_seeds(3)


def test_config_rejects_empty_envs():
    with pytest.raises(ValueError, match="gea envs"):
        EvaluationConfig(envs=())


@pytest.mark.parametrize("name", ["babyai/GoToLocal", "metaworld/reach-v3"])
def test_harness_reproduces_direct_expert_runs(name):
    from gea_envs import get_adapter
    from gea_envs.rollout import run_expert_episode

    config = EvaluationConfig(envs=(name,), episodes=4, workers=2, batch_size=2, videos_per_env=0, image_size=32)
    result = evaluate(ExpertAgent, config, show_progress=False)

    adapter = get_adapter(name)
    direct = [run_expert_episode(adapter, seed, 32, record=False) for seed in eval_seeds(4)]
    assert [e.seed for e in result.episodes] == eval_seeds(4)
    assert [e.success for e in result.episodes] == [d.success for d in direct]
    assert [e.length for e in result.episodes] == [d.length for d in direct]


@pytest.mark.parametrize("temperature", [-0.5, float("nan")])
def test_policy_agent_rejects_bad_temperature(tmp_path, temperature):
    from gea.evaluation.policy_agent import policy_agent_factory

    with pytest.raises(ValueError, match="temperature must be a number >= 0"):
        policy_agent_factory(tmp_path, greedy=False, temperature=temperature)


def test_policy_agent_prompt_matches_act(tmp_path):
    from ppo_checkpoint import BABYAI, IMAGE_SIZE, make_sft_checkpoint

    from gea.evaluation.agents import StepInput
    from gea.evaluation.policy_agent import PolicyAgent
    from gea.training.bundle import load_bundle
    from gea_envs import get_adapter

    agent = PolicyAgent(load_bundle(make_sft_checkpoint(tmp_path)), seed=0)
    acted_inputs = []
    original_act = agent.policy.act

    def recording_act(inputs, *args, **kwargs):
        acted_inputs.extend(inputs)
        return original_act(inputs, *args, **kwargs)

    agent.policy.act = recording_act
    adapter = get_adapter(BABYAI)
    env = adapter.make_env(0, IMAGE_SIZE)
    raw_obs, info = env.reset(seed=0)
    for step_index in range(4):
        step = StepInput(0, adapter, env, raw_obs, info, adapter.observe(env, raw_obs, info))
        if step_index == 0:
            agent.begin_episode(step)
        expected = agent.prompt(step)
        assert agent.prompt(step).input_ids == expected.input_ids  # prompt() leaves the history alone
        action = agent.act([step])[0].action
        assert acted_inputs[-1].input_ids == expected.input_ids
        raw_obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    env.close()
