"""The MobileNetV2 quickstart comparison: the shipped config trains the measured equal-time
iterations, the verdict compares seeds per class, the docs block is replaced between markers."""

import json
import sys
from pathlib import Path

from detectron2.config import get_cfg

from retinamask_d2 import add_retinamask_config
from tests.common import CONFIGS_DIR

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import mobilenetv2_quickstart as bench  # noqa: E402  (a script folder, not a package)

CLASSES = ("bar", "disk", "square", "triangle")


def test_quickstart_config_trains_the_measured_equal_time_iterations():
    budget = json.loads(bench.RESULTS.read_text())["budget"]
    cfg = get_cfg()
    add_retinamask_config(cfg)
    cfg.merge_from_file(str(CONFIGS_DIR / "quickstart" / "retinamask_MNV2_synthetic.yaml"))
    assert cfg.SOLVER.MAX_ITER == budget["mnv2_iterations"]
    schedule = dict(zip(*[iter(bench._schedule(budget["mnv2_iterations"]))] * 2))
    assert schedule["SOLVER.STEPS"] == str(tuple(cfg.SOLVER.STEPS))
    assert cfg.SOLVER.BASE_LR == 0.03 and cfg.SOLVER.IMS_PER_BATCH == 4  # the quickstart's


def _run(model: str, seed: int, bar: float) -> dict:
    ap = {f"segm/AP-{c}": 50.0 for c in CLASSES} | {"segm/AP-bar": bar}
    return {"model": model, "seed": seed, "iterations": 1, "ap": ap}


def test_verdict_needs_the_worst_mnv2_seed_above_the_best_r18_seed():
    r18 = [_run("r18_scratch", 0, 18.0), _run("r18_scratch", 1, 21.0)]
    text = bench._verdict(r18 + [_run("mnv2_imagenet", 0, 20.0), _run("mnv2_imagenet", 1, 30.0)])
    assert text.endswith("on: bar, disk, square, triangle")  # bar: 20 < 21; equal AP is no win
    better = [_run("mnv2_imagenet", s, 60.0) for s in (0, 1)]
    for run in better:
        run["ap"] = {k: 60.0 for k in run["ap"]}
    assert "on every class" in bench._verdict(r18 + better)
    assert bench._verdict(r18) == ""


def test_docs_block_is_replaced_between_its_markers(tmp_path, monkeypatch):
    docs = tmp_path / "backbones.md"
    docs.write_text("a\n<!-- generated:mobilenetv2 -->\nold\n<!-- /generated:mobilenetv2 -->\nb\n")
    monkeypatch.setattr(bench, "DOCS", docs)
    bench.write_docs("| new |")
    assert docs.read_text() == (
        "a\n<!-- generated:mobilenetv2 -->\n| new |\n<!-- /generated:mobilenetv2 -->\nb\n"
    )
