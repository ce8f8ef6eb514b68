"""The benchmark harness keeps working: ``benchmarks/run_all.py --quick`` end to end, and the
target verdicts of the report on hand-made numbers. No timing is asserted."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import report  # noqa: E402  (a script folder, not a package)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _row(model: str, box: float, mask: float | None, train_s: float, ms: float) -> dict:
    return {
        "model": model,
        "box": {"AP": box},
        "mask": {} if mask is None else {"AP": mask},
        "train_s_per_iter": train_s,
        "inference": {"median_ms": ms},
    }


def test_targets_compare_within_one_run():
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
        "mask AP ≥ Mask R-CNN − 1 (synthetic)": "**not met**",  # -1.5
        "inference ≤ 1.15× RetinaNet (synthetic, CPU)": "met",  # 1.14x
        "inference ≤ Mask R-CNN (synthetic, CPU)": "**not met**",
        "training s/iter ≤ Mask R-CNN (synthetic, CPU)": "met",  # equal
    }


def test_seeds_are_combined_into_one_row_per_model():
    import accuracy

    def seed_run(box_ap: float, steps: list[float], timed: list[float], rss: float) -> dict:
        row = {
            "box": {"AP": box_ap, "APs": float("nan")},
            "mask": {},
            "train_s_per_iter": steps[0],
            "train_s_per_iter_min": min(steps),
            "train_steps_timed": len(steps),
            "data_s_per_iter": 0.01,
            "final_total_loss": box_ap / 100,
            "timed_s": timed,
            "peak_rss_mb": rss,
        }
        return {name: row for name in accuracy.MODELS}

    runs = [seed_run(20.0, [0.3, 0.2], [0.05, 0.07], 900.0), seed_run(26.0, [0.5], [0.01], 800.0)]
    row = accuracy.combine_seeds([0, 7], runs)[0]
    assert row["box"]["AP"] == 23.0
    assert row["box"]["APs"] != row["box"]["APs"]  # NaN stays NaN: no object of that size
    assert [(r["seed"], r["box_ap"]) for r in row["per_seed"]] == [(0, 20.0), (7, 26.0)]
    assert row["train_s_per_iter"] == 0.4 and row["train_s_per_iter_min"] == 0.2
    assert row["train_steps_timed"] == 3
    assert row["inference"]["median_ms"] == pytest.approx(50.0) and row["inference"]["n"] == 3
    assert row["peak_rss_mb"] == 900.0


def test_seed_spread_and_per_seed_differences_are_reported():
    def row(model: str, box: list[float], mask: list[float] | None) -> dict:
        per_seed = [
            {"seed": i, "box_ap": b, "mask_ap": None if mask is None else mask[i]}
            for i, b in enumerate(box)
        ]
        mean_mask = None if mask is None else sum(mask) / len(mask)
        return {
            **_row(model, sum(box) / len(box), mean_mask, 0.5, 100.0),
            "per_seed": per_seed,
        }

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
    assert measured["box AP ≥ RetinaNet + 1 (synthetic)"] == (
        "30.0 vs 29.0 (+1.0; per seed +1.0, +3.0, -1.0)"
    )
    assert measured["mask AP ≥ Mask R-CNN − 1 (synthetic)"] == (
        "21.0 vs 22.0 (-1.0; per seed -1.0, +1.0, -3.0)"
    )


@pytest.mark.slow
def test_quick_run_writes_results_table_and_plots(tmp_path):
    results, work = tmp_path / "results", tmp_path / "work"
    cmd = [sys.executable, str(BENCHMARKS / "run_all.py"), "--quick"]
    cmd += ["--results-dir", str(results), "--work-dir", str(work)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    accuracy = json.loads((results / "accuracy.json").read_text())
    rows = {row["model"]: row for row in accuracy["models"]}
    assert list(rows) == [
        "retinamask",
        "retinanet",
        "mask_rcnn",
        "retinamask_no_mask_loss",
        "retinamask_p2",
    ]
    assert accuracy["spec"]["max_iter"] == 4 and accuracy["threads"] == 1
    assert accuracy["seeds"] == [0, 1]
    for name, row in rows.items():
        assert set(row["box"]) >= {"AP", "AP50"}, name
        assert [r["seed"] for r in row["per_seed"]] == [0, 1]  # one training per seed
        assert row["train_steps_timed"] >= 2 and row["train_s_per_iter"] > 0
        assert row["inference"]["n"] == 4  # 2 images per seed
        assert row["peak_rss_mb"] > 100
    # A box-only model, and the ablation whose mask head learns nothing, are not scored on masks.
    assert rows["retinanet"]["mask"] == {} and rows["retinamask_no_mask_loss"]["mask"] == {}
    for name in ("retinamask", "mask_rcnn", "retinamask_p2"):
        assert "AP" in rows[name]["mask"], name

    cost = json.loads((results / "inference_cost_cpu.json").read_text())
    assert cost["device_kind"] == "cpu" and cost["image_size"] == [160, 224]
    models = {row["model"]: row for row in cost["models"]}
    # Zeroed box regressors give every model its full 100 detections; the masks are counted
    # where they are computed: 50 for RetinaMask (TEST_TOPK_MASKS), all for Mask R-CNN.
    assert {m: row["detections"] for m, row in models.items()} == {
        "retinamask": 100,
        "retinanet": 100,
        "mask_rcnn": 100,
        "retinamask_p2": 100,
    }
    assert {m: row["masked"] for m, row in models.items()} == {
        "retinamask": 50,
        "retinanet": 0,
        "mask_rcnn": 100,
        "retinamask_p2": 50,
    }
    assert [(r["topk_masks"], r["masked"]) for r in cost["mask_count_sweep"]] == [(0, 0), (50, 50)]

    text = (results / "benchmarks.md").read_text()
    assert "| RetinaMask |" in text and "### Targets" in text
    assert text == report.markdown(accuracy, [cost])
    for png in ("accuracy.png", "inference_cost.png"):
        assert (results / png).read_bytes()[:8] == PNG_MAGIC


def test_readme_blocks_are_replaced_between_their_markers(tmp_path):
    readme = tmp_path / "README.md"
    block = "top\n<!-- generated:x -->\n{}\n<!-- /generated:x -->\nbottom\n"
    readme.write_text(block.format("old"))
    report.update_readme(readme, {"x": "\nnew line\n"})
    assert readme.read_text() == block.format("new line")
    with pytest.raises(ValueError, match="generated:y"):
        report.update_readme(readme, {"y": "text"})


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
    assert "| quickstart variant | seeds | box AP | mask AP | mask AP bar |" in text
    assert "| first | 0, 1 | 52.0 (50.0–54.0) | – | 15.0 (10.0–20.0) |" in text
    assert "| second | 0 | 40.0 | – | 5.0 |" in text
