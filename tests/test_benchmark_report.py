"""The benchmarks' results module (``benchmarks.report``) on hand-made results: each target is read
from the right rows and compared with its own limit, cells and differences are formatted one
way, and the generated blocks land between their markers. No timing is measured."""

import json

import pytest

from benchmarks import report


def _row(model: str, box: float, mask: float | None, train_s: float, ms: float) -> dict:
    return {
        "model": model,
        "box": {"AP": box},
        "mask": {} if mask is None else {"AP": mask},
        "train_s_per_iter": train_s,
        "inference": {"median_ms": ms},
    }


def _cost(retinamask_ms: float) -> dict:
    rows = [("retinamask", retinamask_ms), ("retinanet", 100.0), ("mask_rcnn", 110.0)]
    return {
        "device_kind": "cpu",
        "precision": "fp32",
        "trained_like_candidates": 5000,
        "models": [{"model": m, "min_ms": ms} for m, ms in rows],
    }


def test_formatters_are_shared_by_every_table():
    assert report.mean_cell([1.0, 2.0, 6.0]) == "3.0 (1.0–6.0)"
    assert report.mean_cell([2.5], digits=2) == "2.50"
    assert report.mean_cell([], digits=0) == "–"
    assert report.difference([(3.0, 1.0), (1.0, 2.0)]) == "+0.5 [+2.0, -1.0]"
    assert report.difference([]) == "–"
    assert [report.verdict(ok) for ok in (True, False, None)] == ["met", report.MISSED, "–"]
    lines = report.table("| a | b | |", [["1", "2", "3"]])
    assert lines == ["| a | b | |", "|---|---|---|", "| 1 | 2 | 3 |"]


def test_synthetic_targets_compare_within_one_run():
    accuracy = {
        "models": [
            _row("retinamask", 30.0, 20.0, 0.5, 114.0),
            _row("retinanet", 28.5, None, 0.4, 100.0),
            _row("mask_rcnn", 29.0, 21.5, 0.5, 90.0),
        ]
    }
    verdicts = {target: verdict for target, _, verdict in report.targets(accuracy, [])}
    assert verdicts == {
        "box AP ≥ RetinaNet + 1 (synthetic)": "met",  # +1.5
        "mask AP ≥ Mask R-CNN − 1 (synthetic)": "**missed**",  # -1.5
        "inference ≤ 1.15× RetinaNet (synthetic, CPU)": "met",  # 1.14x
        "inference ≤ Mask R-CNN (synthetic, CPU)": "**missed**",
        "training s/iter ≤ Mask R-CNN (synthetic, CPU)": "met",  # equal
    }


def test_seed_spread_and_per_seed_differences_are_reported():
    def row(model: str, box: list[float], mask: list[float] | None) -> dict:
        per_seed = [
            {"seed": i, "box_ap": b, "mask_ap": None if mask is None else mask[i]}
            for i, b in enumerate(box)
        ]
        mean_mask = None if mask is None else sum(mask) / len(mask)
        return {**_row(model, sum(box) / len(box), mean_mask, 0.5, 100.0), "per_seed": per_seed}

    accuracy = {
        "models": [
            row("retinamask", [30.0, 33.0, 27.0], [20.0, 22.0, 21.0]),
            row("retinanet", [29.0, 30.0, 28.0], None),
            row("mask_rcnn", [29.0, 29.0, 29.0], [21.0, 21.0, 24.0]),
        ]
    }
    assert report._ap_cell(accuracy["models"][0], "box") == "30.0 (27.0–33.0)"
    assert report._ap_cell(accuracy["models"][1], "mask") == "–"
    measured = {target: m for target, m, _ in report.targets(accuracy, [])}
    assert (
        measured["box AP ≥ RetinaNet + 1 (synthetic)"] == "30.0 vs 29.0 (+1.0 [+1.0, +3.0, -1.0])"
    )
    assert measured["mask AP ≥ Mask R-CNN − 1 (synthetic)"] == (
        "21.0 vs 22.0 (-1.0 [-1.0, +1.0, -3.0])"
    )


