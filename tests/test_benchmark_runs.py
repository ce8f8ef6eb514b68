"""The benchmarks run: the training driver's configs, the seeds combined into one row, and
``python -m benchmarks.run_all --quick`` end to end. No timing is asserted."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import report
from benchmarks.accuracy import compare_models
from benchmarks.synthetic_configs import SharedSpec
from benchmarks.training import benchmark_cfg, build_trainer, train
from retinamask_d2.data.synthetic import generate

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_the_driver_trains_on_the_registered_data_from_the_seed(tmp_path):
    generate(tmp_path, {"train": 2, "val": 1}, image_size=64)
    spec = SharedSpec(max_iter=4, warmup_iters=1, ims_per_batch=1, image_size=64, seed=3)
    keys = {"MODEL.RETINAMASK.MASK_DICE_WEIGHT": 0.5}
    cfgs = [
        benchmark_cfg("retinamask", spec, tmp_path, "driver_test", tmp_path / f"run{i}", keys=keys)
        for i in range(2)  # registering the data again is harmless
    ]
    cfg = cfgs[0]
    assert cfg.DATASETS.TRAIN == ("driver_test_train",) and cfg.DATASETS.TEST == ()
    assert cfg.MODEL.RETINANET.NUM_CLASSES == 4  # from the data's categories
    assert cfg.MODEL.RETINAMASK.MASK_DICE_WEIGHT == 0.5 and cfg.SOLVER.MAX_ITER == 4
    assert cfg.SEED == 3 and cfg.OUTPUT_DIR == str(tmp_path / "run0")
    # The benchmark pins the paper's mask levels whatever the base config's default.
    assert cfg.MODEL.RETINAMASK.MASK_IN_FEATURES == ["p3", "p4", "p5"]
    # The same seed gives the same initial weights (and batches).
    first, second = (build_trainer(c).model.state_dict() for c in cfgs)
    assert all(torch.equal(first[k], second[k]) for k in first)
    model, summary = train(cfgs[0])  # IterationTimer leaves the first steps untimed
    assert 1 <= summary["train_steps_timed"] < 4 and summary["train_s_per_iter"] > 0
    assert summary["final_total_loss"] > 0 and (tmp_path / "run0" / "model_final.pth").is_file()


def test_seeds_are_combined_into_one_row_per_model():
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
        return {name: row for name in compare_models.MODELS}

    runs = [seed_run(20.0, [0.3, 0.2], [0.05, 0.07], 900.0), seed_run(26.0, [0.5], [0.01], 800.0)]
    row = compare_models.combine_seeds([0, 7], runs)[0]
    assert row["box"]["AP"] == 23.0
    assert row["box"]["APs"] != row["box"]["APs"]  # NaN stays NaN: no object of that size
    assert [(r["seed"], r["box_ap"]) for r in row["per_seed"]] == [(0, 20.0), (7, 26.0)]
    assert row["train_s_per_iter"] == 0.4 and row["train_s_per_iter_min"] == 0.2
    assert row["train_steps_timed"] == 3
    assert row["inference"]["median_ms"] == pytest.approx(50.0) and row["inference"]["n"] == 3
    assert row["peak_rss_mb"] == 900.0


@pytest.mark.slow
def test_quick_run_writes_results_table_and_plots(tmp_path):
    results, work = tmp_path / "results", tmp_path / "work"
    cmd = [sys.executable, "-m", "benchmarks.run_all", "--quick"]
    cmd += ["--results-dir", str(results), "--work-dir", str(work)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
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
