"""Non-maximum suppression on mask IoU: duplicates go, crossing objects stay.

Why: two long thin objects that cross have nearly the same box, so box NMS keeps only one of
them; their masks barely overlap, so mask IoU tells them apart, while two detections of one
object overlap in mask as much as in box.
"""

import torch
from torch import Tensor


def mask_iou_matrix(masks: Tensor) -> Tensor:
    """(N, N) IoU of (N, H, W) binary masks (an empty pair has IoU 0)."""
    flat = masks.flatten(1).float()
    intersection = flat @ flat.T
    area = flat.sum(1)
    union = area[:, None] + area[None, :] - intersection
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.zeros_like(union))


def mask_nms(masks: Tensor, scores: Tensor, classes: Tensor | None, iou_threshold: float) -> Tensor:
    """Indices of the detections kept, highest score first: greedy NMS on mask IoU.

    A detection is dropped when a kept, higher-scoring one of the same class (of any class with
    ``classes`` None) has mask IoU > ``iou_threshold`` with it. ``masks`` (N, H, W) are binary
    masks at one resolution, e.g. pasted at the output size.
    """
    order = torch.argsort(scores, descending=True)
    if len(order) == 0:
        return order
    overlap = mask_iou_matrix(masks[order]) > iou_threshold
    if classes is not None:
        sorted_classes = classes[order]
        overlap &= sorted_classes[:, None] == sorted_classes[None, :]
    suppressed = torch.zeros(len(order), dtype=torch.bool, device=order.device)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= overlap[i]
    return order[torch.as_tensor(keep, dtype=torch.long, device=order.device)]