def test_coco_targets_use_the_trained_like_candidates_and_1_05():
    rows = report.targets(None, [_cost(104.0)])
    assert [v for _, _, v in rows] == ["met", "met"]  # 1.04x RetinaNet, 0.95x Mask R-CNN
    assert "5000 score candidates" in rows[0][0] and "1.05×" in rows[0][0]
    rows = report.targets(None, [_cost(106.0)])
    assert [v for _, _, v in rows] == ["**missed**", "met"]


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
    assert rows[training] == ("0.30 vs 0.20 s (1.50×)", "**missed**")


def _thin_row(variant, seed, mask_ap, thin_ap, box_ap, ms, test=""):
    return {
        "variant": variant,
        "test": test,
        "seed": seed,
        "box": {"AP": box_ap, "thin_AP": 1.0, "per_class": {"bar": box_ap}},
        "mask": {"AP": mask_ap, "thin_AP": thin_ap, "per_class": {"bar": mask_ap}},
        "ms_per_image": ms,
        "train_s_per_iter": 1.0,
        "breakdown": {"all": {"box_recall": 50.0}, "thin": {"box_recall": 40.0}},
        "anchors": None,
    }


def _thin_result() -> dict:
    rows = [
        _thin_row("retinamask", 0, 20.0, 5.0, 30.0, 10.0),
        _thin_row("retinamask", 1, 22.0, 7.0, 32.0, 10.0),
        _thin_row("mask_rcnn", 0, 25.0, 10.0, 33.0, 20.0),
        _thin_row("mask_rcnn", 1, 25.0, 10.0, 33.0, 20.0),
        _thin_row("retinamask_thin", 0, 24.5, 13.0, 34.0, 12.0),
        _thin_row("retinamask_thin", 1, 25.0, 12.0, 33.0, 12.0),
    ]
    spec = {"image_size": 160, "depth": 18, "fpn_channels": 64, "head_convs": 2}
    spec.update(mask_convs=2, mask_dim=64, ims_per_batch=4, max_iter=150)
    stats = {"gt": 2, "thin_fraction": 50.0, "box_nms_at_risk": 10.0}
    stats.update(box_nms_at_risk_thin=20.0, nms_iou=0.4)
    data = {"generator": "g", "train_images": 1, "val_images": 1, "statistics": stats}
    return {"rows": rows, "device": "CPU", "spec": spec, "data": data}


def test_thin_objects_targets_and_per_seed_differences():
    result = _thin_result()
    rows = result["rows"]
    text = report.thin_markdown(result)
    row = "| RetinaMask, paper's masks (P3–P5, BCE) | 2 | 31.0 (30.0–32.0) | 21.0 (20.0–22.0) |"
    assert row in text
    thin_name = report.THIN_NAMES["retinamask_thin"]
    assert f"| {thin_name} | +3.8 [+4.5, +3.0] | +6.5 [+8.0, +5.0] | +2.5 [+4.0, +1.0] |" in text
    assert "| 40.0 (50.0) |" in text  # thin box recall (all objects' in brackets)
    # best row by thin mask AP is the thin config: 12.5 >= 2 x 6 and >= 10; 24.75 >= 25 - 1;
    # box 33.5 >= 33; 12 ms <= 20 ms.
    assert "| thin mask AP ≥ 2 × the paper's masks' | 12.5 vs 2 × 6.0 | met |" in text
    assert "| box AP ≥ Mask R-CNN's | 33.5 vs 33.0 | met |" in text
    rows[4]["box"]["AP"] = 30.0
    text = report.thin_markdown(result)
    assert "| box AP ≥ Mask R-CNN's | 31.5 vs 33.0 | **missed** |" in text
    for row in rows:
        row["mask"]["thin_AP"] = 0.0
    assert "12.5" not in report.thin_markdown(result).split("Targets")[1]
    assert "| thin mask AP ≥ Mask R-CNN's | 0.0 vs 0.0 | **not shown** (all 0) |" in (
        report.thin_markdown(result)
    )
    # Timings taken alone replace the side-by-side ones in the ms/image target.
    result["timing"] = {
        name: {"ms_per_image": ms, "train_s_per_iter": 0.5}
        for name, ms in (("retinamask", 30.0), ("retinamask_thin", 30.0), ("mask_rcnn", 25.0))
    }
    text = report.thin_markdown(result)
    assert "| 30 | 0.50 |" in text.split("\n\n")[1]
    assert "ms/image ≤ Mask R-CNN's | 30 vs 25 | **missed** |" in text


