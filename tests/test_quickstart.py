"""scripts/quickstart.py end to end, shrunk (6 images, 2 iterations): it makes the data where
$RETINAMASK_DATASETS says, trains, evaluates, draws held-out images and reports what it measured."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2

from retinamask_d2.data.synthetic import is_generated

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_trains_evaluates_draws_and_reports(tmp_path):
    output = tmp_path / "quickstart"
    command = [sys.executable, str(ROOT / "scripts" / "quickstart.py"), "--output", str(output)]
    command += ["--train-images", "6", "--val-images", "3", "--demo-images", "2"]
    command += ["SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "1"]
    # An untrained model still predicts (a few boxes, to keep inference quick).
    command += ["MODEL.RETINANET.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "5"]
    env = {**os.environ, "RETINAMASK_DATASETS": str(tmp_path / "datasets"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert done.returncode == 0, done.stdout[-3000:]

    assert is_generated(tmp_path / "datasets" / "synthetic", {"train": 6, "val": 3}, 128, 0)
    assert (output / "model_final.pth").is_file() and (output / "config.yaml").is_file()
    metrics = [json.loads(line) for line in (output / "metrics.json").read_text().splitlines()]
    evaluation = [m for m in metrics if "segm/AP" in m][-1]
    box = re.search(r"box AP +([\d.]+|nan) ", done.stdout)
    mask = re.search(r"mask AP +([\d.]+|nan) ", done.stdout)
    assert box and float(box.group(1)) == round(evaluation["bbox/AP"], 1)
    assert mask and float(mask.group(1)) == round(evaluation["segm/AP"], 1)

    drawings = sorted((output / "demo").glob("*.png"))
    assert [d.name for d in drawings] == ["00000.png", "00001.png"]  # the first validation images
    for drawing in drawings:
        source = tmp_path / "datasets" / "synthetic" / "val" / drawing.name
        (h, w), (source_h, source_w) = (cv2.imread(str(p)).shape[:2] for p in (drawing, source))
        assert h >= source_h and h * source_w == w * source_h  # the demo may draw enlarged
    assert f"visualizations  {output / 'demo'}/ (2 held-out images)" in done.stdout
