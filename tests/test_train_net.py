"""train_net.py end to end on the CPU with a tiny RetinaMask: training writes logs with an ETA,
metrics.json and TensorBoard events and evaluates boxes and masks; --eval-only reproduces that
evaluation; a run killed with SIGKILL and resumed ends with the weights of an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from retinamask_d2.data.synthetic import generate
from tests.common import get_tiny_cfg

ROOT = Path(__file__).resolve().parents[1]
MAX_ITER = 8
CHECKPOINT_PERIOD = 3  # checkpoints after iterations 2 and 5 (0-based), then model_final


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    """A full config (tiny RetinaMask, 64 px synthetic data, random flips on) as a yaml file."""
    root = tmp_path_factory.mktemp("train_net")
    generate(root / "data", {"train": 10, "val": 3}, image_size=64, seed=2)
    cfg = get_tiny_cfg(num_classes=4)
    cfg.DATASETS.COCO_JSON = tuple(
        (f"tn_{split}", str(root / "data" / f"{split}.json"), str(root / "data" / split))
        for split in ("train", "val")
    )
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = ("tn_train",), ("tn_val",)
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (64,), 64
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 64, 64
    cfg.INPUT.MASK_FORMAT = "polygon"  # detectron2's default: the RLE masks must switch it
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = 0.0  # an untrained model still predicts something
    cfg.TEST.DETECTIONS_PER_IMAGE = 5
    cfg.SOLVER.MAX_ITER = MAX_ITER
    cfg.SOLVER.CHECKPOINT_PERIOD = CHECKPOINT_PERIOD
    cfg.SOLVER.WARMUP_ITERS = 2
    cfg.SEED = 7
    path = root / "tiny.yaml"
    path.write_text(cfg.dump())
    return path


def _command(config_file: Path, output: Path, *extra: str) -> list[str]:
    flags = [a for a in extra if a.startswith("--")]
    opts = [a for a in extra if not a.startswith("--")]
    script = [sys.executable, str(ROOT / "train_net.py"), *flags]
    return script + ["--config-file", str(config_file), "OUTPUT_DIR", str(output), *opts]


# One thread per process: on a shared 2-core machine OpenMP threads that wait for each other
# make steps many times slower; every run of a test uses the same setting.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _run(command: list[str]) -> str:
    """Run to the end; returns stdout and stderr together."""
    done = subprocess.run(
        command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert done.returncode == 0, done.stdout[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def uninterrupted(config_file, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("uninterrupted")
    _run(_command(config_file, output))
    return output


def test_training_logs_progress_metrics_events_and_box_and_mask_ap(uninterrupted):
    log = (uninterrupted / "log.txt").read_text()
    assert "eta: " in log and f"iter: {MAX_ITER - 1}" in log
    assert "train.json has RLE masks: setting INPUT.MASK_FORMAT to bitmask" in log  # our loggers
    metrics = [
        json.loads(line) for line in (uninterrupted / "metrics.json").read_text().splitlines()
    ]
    losses = [m for m in metrics if "total_loss" in m]
    assert {"loss_cls", "loss_box_reg", "loss_mask", "lr"} <= losses[-1].keys()
    assert losses[-1]["iteration"] == MAX_ITER - 1
    evaluation = [m for m in metrics if "bbox/AP" in m]
    assert evaluation and "segm/AP" in evaluation[-1]
    assert list(uninterrupted.glob("events.out.tfevents.*"))
    assert (uninterrupted / "inference" / "tn_val" / "coco_instances_results.json").is_file()


def test_eval_only_reproduces_the_evaluation_after_training(uninterrupted, config_file, tmp_path):
    weights = str(uninterrupted / "model_final.pth")
    _run(_command(config_file, tmp_path, "--eval-only", "MODEL.WEIGHTS", weights))
    name = Path("inference") / "tn_val" / "coco_instances_results.json"
    predictions = json.loads((tmp_path / name).read_text())
    assert predictions and any("segmentation" in p for p in predictions)
    assert predictions == json.loads((uninterrupted / name).read_text())


def test_sigkill_then_resume_ends_with_the_uninterrupted_weights(
    uninterrupted, config_file, tmp_path
):
    # The interrupted run also loads data in a worker process: the batches must not depend on it.
    command = _command(config_file, tmp_path, "DATALOADER.NUM_WORKERS", "1")
    process = subprocess.Popen(
        command, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    last_checkpoint = tmp_path / "last_checkpoint"
    deadline = time.monotonic() + 600
    while not (last_checkpoint.is_file() and last_checkpoint.read_text() == "model_0000002.pth"):
        assert process.poll() is None, process.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "model_final.pth").exists()  # killed mid-run

    resumed = _run(command[:2] + ["--resume"] + command[2:])
    assert "Starting training from iteration 3" in resumed
    final = torch.load(tmp_path / "model_final.pth", weights_only=False)
    expected = torch.load(uninterrupted / "model_final.pth", weights_only=False)
    assert final["iteration"] == expected["iteration"] == MAX_ITER - 1
    assert final["model"].keys() == expected["model"].keys()
    for key, value in expected["model"].items():
        assert torch.equal(final["model"][key], value), key