def test_quickstart_line_comes_from_the_summary():
    summary = {
        "seconds": {"data": 2.0, "training and evaluation": 318.4, "demo": 4.2},
        "total_seconds": 325.0,
        "ap": {"bbox/AP": 54.749, "bbox/AP50": 79.39, "segm/AP": 54.535, "segm/AP50": 72.09},
        "val_images": 60,
        "cpu_count": 2,
        "omp_num_threads": None,
    }
    line = report.quickstart_markdown(summary)
    assert "5 min 25 s in total (data 0 min 02 s, training and evaluation 5 min 18 s" in line
    assert "**box AP 54.7** (AP50 79.4), **mask AP 54.5** (AP50 72.1) on 60 validation" in line
    assert "2 CPU cores (default threads)" in line
    assert "per class" not in line
    summary["ap"].update({"segm/AP-disk": 80.12, "segm/AP-bar": 20.26})
    line = report.quickstart_markdown(summary)
    assert "validation images; mask AP per class: disk 80.1, bar 20.3 (" in line


def test_quickstart_variants_table_comes_from_the_runs():
    def run(variant: str, seed: int, box: float, bar: float) -> dict:
        return {"variant": variant, "seed": seed, "ap": {"bbox/AP": box, "segm/AP-bar": bar}}

    result = {
        "variants": {"a": {"description": "first"}, "b": {"description": "second"}},
        "runs": [run("a", 1, 50.0, 10.0), run("a", 0, 54.0, 20.0), run("b", 0, 40.0, 5.0)],
    }
    text = report.quickstart_variants_markdown(result)
    assert (
        "| quickstart variant | seeds | box AP | mask AP | mask AP bar |\n|---|---|---|---|---|"
        in text
    )
    assert "| first | 0, 1 | 52.0 (50.0–54.0) | – | 15.0 (10.0–20.0) |" in text
    assert "| second | 0 | 40.0 | – | 5.0 |" in text


def test_blocks_are_replaced_between_their_markers(tmp_path):
    doc = tmp_path / "benchmarks.md"
    block = "top\n<!-- generated:x -->\n{}\n<!-- /generated:x -->\nbottom\n"
    doc.write_text(block.format("old"))
    report.update_blocks(doc, {"x": "\nnew line\n"})
    assert doc.read_text() == block.format("new line")
    with pytest.raises(ValueError, match="generated:y"):
        report.update_blocks(doc, {"y": "text"})
    assert doc.read_text() == block.format("new line")  # nothing written


