"""Training: a detectron2 ``DefaultTrainer`` that runs on CPU processes and resumes exactly."""

from .hooks import ReproducibleSteps
from .trainer import Trainer

__all__ = ["ReproducibleSteps", "Trainer"]
