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


def mask_nms(
    masks: Tensor,
    scores: Tensor,
    classes: Tensor | None,
    iou_threshold: float,
    box_iou: Tensor | None = None,
    box_threshold: float = 0.5,
) -> Tensor:
    """Indices of the detections kept, highest score first: greedy NMS on mask IoU.

    A detection is dropped when a kept, higher-scoring one of the same class (of any class with
    ``classes`` None) has mask IoU > ``iou_threshold`` with it. ``masks`` (N, H, W) are binary
    masks at one resolution, e.g. pasted at the output size. An empty mask tells nothing about
    its object: where either mask of a pair is empty and ``box_iou`` (N, N) is given, the pair
    is compared by box IoU > ``box_threshold`` instead, as box NMS would.
    """
    order = torch.argsort(scores, descending=True)
    if len(order) == 0:
        return order
    masks = masks[order]
    overlap = mask_iou_matrix(masks) > iou_threshold
    if box_iou is not None:
        empty = ~masks.flatten(1).any(dim=1)
        either_empty = empty[:, None] | empty[None, :]
        by_box = box_iou[order][:, order] > box_threshold
        overlap = torch.where(either_empty, by_box, overlap)
    if classes is not None:
        sorted_classes = classes[order]
        overlap &= sorted_classes[:, None] == sorted_classes[None, :]
    overlap.fill_diagonal_(False)
    suppressed = torch.zeros(len(order), dtype=torch.bool, device=order.device)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= overlap[i]
    return order[torch.as_tensor(keep, dtype=torch.long, device=order.device)]
