"""The speed targets of the benchmark report, on hand-made numbers: each ratio is read from the
right rows and compared with its own limit. No timing is measured."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import report  # noqa: E402  (a script folder, not a package)


def _cost(retinamask_ms: float) -> dict:
    rows = [("retinamask", retinamask_ms), ("retinanet", 100.0), ("mask_rcnn", 110.0)]
    return {
        "device_kind": "cpu",
        "precision": "fp32",
        "trained_like_candidates": 5000,
        "models": [{"model": m, "min_ms": ms} for m, ms in rows],
    }


def test_coco_targets_use_the_trained_like_candidates_and_1_05():
    rows = report.targets(None, [_cost(104.0)])
    assert [v for _, _, v in rows] == ["met", "met"]  # 1.04x RetinaNet, 0.95x Mask R-CNN
    assert "5000 score candidates" in rows[0][0] and "1.05×" in rows[0][0]
    rows = report.targets(None, [_cost(106.0)])
    assert [v for _, _, v in rows] == ["**not met**", "met"]


def test_predictor_and_training_targets():
    extras = {
        "predictor": {
            "threshold": 0.5,
            "rows": [
                {"name": "retinamask@0.5", "median_ms": 36.0},
                {"name": "boxes_only@0.5", "median_ms": 30.0},
            ],
        },
        "train": [
            {
                "scale": "synthetic",
                "device_kind": "cpu",
                "weights": "model.pth",
                "retinamask_opts": ["MODEL.RETINAMASK.TRAIN_TOPK", "25"],
                "rows": [
                    {"model": "retinamask", "amp": False, "s_per_iter": 0.30},
                    {"model": "retinanet", "amp": False, "s_per_iter": 0.20},
                ],
                "ratios": {"retinamask_over_retinanet": 1.5},
            }
        ],
    }
    rows = {t: (m, v) for t, m, v in report.targets(None, [], extras)}
    predictor = next(k for k in rows if k.startswith("predictor"))
    assert rows[predictor] == ("36.0 vs 30.0 ms (1.20×)", "met")
    training = next(k for k in rows if k.startswith("training"))
    assert "trained weights, RetinaMask MODEL.RETINAMASK.TRAIN_TOPK 25" in training
    assert rows[training] == ("0.30 vs 0.20 s (1.50×)", "**not met**")
