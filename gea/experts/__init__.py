"""Training and measuring the experts that demonstrate embodiments."""

from gea.experts.sb3 import (
    ExpertEvaluation,
    ExpertTrainingConfig,
    SB3TrainableAdapter,
    evaluate_expert,
    train_expert,
    trainable_embodiments,
)

__all__ = [
    "ExpertEvaluation",
    "ExpertTrainingConfig",
    "SB3TrainableAdapter",
    "evaluate_expert",
    "train_expert",
    "trainable_embodiments",
]