def test_publish_fills_every_marker_of_the_doc_from_the_results(tmp_path):
    """The committed results give every generated block, and publishing into a doc holding the
    markers writes each block there, as in the committed benchmarks.md and thin_objects.md."""
    results = tmp_path / "results"
    results.mkdir()
    for path in report.RESULTS_DIR.glob("*.json"):
        (results / path.name).write_bytes(path.read_bytes())
    doc = tmp_path / "doc.md"
    doc.write_text(
        "".join(f"<!-- generated:{m} -->\n<!-- /generated:{m} -->\n" for m in report.MARKERS)
    )
    blocks = report.publish(results, doc)
    assert set(blocks) == set(report.MARKERS)
    text = doc.read_text()
    for marker, body in blocks.items():
        assert f"<!-- generated:{marker} -->\n{body.strip()}\n<!-- /generated:{marker} -->" in text
    assert (results / "benchmarks.md").read_text() == "## Benchmarks\n" + blocks["benchmarks"]
    assert (results / "thin_objects.md").read_text() == blocks["thin_objects"]
    accuracy = json.loads((results / "accuracy.json").read_text())
    retinamask = next(r for r in accuracy["models"] if r["model"] == "retinamask")
    assert f"| RetinaMask | {report._ap_cell(retinamask, 'box')} |" in blocks["benchmarks"]
    for png in ("accuracy.png", "inference_cost.png", "thin_objects.png"):
        assert (results / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _oriented_row(variant: str, seed: int, thin: float, near_recall: float, ring: float) -> dict:
    bins = {
        key: {"objects": 10, "recall": near_recall if key == "0-10" else 1.0, "mask_iou": 0.8}
        for key in ("0-10", "10-30", "30-45", "all")
    }
    classes = {"rod": thin, "ring": ring, "blob": 50.0}
    return {
        "variant": variant,
        "seed": seed,
        "box": {"AP": 40.0, "thin_AP": 30.0, "per_class": classes},
        "mask": {"AP": 35.0, "thin_AP": thin, "per_class": classes},
        "thin_by_angle": bins,
    }


ORIENTED_THREE = ("retinamask_box", "retinamask_oriented", "mask_rcnn")
_ORIENTED_RESULT = {
    "device": "CPU",
    "spec": {
        "fpn_channels": 64,
        "head_convs": 2,
        "mask_convs": 2,
        "mask_dim": 64,
        "ims_per_batch": 4,
        "max_iter": 100,
    },
    "data": {
        "train_images": 4,
        "val_images": 2,
        "layout": {"sides": [192, 224], "bar_widths": {"rod": [5, 8]}},
        "statistics": {"gt": 20},
    },
}


def test_thin_oriented_targets_compare_rows_of_the_same_run():
    rows = [
        _oriented_row("retinamask_box", 0, 10.0, 0.5, 60.0),
        _oriented_row("retinamask_box", 1, 12.0, 0.6, 60.0),
        _oriented_row("retinamask_oriented", 0, 24.0, 0.7, 59.5),
        _oriented_row("retinamask_oriented", 1, 20.0, 0.7, 58.0),
        _oriented_row("mask_rcnn", 0, 18.0, 0.95, 60.0),
        _oriented_row("mask_rcnn", 1, 18.0, 0.95, 60.0),
    ]
    result = {**_ORIENTED_RESULT, "rows": rows}
    text = report.thin_oriented_markdown(result)
    same = ["40.0 (40.0–40.0)", "35.0 (35.0–35.0)", "30.0 (30.0–30.0)"]
    assert f"| RetinaMask, oriented mask RoIs | 2 | {' | '.join(same)} | 22.0 (20.0–24.0) |" in text
    # 22 >= 2 x 11; 22 < 18 + 5; Mask R-CNN 18 >= 10; ring 58.75 vs 60: lost more than 1.
    assert "| oriented thin mask AP ≥ 2 × the box default's | 22.0 vs 2 × 11.0 | met |" in text
    assert "| oriented thin mask AP ≥ Mask R-CNN's + 5 | 22.0 vs 18.0 + 5 | **missed** |" in text
    assert "| Mask R-CNN's thin mask AP ≥ 10 (the benchmark reads) | 18.0 | met |" in text
    assert "| ring mask AP within 1 of the box default's | 58.8 vs 60.0 | **missed** |" in text
    assert "| blob mask AP within 1 of the box default's | 50.0 vs 50.0 | met |" in text
    # Near-axis recall: the best RetinaMask row (not Mask R-CNN's 0.95) against 90%.
    assert "(best: RetinaMask, oriented mask RoIs) | 0.70 | **missed** |" in text
    assert "| RetinaMask, oriented mask RoIs | +0.0 [+0.0, +0.0] | +11.0 [+14.0, +8.0] |" in text


def test_committed_doc_holds_the_blocks_of_the_committed_results():
    """docs/benchmarks.md is what ``python -m benchmarks.report`` writes from the committed
    results: no generated block is stale or cut short."""
    text = report.DOC.read_text(encoding="utf-8")
    for marker, body in report.blocks(report.RESULTS_DIR).items():
        assert f"<!-- generated:{marker} -->\n{body.strip()}\n<!-- /generated:{marker} -->" in text


def test_thin_oriented_inference_targets_are_ratios_to_box_rois():
    rows = [_oriented_row(v, 0, 10.0, 0.5, 60.0) for v in ORIENTED_THREE]
    result = {**_ORIENTED_RESULT, "rows": rows}
    inference = {
        "device": "CPU",
        "thin": {
            "threshold": 0.5,
            "rows": {"box": {"ms_per_image": 40.0}, "oriented": {"ms_per_image": 48.0}},
        },
        "coco": {"10": {"box_ms": 1000.0, "oriented_ms": 1100.0}},
    }
    text = report.thin_oriented_markdown(result, inference)
    target = "| inference ≤ 1.15 × box RoIs:"
    assert f"{target} thin models at threshold 0.5 | 48 vs 40 ms (1.20×) | **missed** |" in text
    assert f"{target} R-50-FPN, 800×1333, 10 masks | 1100 vs 1000 ms (1.10×) | met |" in text
    assert "inference" not in report.thin_oriented_markdown(result)
