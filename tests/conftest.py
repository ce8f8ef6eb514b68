"""Fixtures shared by several test modules."""

from pathlib import Path

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer

from tests.common import build_tiny_model, get_tiny_cfg


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """config.yaml (weights not named, as train_net.py dumps it) and model_final.pth of a tiny
    RetinaMask with random weights; its test set's metadata is COCO's (ids 1, 2, 3 first)."""
    torch.manual_seed(0)
    cfg = get_tiny_cfg(num_classes=3)
    cfg.TEST.DETECTIONS_PER_IMAGE = 5
    cfg.DATASETS.TEST = ("coco_2017_val",)
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 64, 96  # the test images' own size
    folder = tmp_path_factory.mktemp("model")
    DetectionCheckpointer(build_tiny_model(cfg), save_dir=str(folder)).save("model_final")
    (folder / "config.yaml").write_text(cfg.dump())
    return folder
