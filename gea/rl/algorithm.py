"""Build the RLlib PPO configuration of a GEA RL run from typed settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from gea.rl.callbacks import RolloutMetricsCallback
from gea.rl.env import GeaEnvConfig, action_space, observation_space, register_gea_env
from gea.rl.expert import ExpertBatchSource
from gea.rl.learner import (
    EXPERT_SOURCE_FACTORY_KEY,
    NORMALIZE_RETURNS_KEY,
    SFT_BATCH_SIZE_KEY,
    SFT_COEFF_KEY,
    GeaPPOTorchLearner,
)
from gea.rl.module import ENVS_KEY, NUM_CAMERAS_KEY, POLICY_FACTORY_KEY, GeaTorchRLModule


@dataclass
class PPOSettings:
    """The scale and optimization knobs of a PPO run.

    Attributes:
        num_env_runners: simulator worker processes; runner ``k`` hosts embodiment
            ``envs[(k - 1) % len(envs)]``, so use at least one per embodiment.
        num_envs_per_env_runner: sub-environments stepped together by each runner.
        num_learners: learner processes; 0 trains in the driver process.
        num_gpus_per_learner: GPUs per learner (fractions share a GPU).
        rollout_fragment_length: steps each sub-environment collects per sample call.
        train_batch_size_per_learner: environment steps per update on each learner.
        minibatch_size: steps per gradient step.
        num_epochs: passes over each train batch.
        lr: Adam learning rate.
        clip_param: PPO's ratio clip epsilon.
        vf_clip_param: value loss clip, in normalized-return units squared.
        vf_loss_coeff: weight of the value loss.
        entropy_coeff: weight of the normalized-entropy bonus.
        gamma: discount factor.
        lambda_: GAE lambda.
        sft_coeff: weight of the SFT loss on expert batches; 0 disables it.
        sft_batch_size: expert steps per SFT loss evaluation.
        normalize_returns: whether value targets use per-embodiment running mean/std.
        use_kl_loss: whether to add RLlib's adaptive KL penalty.
        max_num_env_runner_restarts: restarts of crashed env runners before the run fails.
        env_runner_restart_delay_s: seconds between an env runner's crash and its restart.
        seed: seed of RLlib and the expert sampler.
    """

    num_env_runners: int = 1
    num_envs_per_env_runner: int = 1
    num_learners: int = 0
    num_gpus_per_learner: float = 0.0
    rollout_fragment_length: int = 64
    train_batch_size_per_learner: int = 256
    minibatch_size: int = 64
    num_epochs: int = 2
    lr: float = 1e-5
    clip_param: float = 0.2
    vf_clip_param: float = 10.0
    vf_loss_coeff: float = 0.5
    entropy_coeff: float = 0.01
    gamma: float = 0.99
    lambda_: float = 0.95
    sft_coeff: float = 0.1
    sft_batch_size: int = 32
    normalize_returns: bool = True
    use_kl_loss: bool = False
    max_num_env_runner_restarts: int = 100
    env_runner_restart_delay_s: float = 60.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("num_env_runners", "num_learners", "max_num_env_runner_restarts"):
            if getattr(self, name) < 0:
                raise ValueError(f"PPOSettings.{name} must be non-negative, got {getattr(self, name)}.")
        for name in (
            "num_envs_per_env_runner",
            "rollout_fragment_length",
            "train_batch_size_per_learner",
            "minibatch_size",
            "num_epochs",
            "sft_batch_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"PPOSettings.{name} must be at least 1, got {getattr(self, name)}.")
        if self.minibatch_size > self.train_batch_size_per_learner:
            raise ValueError(
                f"minibatch_size {self.minibatch_size} exceeds train_batch_size_per_learner "
                f"{self.train_batch_size_per_learner}; lower it."
            )
        for name in ("num_gpus_per_learner", "env_runner_restart_delay_s", "lr", "vf_loss_coeff", "entropy_coeff", "sft_coeff"):
            if getattr(self, name) < 0:
                raise ValueError(f"PPOSettings.{name} must be non-negative, got {getattr(self, name)}.")
        for name in ("clip_param", "vf_clip_param"):
            if getattr(self, name) <= 0:
                raise ValueError(f"PPOSettings.{name} must be positive, got {getattr(self, name)}.")
        for name in ("gamma", "lambda_"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"PPOSettings.{name} must lie in [0, 1], got {getattr(self, name)}.")


def build_ppo_config(
    settings: PPOSettings,
    env_config: GeaEnvConfig,
    policy_factory: Callable[[], Any],
    expert_source_factory: Optional[Callable[[], ExpertBatchSource]] = None,
) -> PPOConfig:
    """Build the PPO configuration: GEA env, module, learner, metrics and fault tolerance.

    `policy_factory` and `expert_source_factory` run on every env runner and learner,
    so they must be picklable and build everything (weights included) from local files.
    """
    if settings.sft_coeff > 0 and expert_source_factory is None:
        raise ValueError(
            f"PPOSettings.sft_coeff is {settings.sft_coeff} but no expert_source_factory was given; "
            "pass one or set sft_coeff=0."
        )
    if settings.num_env_runners == 0 and len(env_config.envs) > 1:
        raise ValueError(
            f"{len(env_config.envs)} embodiments need at least as many env runners, got num_env_runners=0."
        )
    detokenizer = env_config.detokenizer_factory()
    env_name = register_gea_env()
    module_spec = RLModuleSpec(
        module_class=GeaTorchRLModule,
        model_config={
            POLICY_FACTORY_KEY: policy_factory,
            ENVS_KEY: env_config.envs,
            NUM_CAMERAS_KEY: env_config.num_cameras,
        },
    )
    return (
        PPOConfig()
        .environment(
            env=env_name,
            env_config={"gea": env_config},
            observation_space=observation_space(env_config, detokenizer),
            action_space=action_space(detokenizer),
        )
        .env_runners(
            num_env_runners=settings.num_env_runners,
            num_envs_per_env_runner=settings.num_envs_per_env_runner,
            rollout_fragment_length=settings.rollout_fragment_length,
        )
        .learners(
            num_learners=settings.num_learners,
            num_gpus_per_learner=settings.num_gpus_per_learner,
            learner_class=GeaPPOTorchLearner,
            learner_config_dict={
                SFT_COEFF_KEY: settings.sft_coeff,
                SFT_BATCH_SIZE_KEY: settings.sft_batch_size,
                EXPERT_SOURCE_FACTORY_KEY: expert_source_factory,
                NORMALIZE_RETURNS_KEY: settings.normalize_returns,
            },
        )
        .training(
            train_batch_size_per_learner=settings.train_batch_size_per_learner,
            minibatch_size=settings.minibatch_size,
            num_epochs=settings.num_epochs,
            lr=settings.lr,
            clip_param=settings.clip_param,
            vf_clip_param=settings.vf_clip_param,
            vf_loss_coeff=settings.vf_loss_coeff,
            entropy_coeff=settings.entropy_coeff,
            gamma=settings.gamma,
            lambda_=settings.lambda_,
            use_kl_loss=settings.use_kl_loss,
        )
        .rl_module(rl_module_spec=module_spec)
        .callbacks(RolloutMetricsCallback)
        .fault_tolerance(
            restart_failed_env_runners=True,
            max_num_env_runner_restarts=settings.max_num_env_runner_restarts,
            delay_between_env_runner_restarts_s=settings.env_runner_restart_delay_s,
        )
        .debugging(seed=settings.seed)
    )
