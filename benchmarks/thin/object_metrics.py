"""How well each thin object is found and cut out, by its angle from the nearest image axis.

Per thin GT object: whether it is found (a detection of its class with box IoU >= 0.5, any
score), and for the detection with the highest box IoU: mask IoU; centreline recall and
precision (clDice's topology sensitivity and precision: the share of the GT's skeleton inside the
predicted mask, and of the predicted mask's skeleton inside the GT); the width and angle error of
the minimum-area rectangle of the predicted pixels against the GT's; and the number of 8-connected
fragments of the predicted mask (1 when it is whole). :func:`by_angle` averages them per bin.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pycocotools.mask as mask_util
import torch
from skimage.morphology import skeletonize

from retinamask_d2.modeling.oriented_rois import fit_frames, fit_polygon_rectangle

ANGLE_BINS = ((0.0, 10.0), (10.0, 30.0), (30.0, 45.0))  # degrees from the nearest axis
FOUND_IOU = 0.5
SHAPE_KEYS = ("mask_iou", "centreline_recall", "centreline_precision", "width_error", "angle_error")


def axis_angle(annotation: dict, height: int, width: int) -> float:
    """Degrees between the long side of the rectangle fitted to the GT's mask and the nearest
    image axis (0-45): exactly from polygons, from the pixels of an RLE mask."""
    segmentation = annotation["segmentation"]
    if isinstance(segmentation, list):
        theta = fit_polygon_rectangle([np.asarray(p, dtype=np.float64) for p in segmentation])[4]
    else:
        mask = torch.from_numpy(mask_util.decode(to_rle(segmentation, height, width))).bool()
        box = torch.tensor([[0.0, 0.0, float(width), float(height)]])
        frames, _ = fit_frames(mask[None], box, min_elongation=1.0)
        theta = float(frames[0, 4])
    degrees = abs(math.degrees(theta)) % 90.0
    return min(degrees, 90.0 - degrees)


def to_rle(segmentation, height: int, width: int) -> dict:
    """A COCO segmentation (polygons, uncompressed or compressed RLE) as compressed RLE."""
    if isinstance(segmentation, list):
        return mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
    if isinstance(segmentation["counts"], list):
        return mask_util.frPyObjects(segmentation, height, width)
    return segmentation


def min_area_rectangle(mask: np.ndarray) -> tuple[float, float, float] | None:
    """(long side, short side, angle of the long side in degrees, [0, 180)) of the mask's
    minimum-area rectangle; None for an empty mask.

    The rectangle is that of the pixel centres; as in the upright cut-outs
    (``retinamask_d2.visualization.cutouts``), an axis-aligned one gets a pixel on each side
    (its centres lie half a pixel inside its edges), a tilted one not (its staircase's centres
    lie about on them), so that a ``w``-px-wide bar measures ``w`` at any angle."""
    points = cv2.findNonZero(mask.astype(np.uint8))
    if points is None:
        return None
    corners = cv2.boxPoints(cv2.minAreaRect(points))
    edges = [corners[1] - corners[0], corners[2] - corners[1]]
    lengths = [float(np.hypot(*e)) for e in edges]
    long_edge = edges[int(np.argmax(lengths))]
    angle = math.degrees(math.atan2(float(long_edge[1]), float(long_edge[0]))) % 180.0
    edge = 1.0 if angle % 90.0 == 0.0 else 0.0
    return max(lengths) + edge, min(lengths) + edge, angle


def _fraction_inside(skeleton: np.ndarray, mask: np.ndarray) -> float | None:
    count = int(skeleton.sum())
    return float((skeleton & mask).sum()) / count if count else None


def shape_errors(pred: np.ndarray, gt: np.ndarray) -> dict:
    """The cut-out measures of one predicted mask against its GT mask (bool arrays)."""
    union = int((pred | gt).sum())
    row = {
        "mask_iou": float((pred & gt).sum()) / union if union else 0.0,
        "centreline_recall": _fraction_inside(skeletonize(gt), pred),
        "centreline_precision": _fraction_inside(skeletonize(pred), gt),
        "fragments": int(cv2.connectedComponents(pred.astype(np.uint8), connectivity=8)[0] - 1),
        "width_error": None,
        "angle_error": None,
    }
    gt_rect, pred_rect = min_area_rectangle(gt), min_area_rectangle(pred)
    if gt_rect is not None and pred_rect is not None:
        row["width_error"] = abs(pred_rect[1] - gt_rect[1])
        turn = abs(pred_rect[2] - gt_rect[2]) % 180.0
        row["angle_error"] = min(turn, 180.0 - turn)
    return row


def per_object(dataset: dict, results: list[dict], thin_ids: set[int]) -> list[dict]:
    """One row per GT of a class in ``thin_ids``: its class, angle, whether it is found, and
    (found, with masks in ``results``) :func:`shape_errors` of the best-box detection."""
    by_image: dict[int, list[dict]] = {}
    for r in results:
        by_image.setdefault(r["image_id"], []).append(r)
    sizes = {i["id"]: (i["height"], i["width"]) for i in dataset["images"]}
    rows = []
    for ann in dataset["annotations"]:
        if ann["category_id"] not in thin_ids:
            continue
        h, w = sizes[ann["image_id"]]
        row = {"category_id": ann["category_id"], "angle": axis_angle(ann, h, w), "found": False}
        same = [
            r for r in by_image.get(ann["image_id"], []) if r["category_id"] == ann["category_id"]
        ]
        best = best_box_match([r["bbox"] for r in same], ann["bbox"])
        if best is not None:
            row["found"] = True
            if "segmentation" in same[best]:
                gt = mask_util.decode(to_rle(ann["segmentation"], h, w)).astype(bool)
                pred = mask_util.decode(same[best]["segmentation"]).astype(bool)
                row.update(shape_errors(pred, gt))
        rows.append(row)
    return rows


def best_box_match(boxes_xywh: list, gt_bbox: list) -> int | None:
    """Index of the box (XYWH) with the highest IoU with ``gt_bbox``, if it reaches FOUND_IOU."""
    if len(boxes_xywh) == 0:
        return None
    iou = mask_util.iou(list(boxes_xywh), [gt_bbox], [0])[:, 0]
    best = int(np.argmax(iou))
    return best if iou[best] >= FOUND_IOU else None


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def summarise(rows: list[dict]) -> dict:
    """Count, recall, and the mean of each cut-out measure over the found objects (fragments:
    the mean count and the share cut into more than one piece)."""
    found = [r for r in rows if r["found"]]
    masked = [r for r in found if "mask_iou" in r]
    summary = {
        "objects": len(rows),
        "recall": len(found) / len(rows) if rows else None,
        **{key: _mean([r[key] for r in masked]) for key in SHAPE_KEYS},
        "fragments": _mean([r["fragments"] for r in masked]),
        "split": _mean([float(r["fragments"] > 1) for r in masked]),
    }
    return summary


def by_angle(rows: list[dict]) -> dict:
    """:func:`summarise` per angle bin and over all objects ("all")."""
    table = {}
    for lo, hi in ANGLE_BINS:
        inside = [r for r in rows if lo <= r["angle"] < hi or (hi == 45.0 and r["angle"] == 45.0)]
        table[f"{lo:g}-{hi:g}"] = summarise(inside)
    table["all"] = summarise(rows)
    return table
