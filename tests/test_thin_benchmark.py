"""The thin-objects benchmark's data set and metrics on hand-made cases (no training); its tables
are tested with the other results in test_benchmark_report.py."""

import json

import numpy as np
import pycocotools.mask as mask_util
import pytest

from benchmarks.thin import data as thin_shapes_data
from benchmarks.thin import metrics as thin_metrics


def _rle(mask: np.ndarray) -> dict:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _dataset():
    """One 100 x 100 image: a thin horizontal bar (class 1) and a square (class 2)."""
    bar = np.zeros((100, 100), bool)
    bar[50:53, 10:90] = True
    square = np.zeros((100, 100), bool)
    square[10:40, 10:40] = True
    anns = []
    for i, (mask, cat) in enumerate([(bar, 1), (square, 2)]):
        rle = _rle(mask)
        anns.append(
            {
                "id": i + 1,
                "image_id": 1,
                "category_id": cat,
                "segmentation": rle,
                "bbox": mask_util.toBbox(rle).tolist(),
                "area": int(mask.sum()),
                "iscrowd": 0,
            }
        )
    gt = {
        "images": [{"id": 1, "width": 100, "height": 100, "file_name": "a.png"}],
        "annotations": anns,
        "categories": [{"id": 1, "name": "bar"}, {"id": 2, "name": "square"}],
    }
    return gt, bar, square


def _det(mask, cat, score):
    rle = _rle(mask)
    return {
        "image_id": 1,
        "category_id": cat,
        "score": score,
        "segmentation": rle,
        "bbox": mask_util.toBbox(rle).tolist(),
    }


def test_thin_ap_counts_only_thin_objects():
    gt, bar, square = _dataset()
    assert [thin_metrics.is_thin(a) for a in gt["annotations"]] == [False, False]
    # The bar fills its whole 80 x 3 box: not thin by fill. A diagonal stroke is.
    diagonal = np.zeros((100, 100), bool)
    for i in range(80):
        diagonal[10 + i, 10 + i : 13 + i] = True
    gt["annotations"][0]["segmentation"] = _rle(diagonal)
    gt["annotations"][0]["bbox"] = mask_util.toBbox(_rle(diagonal)).tolist()
    gt["annotations"][0]["area"] = int(diagonal.sum())
    assert [thin_metrics.is_thin(a) for a in gt["annotations"]] == [True, False]

    only_square = thin_metrics.coco_ap(gt, [_det(square, 2, 0.9)], "segm")
    assert only_square["per_class"] == pytest.approx({"bar": 0.0, "square": 100.0})
    assert only_square["AP"] == pytest.approx(50.0)
    # The square is ignored for thin AP: no thin object found, the square's detection is
    # matched to an ignored GT, not a false positive.
    assert only_square["thin_AP"] == 0.0
    only_bar = thin_metrics.coco_ap(gt, [_det(diagonal, 1, 0.9)], "segm")
    assert only_bar["thin_AP"] == pytest.approx(100.0)
    both = thin_metrics.coco_ap(gt, [_det(diagonal, 1, 0.9), _det(square, 2, 0.8)], "segm")
    assert both["AP"] == pytest.approx(100.0) and both["thin_AP"] == pytest.approx(100.0)


def test_breakdown_counts_recall_duplicates_and_confusions():
    gt, bar, square = _dataset()
    half_bar = bar.copy()
    half_bar[:, 50:] = False
    dets = [
        _det(bar, 1, 0.9),  # matches the bar
        _det(bar, 1, 0.8),  # a duplicate of it
        _det(square, 1, 0.7),  # the square, as the wrong class: a confusion
    ]
    out = thin_metrics.loss_breakdown(gt, dets)["all"]
    assert out["gt"] == 2
    assert out["box_recall"] == 50.0  # only the bar has a same-class detection
    assert out["box_recall_any_class"] == 100.0
    assert out["mask_iou"] == pytest.approx(100.0)
    assert out["duplicates_per_gt"] == 0.5 and out["confusions_per_gt"] == 0.5
    # A 40 px detection of the 80 px bar: box IoU 0.5 is reached (40 x 3 of 80 x 3 = 0.5).
    low = thin_metrics.loss_breakdown(gt, [_det(half_bar, 1, 0.9)])["all"]
    assert low["box_recall"] == 100.0 / 2 and low["mask_iou"] == pytest.approx(50.0)


