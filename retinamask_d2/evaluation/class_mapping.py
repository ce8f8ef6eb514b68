"""The classes of a model against those of the datasets it is evaluated on.

COCOEvaluator maps a prediction's class index to the test dataset's category by position. A test
json whose categories are not the model's (other names, another order, another count) would be
scored against the wrong categories, so it is refused, naming both lists; with
``MODEL.RETINAMASK.TEST_CLASSES_BY_NAME`` the predictions are instead mapped to the dataset's
classes by name (predictions of classes the dataset lacks are dropped).
"""

from __future__ import annotations

import torch
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from torch import nn

from retinamask_d2.data.classes import model_class_names, num_classes, num_classes_key
from retinamask_d2.data.coco_json import CocoJsonError


def check_test_classes(cfg: CfgNode) -> None:
    """Raise :class:`CocoJsonError` for a ``DATASETS.TEST`` set whose classes are not the
    model's, unless ``TEST_CLASSES_BY_NAME`` allows mapping them by name (and some match)."""
    for name in cfg.DATASETS.TEST:
        class_index_map(cfg, name)


def class_index_map(cfg: CfgNode, dataset_name: str) -> torch.Tensor | None:
    """None when the model's classes are the dataset's; else, with ``TEST_CLASSES_BY_NAME``, the
    dataset class index of each model class (-1: not in the dataset). Raises otherwise."""
    dataset_classes = MetadataCatalog.get(dataset_name).get("thing_classes")
    if dataset_classes is None:
        return None  # not known before loading (not a json registered by this project)
    model_classes = model_class_names(cfg)
    where = MetadataCatalog.get(dataset_name).get("json_file", dataset_name)
    if not model_classes:
        key, count = num_classes_key(cfg), num_classes(cfg)
        if count == len(dataset_classes):
            return None
        raise CocoJsonError(
            f"{where}: the test set has {len(dataset_classes)} classes {list(dataset_classes)}, "
            f"the model {count} ({key}; its config stores no class names)"
        )
    if list(dataset_classes) == model_classes:
        return None
    by_name = cfg.MODEL.RETINAMASK.TEST_CLASSES_BY_NAME
    shared = set(model_classes) & set(dataset_classes)
    if not by_name or not shared:
        hint = (
            "no class name is shared"
            if by_name
            else "evaluate on a json with the model's categories, or map the classes by name "
            "with MODEL.RETINAMASK.TEST_CLASSES_BY_NAME True"
        )
        raise CocoJsonError(
            f"{where}: the test set's classes {list(dataset_classes)} are not the model's "
            f"{model_classes} (names and order must match); {hint}"
        )
    position = {name: i for i, name in enumerate(dataset_classes)}
    return torch.tensor([position.get(name, -1) for name in model_classes])


class ClassRemap(nn.Module):
    """A model whose predicted class indices are mapped by ``index_map`` (model class ->
    dataset class, -1 dropped); evaluation only."""

    def __init__(self, model: nn.Module, index_map: torch.Tensor):
        super().__init__()
        self.model = model
        self.index_map = index_map

    def forward(self, batched_inputs: list[dict]) -> list[dict]:
        outputs = self.model(batched_inputs)
        for output in outputs:
            instances = output["instances"]
            mapped = self.index_map.to(instances.pred_classes.device)[instances.pred_classes]
            instances = instances[mapped >= 0]
            instances.pred_classes = mapped[mapped >= 0]
            output["instances"] = instances
        return outputs
