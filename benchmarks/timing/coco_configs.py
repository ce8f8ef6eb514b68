"""COCO-scale models (R50-FPN, 80 classes, 800x1333 input) with random weights, for timing.

RetinaNet and Mask R-CNN are detectron2's own model-zoo configs, RetinaMask its shipped configs:
``retinamask_R50_FPN_P3P5.yaml`` ("retinamask", the paper's mask levels) and
``retinamask_R50_FPN.yaml`` ("retinamask_p2", the default, masks from P2-P5); all keep their
R50-FPN and test settings (score threshold 0.05, 100 detections) as published.
"""

import math

import numpy as np
import torch
from detectron2 import model_zoo
from detectron2.config import CfgNode, get_cfg

import retinamask_d2
from retinamask_d2.model_zoo import get_config_file

MODELS = ("retinamask", "retinanet", "mask_rcnn", "retinamask_p2")
SHIPPED_CONFIGS = {
    "retinamask": "retinamask_R50_FPN_P3P5.yaml",
    "retinamask_p2": "retinamask_R50_FPN.yaml",
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


def set_score_candidates(model: torch.nn.Module, inputs: list[dict], count: int) -> int:
    """Shift the class logits' bias of a RetinaNet-family ``model`` so that ``count`` of its
    class scores on ``inputs`` pass its test score threshold; return how many pass.

    A random classifier puts about half of the ~16 M (anchor, class) scores of an 800x1333
    image above 0.05, so decoding them (a sort of millions of scores per level) dominates the
    time; a trained model passes a few thousand. Every class gets the same bias, as the prior
    initialisation gives it, so the logits keep their random order; only how many pass changes.
    """
    head, thresh = model.head, model.test_score_thresh
    with torch.no_grad():
        images = model.preprocess_image(inputs)
        features = model.backbone(images.tensor)
        logits = head([features[f] for f in model.head_in_features])[0]
        old_bias = head.cls_score.bias.clone()
        unbiased = torch.cat([(x - old_bias.view(1, -1, 1, 1)).flatten() for x in logits])
        kth = unbiased.topk(count).values[-1]
        # sigmoid(logit) > thresh <=> logit > log(thresh / (1 - thresh)); a margin of a few
        # float steps lets the count-th score pass and keeps the next ones out.
        target = math.log(thresh / (1 - thresh))
        margin = 8 * torch.finfo(torch.float32).eps * max(1.0, abs(float(kth)))
        head.cls_score.bias.fill_(target - float(kth) + margin)
        logits = head([features[f] for f in model.head_in_features])[0]
        return int(sum((x.sigmoid() > thresh).sum() for x in logits))


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