def test_dataset_statistics_finds_same_class_box_overlaps():
    gt, bar, _ = _dataset()
    crossing = np.zeros((100, 100), bool)
    crossing[12:88, 49:52] = True  # a vertical bar crossing the horizontal one
    gt["annotations"][1]["category_id"] = 1
    rle = _rle(crossing)
    gt["annotations"][1].update(
        segmentation=rle, bbox=mask_util.toBbox(rle).tolist(), area=int(crossing.sum())
    )
    stats = thin_metrics.dataset_statistics(gt, nms_iou=0.0)
    assert stats["box_nms_at_risk"] == 100.0
    assert thin_metrics.dataset_statistics(gt, nms_iou=0.4)["box_nms_at_risk"] == 0.0
    # Neither bar is thin by fill (each fills its box); a diagonal stroke in class 2 is.
    assert stats["thin_fraction"] == 0.0
    diagonal = np.zeros((100, 100), bool)
    for i in range(80):
        diagonal[10 + i, 10 + i : 13 + i] = True
    rle = _rle(diagonal)
    gt["annotations"].append(
        {
            "id": 3,
            "image_id": 1,
            "category_id": 2,
            "segmentation": rle,
            "bbox": mask_util.toBbox(rle).tolist(),
            "area": int(diagonal.sum()),
            "iscrowd": 0,
        }
    )
    stats = thin_metrics.dataset_statistics(gt, nms_iou=0.0)
    assert stats["thin_fraction"] == pytest.approx(100 / 3)
    assert stats["box_nms_at_risk_thin"] == 0.0  # the only class-2 object: no same-class overlap


def test_generator_is_deterministic_and_covers_the_spec(tmp_path):
    a = thin_shapes_data.generate(tmp_path / "a", {"train": 8}, seed=3)["train"]
    b = thin_shapes_data.generate(tmp_path / "b", {"train": 8}, seed=3)["train"]
    assert a.read_bytes() == b.read_bytes()
    assert (tmp_path / "a/train/00005.png").read_bytes() == (
        tmp_path / "b/train/00005.png"
    ).read_bytes()
    data = json.loads(a.read_text())
    assert thin_shapes_data.is_generated(tmp_path / "a", {"train": 8}, 3)
    per_image = {}
    for ann in data["annotations"]:
        per_image.setdefault(ann["image_id"], []).append(ann)
        assert isinstance(ann["segmentation"], dict)  # RLE
        assert int(mask_util.area(ann["segmentation"])) == ann["area"]
    assert all(4 <= len(v) <= 12 for v in per_image.values())
    for image in data["images"]:
        assert 256 <= image["width"] <= 384 and 256 <= image["height"] <= 384


def test_bars_have_their_exact_width_when_axis_aligned():
    mask = thin_shapes_data._bar_mask((64, 64), np.array([32.0, 32.0]), 40, 3, 0.0)
    assert mask.any(axis=1).sum() == 3 and mask.any(axis=0).sum() == 40
    mask = thin_shapes_data._bar_mask((64, 64), np.array([32.0, 32.0]), 40, 2, np.pi / 2)
    assert mask.any(axis=0).sum() == 2 and mask.any(axis=1).sum() == 40


def test_readable_layout_draws_strokes_at_least_3_px_at_its_own_size(tmp_path):
    layout = thin_shapes_data.READABLE
    counts = {"val": 6}
    path = thin_shapes_data.generate(tmp_path, counts, seed=1, layout=layout)["val"]
    data = json.loads(path.read_text())
    for image in data["images"]:
        assert 192 <= image["width"] <= 224 and 192 <= image["height"] <= 224
    per_image: dict[int, int] = {}
    for ann in data["annotations"]:
        per_image[ann["image_id"]] = per_image.get(ann["image_id"], 0) + 1
    assert all(3 <= n <= 8 for n in per_image.values())
    assert min(lo for lo, _ in layout.bar_widths.values()) >= 3
    # The layout is part of what is_generated compares: the default layout's set is another.
    assert thin_shapes_data.is_generated(tmp_path, counts, 1, layout)
    assert not thin_shapes_data.is_generated(tmp_path, counts, 1)


def test_thin_ap_follows_the_given_thin_rule():
    """An exactly axis-aligned bar fills its box, so the default rule (fill < 25%) does not call
    it thin; a rule by class does. With only the bar detected, the class rule's thin AP is 100
    while the AP over both objects is not."""
    gt, bar, _ = _dataset()
    dets = [_det(bar, 1, 0.9)]
    by_class = thin_metrics.coco_ap(gt, dets, "segm", thin=lambda a: a["category_id"] == 1)
    assert by_class["thin_AP"] == pytest.approx(100.0)
    assert by_class["AP"] < 100.0
    by_fill = thin_metrics.coco_ap(gt, dets, "segm")
    assert np.isnan(by_fill["thin_AP"])  # no GT is thin by the fill rule: no thin AP
