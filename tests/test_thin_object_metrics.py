"""The per-object measures of the thin benchmark (benchmarks/thin/object_metrics.py) on masks
whose answers are known by construction."""

import numpy as np
import pycocotools.mask as mask_util
import pytest

from benchmarks.thin import object_metrics
from benchmarks.thin.data import _bar_mask


def _bar(width: int, angle_degrees: float, shape=(200, 200), length: float = 120) -> np.ndarray:
    return _bar_mask(shape, np.array([100.0, 100.0]), length, width, np.radians(angle_degrees))


def test_min_area_rectangle_of_bars_gives_their_sides_and_angle():
    long_side, short_side, angle = object_metrics.min_area_rectangle(_bar(5, 0.0))
    assert (long_side, short_side, angle) == pytest.approx((120, 5, 0.0), abs=1e-6)
    long_side, short_side, angle = object_metrics.min_area_rectangle(_bar(6, 30.0))
    assert long_side == pytest.approx(120, abs=2) and short_side == pytest.approx(6, abs=1.5)
    assert angle == pytest.approx(30.0, abs=1.0)
    assert object_metrics.min_area_rectangle(np.zeros((5, 5), bool)) is None


def test_shape_errors_of_a_perfect_a_thickened_and_a_broken_mask():
    gt = _bar(4, 30.0)
    perfect = object_metrics.shape_errors(gt, gt)
    assert perfect["mask_iou"] == 1.0 and perfect["fragments"] == 1
    assert perfect["centreline_recall"] == 1.0 and perfect["centreline_precision"] == 1.0
    assert perfect["width_error"] == pytest.approx(0.0) and perfect["angle_error"] == 0.0

    wide = _bar(12, 30.0, length=124)  # 3x as wide, same axis: contains the GT
    assert not (gt & ~wide).any()
    thick = object_metrics.shape_errors(wide, gt)
    assert thick["mask_iou"] == pytest.approx(gt.sum() / wide.sum())
    assert thick["centreline_recall"] == 1.0  # the GT's centreline lies inside
    assert thick["centreline_precision"] > 0.9  # and the prediction's inside the GT
    assert thick["width_error"] == pytest.approx(8.0, abs=1.5)
    assert thick["angle_error"] < 1.0

    cut = np.zeros_like(gt)
    cut[:, 95:105] = True
    broken = gt & ~cut  # a gap across the middle: two pieces
    errors = object_metrics.shape_errors(broken, gt)
    assert errors["fragments"] == 2
    assert errors["centreline_recall"] < 0.95

    turned = object_metrics.shape_errors(_bar(4, 75.0), gt)  # 45 degrees off
    assert turned["angle_error"] == pytest.approx(45.0, abs=1.5)
    assert turned["centreline_precision"] < 0.2


def _rle(mask: np.ndarray) -> dict:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _annotation(mask: np.ndarray, category_id: int) -> dict:
    rle = _rle(mask)
    return {
        "image_id": 1,
        "category_id": category_id,
        "segmentation": rle,
        "bbox": mask_util.toBbox(rle).tolist(),
        "area": int(mask.sum()),
    }


def test_per_object_matches_by_box_and_bins_by_angle():
    horizontal, tilted, blob = _bar(5, 0.0), _bar(5, 35.0), np.zeros((200, 200), bool)
    blob[20:40, 20:40] = True
    gt = {
        "images": [{"id": 1, "height": 200, "width": 200}],
        "annotations": [_annotation(horizontal, 1), _annotation(tilted, 1), _annotation(blob, 2)],
    }
    thick = _bar(9, 0.0)
    results = [
        {**_annotation(thick, 1), "score": 0.9},  # the horizontal bar, 9 px instead of 5
        {**_annotation(tilted, 2), "score": 0.9},  # the tilted bar, wrong class: not found
    ]
    rows = object_metrics.per_object(gt, results, {1})
    assert len(rows) == 2  # the blob is not a thin class
    assert rows[0]["angle"] == pytest.approx(0.0, abs=1e-6) and rows[0]["found"]
    assert rows[0]["mask_iou"] == pytest.approx(5 / 9, abs=0.02)
    assert rows[0]["width_error"] == pytest.approx(4.0, abs=0.5)
    assert rows[1]["angle"] == pytest.approx(35.0, abs=1.0) and not rows[1]["found"]
    table = object_metrics.by_angle(rows)
    assert table["0-10"]["objects"] == 1 and table["0-10"]["recall"] == 1.0
    assert table["30-45"]["objects"] == 1 and table["30-45"]["recall"] == 0.0
    assert table["30-45"]["mask_iou"] is None  # nothing found there to measure
    assert table["10-30"]["objects"] == 0 and table["10-30"]["recall"] is None
    assert table["all"]["recall"] == 0.5
    assert table["all"]["mask_iou"] == pytest.approx(rows[0]["mask_iou"])
