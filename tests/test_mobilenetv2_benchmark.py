"""The MobileNetV2 quickstart comparison: the shipped config trains the measured equal-time
iterations, the verdict compares seeds per class, the docs block is replaced between markers,
and scripts/quickstart.py trains the config it is given."""

import json
from pathlib import Path

import pytest
from detectron2.config import get_cfg

from benchmarks.accuracy import mobilenetv2_quickstart as bench
from retinamask_d2 import add_retinamask_config
from tests.common import CONFIGS_DIR, load_script

ROOT = Path(__file__).resolve().parents[1]

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


def test_quickstart_script_trains_the_config_it_is_given(tmp_path, monkeypatch):
    quickstart = load_script(ROOT / "scripts" / "quickstart.py", "quickstart_script")
    commands = []

    def stop_after_training(command):
        commands.append(command)
        raise SystemExit(0)

    monkeypatch.setattr(quickstart, "make_data", lambda args: tmp_path)
    monkeypatch.setattr(quickstart, "run", stop_after_training)
    config = CONFIGS_DIR / "quickstart" / "retinamask_R18_synthetic.yaml"
    with pytest.raises(SystemExit):
        quickstart.main(["--output", str(tmp_path), "--config", str(config)])
    (command,) = commands
    assert command[command.index("--config-file") + 1] == str(config)
    with pytest.raises(SystemExit):
        quickstart.main(["--output", str(tmp_path)])
    assert commands[1][commands[1].index("--config-file") + 1] == str(quickstart.CONFIG)
    assert quickstart.CONFIG.name == "retinamask_MNV2_synthetic.yaml"  # it beat ResNet-18
