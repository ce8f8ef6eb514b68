"""A non-finite loss stops training with an error that names the loss, before the weights change."""

import re

import pytest
import torch
from detectron2.utils.events import get_event_storage

from retinamask_d2.data.synthetic import generate
from retinamask_d2.data.user_datasets import setup_datasets
from retinamask_d2.engine import Trainer
from tests.common import get_tiny_cfg


def _trainer(tmp_path, dataset_name: str) -> Trainer:
    """A trainer of the tiny model on 4 synthetic images, 5 iterations, no evaluation."""
    generate(tmp_path, {"train": 4}, image_size=64, seed=0)
    cfg = get_tiny_cfg(num_classes=4)
    cfg.DATASETS.COCO_JSON = (
        (dataset_name, str(tmp_path / "train.json"), str(tmp_path / "train")),
    )
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (dataset_name,), ()
    cfg.SOLVER.MAX_ITER = 5
    cfg.OUTPUT_DIR = str(tmp_path / "out")
    setup_datasets(cfg)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    return trainer


def test_nan_loss_stops_training_naming_the_loss_and_iteration(tmp_path):
    trainer = _trainer(tmp_path, "nan_train")

    def poison_mask_loss_from_iteration_2(module, inputs, losses):
        if get_event_storage().iter >= 2:
            return {**losses, "loss_mask": losses["loss_mask"] * float("nan")}
        return losses

    trainer.model.register_forward_hook(poison_mask_loss_from_iteration_2)
    with pytest.raises(FloatingPointError) as error:
        trainer.train()
    # detectron2's check; with NumPy 2 the values print as np.float64(...).
    message = str(error.value)
    assert "Loss became infinite or NaN at iteration=2" in message
    assert re.search(r"'loss_mask': (np\.float64\()?nan", message)
    assert re.search(r"'loss_cls': (np\.float64\()?\d", message)  # finite ones shown finite
    assert trainer.iter == 2
    # The error comes after backward but before the optimizer step: the weights stay usable.
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_non_finite_box_deltas_stop_like_a_non_finite_loss(tmp_path):
    trainer = _trainer(tmp_path, "nan_dx")

    def poison_deltas_from_iteration_1(module, inputs, outputs):
        logits, deltas = outputs
        if get_event_storage().iter >= 1:
            deltas = [d * float("inf") for d in deltas]  # inf * 0 gives NaN too
        return logits, deltas

    trainer.model.head.register_forward_hook(poison_deltas_from_iteration_1)
    with pytest.raises(FloatingPointError) as error:
        trainer.train()
    message = str(error.value)
    assert "Loss became infinite or NaN at iteration=1" in message
    assert "non-finite box deltas" in message and "'loss_box_reg': nan" in message
    assert trainer.iter == 1
