"""A Dice term for the mask loss, which thin objects need next to per-pixel cross-entropy.

Why: a thin object covers a few percent of its RoI, so per-pixel binary cross-entropy is
dominated by background pixels and is small even when the mask misses half the object's width
or breaks it into pieces. Dice is a ratio of overlap to size per RoI: it weighs the object's own
pixels the same whatever share of the box they fill (as in CondInst and V-Net).
"""

import torch
from detectron2.structures import Instances
from torch import Tensor


def mask_dice_loss(pred_mask_logits: Tensor, instances: list[Instances]) -> Tensor:
    """Mean over RoIs of ``1 - Dice`` between the GT class's mask probabilities and the GT mask
    cropped to the RoI, with the targets made as detectron2's ``mask_rcnn_loss`` makes them.

    Args:
        pred_mask_logits: (R, C, M, M) logits of a class-specific head, (R, 1, M, M) of a
            class-agnostic one; R is the number of RoIs in ``instances``.
        instances: per image, the training RoIs with ``proposal_boxes``, ``gt_classes`` and
            ``gt_masks``.
    """
    side = pred_mask_logits.size(2)
    targets, classes = [], []
    for rois in instances:
        if len(rois) == 0:
            continue
        boxes = rois.proposal_boxes.tensor
        targets.append(rois.gt_masks.crop_and_resize(boxes, side).to(pred_mask_logits.device))
        classes.append(rois.gt_classes)
    if not targets:
        return pred_mask_logits.sum() * 0
    target = torch.cat(targets).to(pred_mask_logits.dtype).flatten(1)
    index = torch.arange(len(target), device=pred_mask_logits.device)
    channel = torch.cat(classes) if pred_mask_logits.size(1) > 1 else torch.zeros_like(index)
    prob = pred_mask_logits[index, channel].sigmoid().flatten(1)
    dice = (2 * (prob * target).sum(1) + 1) / (prob.sum(1) + target.sum(1) + 1)
    return (1 - dice).mean()
