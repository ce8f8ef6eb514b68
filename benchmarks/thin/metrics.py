"""What the thin-objects benchmark measures besides COCO AP: per-class and thin-object AP, and
where thin objects are lost (box recall, mask IoU of matched detections, duplicates, confusions).

Thin-object AP is pycocotools' own AP on a GT subset, by its area-range rule: every GT that is
not thin gets an area outside a "thin" range, so COCOeval ignores it there (a detection matched
to it counts neither as true nor as false positive; an unmatched detection is a false positive),
while the "all" range, which contains that area too, gives the ordinary AP. One COCOeval run
thus gives both, with COCO's matching exactly. An instance is thin when its mask fills less than
``THIN_FILL`` of its box.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Callable

import numpy as np
import pycocotools.mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

THIN_FILL = 0.25
NOT_THIN_AREA = 1e9  # outside THIN_RANGE, inside ALL_RANGE
ALL_RANGE, THIN_RANGE = [0.0, 1e10], [0.0, 1e8]
CONFIDENT = 0.3  # score a detection needs to count as a duplicate or a confusion


def is_thin(annotation: dict) -> bool:
    """Whether the GT's mask fills less than THIN_FILL of its box."""
    _, _, w, h = annotation["bbox"]
    return annotation["area"] < THIN_FILL * max(w * h, 1.0)


def _thin_marked(gt: dict, thin: Callable[[dict], bool]) -> dict:
    marked = copy.deepcopy(gt)
    for ann in marked["annotations"]:
        if not thin(ann):
            ann["area"] = NOT_THIN_AREA
    return marked


def _coco(dataset: dict) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def coco_ap(
    gt: dict, detections: list[dict], iou_type: str, thin: Callable[[dict], bool] = is_thin
) -> dict:
    """AP, AP50 and per-class AP over all GT and over the GT that ``thin`` selects ("thin_*"),
    in percent.

    ``gt`` is the COCO dataset dict, ``detections`` COCO results ("bbox" or "segmentation")."""
    names = {c["id"]: c["name"] for c in gt["categories"]}
    result: dict = {}
    if not detections:
        return {"AP": 0.0, "AP50": 0.0, "thin_AP": 0.0, "thin_AP50": 0.0, "per_class": {}}
    coco_gt = _coco(_thin_marked(gt, thin))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(copy.deepcopy(detections))
        evaluator = COCOeval(coco_gt, coco_dt, iou_type)
        evaluator.params.areaRng = [ALL_RANGE, THIN_RANGE]
        evaluator.params.areaRngLbl = ["all", "thin"]
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"]  # (T, R, K, A, M)

    def ap(area: int, klass: int | None = None, iou: int | None = None) -> float:
        p = precision[:, :, :, area, -1]
        if iou is not None:
            p = p[iou : iou + 1]
        if klass is not None:
            p = p[:, :, klass]
        p = p[p > -1]
        return float(np.mean(p) * 100) if p.size else float("nan")

    result["AP"], result["AP50"] = ap(0), ap(0, iou=0)
    result["thin_AP"], result["thin_AP50"] = ap(1), ap(1, iou=0)
    result["per_class"] = {
        names[cat_id]: ap(0, klass=k) for k, cat_id in enumerate(evaluator.params.catIds)
    }
    return result


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of XYWH boxes."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    return mask_util.iou(a.tolist(), b.tolist(), [0] * len(b))


