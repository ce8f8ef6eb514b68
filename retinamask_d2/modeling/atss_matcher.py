"""Adaptive training sample selection (ATSS, Zhang et al. 2020) for RetinaNet's anchors.

Why: with fixed IoU thresholds (0.4 / 0.5) an elongated object can have no anchor above them:
the best anchor of a horizontal 200 x 6 bar, among ratios up to 5, has IoU 0.24, so the bar
gets only the low-quality fallback match. ATSS sets each object's threshold from the IoUs of
its own candidate anchors (mean + standard deviation), so thin objects get real positives.

detectron2's ``RetinaNet.label_anchors`` hands its matcher only the IoU matrix; ATSS needs the
anchors' levels and centres, so it labels the anchors itself, returning what
``label_anchors`` returns.
"""

import torch
from detectron2.structures import Boxes, Instances, pairwise_iou
from torch import Tensor


def atss_match(
    gt_boxes: Boxes,
    anchors: list[Boxes],
    candidates_per_level: list[int],
    strides: list[int],
) -> tuple[Tensor, Tensor]:
    """Match anchors (all levels) to GT boxes by ATSS.

    Args:
        gt_boxes: the G GT boxes of an image (G >= 1).
        anchors: each level's anchors, finest first.
        candidates_per_level: how many anchors of each level, nearest to a GT's centre, are
            its candidates.
        strides: each level's stride: a candidate's centre must lie in its GT's box widened to
            at least the stride in each direction (a 6 px tall bar may contain no row of
            stride-8 anchor centres).

    Returns:
        ``matched_idxs`` (R,), the GT of each anchor, and ``labels`` (R,) int8, 1 for positive,
        0 for negative, as detectron2's ``Matcher`` returns them. An anchor that is positive
        for several GTs goes to the one it overlaps most.
    """
    all_anchors = Boxes.cat(anchors)
    iou = pairwise_iou(gt_boxes, all_anchors)  # (G, R)
    gt_centres = gt_boxes.get_centers()
    gt_sizes = gt_boxes.tensor[:, 2:] - gt_boxes.tensor[:, :2]
    candidates, inside = [], []
    start = 0
    for level, count, stride in zip(anchors, candidates_per_level, strides):
        centres = level.get_centers()
        distance = torch.cdist(gt_centres, centres)  # (G, Rl)
        nearest = distance.topk(min(count, len(level)), dim=1, largest=False).indices
        half = torch.clamp(gt_sizes, min=stride)[:, None, :] / 2
        offset = (centres[nearest] - gt_centres[:, None, :]).abs()
        inside.append((offset <= half).all(dim=2))
        candidates.append(nearest + start)
        start += len(level)
    candidates, inside = torch.cat(candidates, dim=1), torch.cat(inside, dim=1)
    candidate_iou = iou.gather(1, candidates)
    threshold = candidate_iou.mean(1) + candidate_iou.std(1)
    positive = (candidate_iou >= threshold[:, None]) & inside
    gt_index = torch.arange(len(gt_boxes), device=iou.device)[:, None].expand_as(candidates)
    allowed = torch.full_like(iou, -1.0)
    allowed[gt_index[positive], candidates[positive]] = iou[
        gt_index[positive], candidates[positive]
    ]
    best, matched_idxs = allowed.max(dim=0)
    labels = (best >= 0).to(torch.int8)
    return matched_idxs, labels


def atss_label_anchors(
    anchors: list[Boxes],
    gt_instances: list[Instances],
    candidates_per_level: list[int],
    strides: list[int],
    num_classes: int,
) -> tuple[list[Tensor], list[Tensor]]:
    """``RetinaNet.label_anchors`` with :func:`atss_match` as the matcher: per image, each
    anchor's class (``num_classes`` for background) and matched GT box."""
    num_anchors = sum(len(a) for a in anchors)
    gt_labels, matched_gt_boxes = [], []
    for gt in gt_instances:
        if len(gt) == 0:
            device = anchors[0].tensor.device
            gt_labels.append(torch.full((num_anchors,), num_classes, device=device))
            matched_gt_boxes.append(torch.zeros((num_anchors, 4), device=device))
            continue
        matched_idxs, labels = atss_match(gt.gt_boxes, anchors, candidates_per_level, strides)
        classes = gt.gt_classes[matched_idxs].clone()
        classes[labels == 0] = num_classes
        gt_labels.append(classes)
        matched_gt_boxes.append(gt.gt_boxes.tensor[matched_idxs])
    return gt_labels, matched_gt_boxes
