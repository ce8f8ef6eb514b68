"""COCO-scale models (R50-FPN, 80 classes, 800x1333 input) with random weights, for timing.

RetinaNet and Mask R-CNN are detectron2's own model-zoo configs, RetinaMask is its shipped base
config (``retinamask_R50_FPN_P2.yaml`` for masks from P2-P5); all keep their R50-FPN and test
settings (score threshold 0.05, 100 detections) as published.
"""

import numpy as np
import torch
from detectron2 import model_zoo
from detectron2.config import CfgNode, get_cfg

import retinamask_d2
from retinamask_d2.model_zoo import get_config_file

MODELS = ("retinamask", "retinanet", "mask_rcnn", "retinamask_p2")
SHIPPED_CONFIGS = {
    "retinamask": "Base-RetinaMask.yaml",
    "retinamask_p2": "retinamask_R50_FPN_P2.yaml",
}
ZOO_CONFIGS = {
    "retinanet": "COCO-Detection/retinanet_R_50_FPN_1x.yaml",
    "mask_rcnn": "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml",
}


def coco_scale_cfg(model: str, device: str, test_topk_masks: int | None = None) -> CfgNode:
    """The R50-FPN config of ``model`` with random weights on ``device``.

    ``test_topk_masks`` overrides RetinaMask's ``MODEL.RETINAMASK.TEST_TOPK_MASKS``.
    """
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose from {MODELS}")
    cfg = get_cfg()
    if model in SHIPPED_CONFIGS:
        retinamask_d2.add_retinamask_config(cfg)
        cfg.merge_from_file(get_config_file(SHIPPED_CONFIGS[model]))
        if test_topk_masks is not None:
            cfg.MODEL.RETINAMASK.TEST_TOPK_MASKS = test_topk_masks
    else:
        if test_topk_masks is not None:
            raise ValueError("test_topk_masks applies to RetinaMask only")
        cfg.merge_from_file(model_zoo.get_config_file(ZOO_CONFIGS[model]))
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = device
    cfg.TEST.DETECTIONS_PER_IMAGE = 100
    cfg.INPUT.MIN_SIZE_TEST = 800
    cfg.INPUT.MAX_SIZE_TEST = 1333
    return cfg


def zero_box_regressors(model: torch.nn.Module) -> list[str]:
    """Zero the last layer of every box regressor, so that boxes are the anchors / proposals.

    With random weights and detectron2's FrozenBN (an identity at init), R50 features reach
    ~1e3 and the predicted deltas ~50: most boxes collapse to nothing and are dropped, so a
    random model returns a handful of detections. Zeroed regressors keep the cost of every layer
    (a zero weight is multiplied like any other) and give each model its full 100 detections,
    as a trained model on a busy image would. Returns the names of the zeroed layers.
    """
    zeroed = []
    for name, module in model.named_modules():
        if name.split(".")[-1] in ("bbox_pred", "anchor_deltas"):
            torch.nn.init.zeros_(module.weight)
            torch.nn.init.zeros_(module.bias)
            zeroed.append(name)
    if not zeroed:
        raise RuntimeError(f"found no box regressor to zero in {type(model).__name__}")
    return zeroed


def coco_scale_model_and_input(
    model_name: str, device: str, height: int, width: int, topk_masks: int | None = None
) -> tuple[torch.nn.Module, list[dict]]:
    """The COCO-scale ``model_name`` (seeded random weights, box regressors zeroed, eval mode)
    and one random uint8 ``height`` x ``width`` image as its input list."""
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    model = build_model(coco_scale_cfg(model_name, device, topk_masks)).eval()
    zero_box_regressors(model)
    pixels = np.random.default_rng(0).integers(0, 256, (3, height, width), dtype=np.uint8)
    return model, [{"image": torch.as_tensor(pixels).float(), "height": height, "width": width}]