def loss_breakdown(gt: dict, detections: list[dict]) -> dict:
    """Where GT objects are lost, for all GT and for the thin ones.

    Per image, detections (score order) are matched greedily to same-class GT at box IoU >= 0.5
    (COCO's rule at AP50). Reported:
    ``box_recall``: GT with a same-class detection of box IoU >= 0.5 (any score);
    ``box_recall_any_class``: ... of any class;
    ``mask_iou``: mean mask IoU of the matched GT with their detection (GT without one left out);
    ``duplicates``: confident (score >= CONFIDENT) detections that match a same-class GT already
    taken by a higher-scoring one, per GT;
    ``confusions``: confident detections that match no same-class GT but overlap (box IoU >= 0.5)
    a GT of another class, per GT.
    """
    by_image: dict[int, list[dict]] = {}
    for det in detections:
        by_image.setdefault(det["image_id"], []).append(det)
    gt_by_image: dict[int, list[dict]] = {}
    for ann in gt["annotations"]:
        gt_by_image.setdefault(ann["image_id"], []).append(ann)
    counts = {
        group: {"gt": 0, "recall": 0, "recall_any": 0, "iou": [], "dup": 0, "conf": 0}
        for group in ("all", "thin")
    }
    for image_id, anns in gt_by_image.items():
        dets = sorted(by_image.get(image_id, []), key=lambda d: -d["score"])
        thin = [is_thin(a) for a in anns]
        ious = _box_iou(np.array([d["bbox"] for d in dets]), np.array([a["bbox"] for a in anns]))
        same = np.array([[d["category_id"] == a["category_id"] for a in anns] for d in dets])
        same = same.reshape(len(dets), len(anns))
        hit = ious >= 0.5
        taken = [False] * len(anns)
        for d, det in enumerate(dets):
            candidates = [g for g in range(len(anns)) if hit[d, g] and same[d, g]]
            free = [g for g in candidates if not taken[g]]
            confident = det["score"] >= CONFIDENT
            if free:
                g = max(free, key=lambda g: ious[d, g])
                taken[g] = True
                iou = _mask_iou(det.get("segmentation"), anns[g]["segmentation"])
                for group in ("all", "thin") if thin[g] else ("all",):
                    if iou is not None:
                        counts[group]["iou"].append(iou)
            elif candidates and confident:
                for group in ("all", "thin") if thin[candidates[0]] else ("all",):
                    counts[group]["dup"] += 1
            elif confident and hit[d].any():
                g = int(np.argmax(ious[d]))
                for group in ("all", "thin") if thin[g] else ("all",):
                    counts[group]["conf"] += 1
        for g in range(len(anns)):
            for group in ("all", "thin") if thin[g] else ("all",):
                counts[group]["gt"] += 1
                counts[group]["recall"] += bool((hit[:, g] & same[:, g]).any()) if dets else 0
                counts[group]["recall_any"] += bool(hit[:, g].any()) if dets else 0
    out = {}
    for group, c in counts.items():
        n = max(c["gt"], 1)
        out[group] = {
            "gt": c["gt"],
            "box_recall": 100.0 * c["recall"] / n,
            "box_recall_any_class": 100.0 * c["recall_any"] / n,
            "mask_iou": 100.0 * float(np.mean(c["iou"])) if c["iou"] else None,
            "duplicates_per_gt": c["dup"] / n,
            "confusions_per_gt": c["conf"] / n,
        }
    return out


def _mask_iou(segmentation: dict | None, gt_segmentation: dict) -> float | None:
    if segmentation is None:
        return None
    return float(mask_util.iou([segmentation], [gt_segmentation], [0])[0, 0])


def dataset_statistics(gt: dict, nms_iou: float = 0.4) -> dict:
    """How much of the GT is thin, and how much of it box NMS at ``nms_iou`` endangers: GT whose
    box overlaps another same-class GT's box above it (one of such a pair is suppressed when both
    are found with those boxes)."""
    thin_count, at_risk, at_risk_thin = 0, 0, 0
    gt_by_image: dict[int, list[dict]] = {}
    for ann in gt["annotations"]:
        gt_by_image.setdefault(ann["image_id"], []).append(ann)
    for anns in gt_by_image.values():
        boxes = np.array([a["bbox"] for a in anns])
        ious = _box_iou(boxes, boxes)
        np.fill_diagonal(ious, 0.0)
        for g, ann in enumerate(anns):
            same = [k for k in range(len(anns)) if anns[k]["category_id"] == ann["category_id"]]
            risky = bool((ious[g, same] > nms_iou).any())
            thin_count += is_thin(ann)
            at_risk += risky
            at_risk_thin += risky and is_thin(ann)
    n = max(len(gt["annotations"]), 1)
    return {
        "gt": len(gt["annotations"]),
        "thin_fraction": 100.0 * thin_count / n,
        "box_nms_at_risk": 100.0 * at_risk / n,
        "box_nms_at_risk_thin": 100.0 * at_risk_thin / max(thin_count, 1),
        "nms_iou": nms_iou,
    }


def anchor_recall(
    gt_boxes: list[np.ndarray], anchors: list[np.ndarray], thin: list[list[bool]]
) -> dict:
    """Percentage of GT (all, thin) with an anchor of IoU >= 0.5 (RetinaNet's positive IoU).

    Per image: its (G, 4) XYXY GT boxes, its (A, 4) XYXY anchors, which GT are thin."""
    import torch
    from detectron2.structures import Boxes, pairwise_iou

    found = {"all": [0, 0], "thin": [0, 0]}
    for boxes, image_anchors, thin_i in zip(gt_boxes, anchors, thin):
        if len(boxes) == 0:
            continue
        ious = pairwise_iou(
            Boxes(torch.as_tensor(boxes, dtype=torch.float32)),
            Boxes(torch.as_tensor(image_anchors, dtype=torch.float32)),
        )
        for ok, t in zip((ious.max(1).values >= 0.5).tolist(), thin_i):
            for group in ("all", "thin") if t else ("all",):
                found[group][0] += ok
                found[group][1] += 1
    return {g: 100.0 * a / max(n, 1) for g, (a, n) in found.items()}
